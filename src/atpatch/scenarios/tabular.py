"""The tabular-fairness scenario: Adult census income or COMPAS, a feature-token transformer trained here.

`generate.dataset` picks the data set (`adult`, the default, or `compas`; atpatch.scenarios.data.tabular):
its CSV, feature columns, known protected values and split strata. The victim's config stores its
columns and vocabularies, so every stage after generate reads them from the victim.
The victim sees one token per column (plus CLS), so a protected attribute (`sex`, or `race`) is
one key column of every attention map. The training split can be skewed (`generate.skew`) so the
victim learns to decide by the attribute. Debugging labels come from counterfactual testing: an
input's protected token is a fault when changing only that attribute changes the prediction.
Implements FairnessKind (atpatch.scenarios.kind).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from atpatch.scenarios.data.tabular import LABEL, TabularDataset, get_dataset, skew_group_label, split_frame
from atpatch.core.errors import AtPatchError
from atpatch.core.features import TokenLayout
from atpatch.scenarios import candidate_policy
from atpatch.eval.fairness import counterfactuals_all_values, fault_token_labels
from atpatch.scenarios.tables import debug_frame, debug_labels, read_split, write_splits  # noqa: F401 (kind members)
from atpatch.scenarios.models.tabular import build_feature_token_model, column_positions, encode_frame, token_layout
from atpatch.scenarios.training import predict_labels, train_classifier
from atpatch.scenarios import checks

INPUT_KIND = "tabular"
SPLITS = ("train", "test", "debug")
STREAM_SKEW, STREAM_CALIB = 1, 2


def layout(model=None, params: dict | None = None):
    """Token layout: CLS (position 0) is never a candidate; every column token is, or, with
    `extract.candidates: protected`, only the gated (first) protected attribute's column."""
    if candidate_policy(params) == "all":
        return token_layout()
    if model is None:
        raise AtPatchError("tabular layout with extract.candidates: protected needs the victim (its column order)")
    return TokenLayout(prefix=1, positions=(column_positions(model.config)[protected(params)[0]],), flag_as_group=True)


def dataset(params: dict) -> TabularDataset:
    """The data set of `generate.dataset` (default adult); an unknown name, or a scenario whose
    `source` does not hold the data set's file, raises AtPatchError naming the field."""
    name = params.get("scenario", "<scenario>")
    ds = get_dataset(params["generate"].get("dataset"), where=f"scenarios.{name}.generate.dataset")
    if params.get("source", ds.source) != ds.source:
        raise AtPatchError(f"scenarios.{name}.source: data set {ds.name!r} comes from source {ds.source!r}, "
                           f"got {params['source']!r}")
    return ds


def generate(params: dict, root: str | Path = ".") -> dict:
    """Load the data set, split (seeded, stratified), skew the training split, validate, write parquet files."""
    t0 = time.perf_counter()
    root, g, seed = Path(root), params["generate"], int(params["seed"])
    protected, ds = list(g["protected"]), dataset(params)
    raw, docs, out = root / params["fetch"]["dest"] / ds.file, checks.docs_dir(params, "generate", root), root / g["out"]
    frame = ds.load(raw, protected=tuple(protected))
    checks.raw_table(str(raw), frame, ds.name, docs)
    if g.get("limit"):
        frame = frame.sample(n=min(g["limit"], len(frame)), random_state=seed).reset_index(drop=True)
    splits = split_frame(frame, g["test_size"], g["debug_size"], seed, stratify=ds.stratify)
    skew = g.get("skew")
    if skew:
        splits["train"] = skew_group_label(splits["train"], skew["attribute"], skew["group"], skew["label"],
                                           skew["keep"], seed=seed + STREAM_SKEW)
    # Protected values among the data set's known ones: a split holding anything else is malformed.
    checks.table_splits(str(out), splits, docs, {a: ds.known[a] for a in protected if a in ds.known}, min_rows=10)
    summary = {"seed": seed, "dataset": ds.name, "rows": {k: len(v) for k, v in splits.items()},
               "protected": protected, "skew": skew,
               "positive_rate_by_group": {a: splits["train"].groupby(a)["label"].mean().round(4).to_dict()
                                          for a in protected}}
    write_splits(out, splits, summary)
    print(f"generate: {summary['rows']} -> {out} in {time.perf_counter() - t0:.1f} s; "
          f"train P(label=1) by group {summary['positive_rate_by_group']}")
    return summary


def train_victim(params: dict, log) -> torch.nn.Module:
    """The feature-token transformer (encoding fitted on the training split), trained on it."""
    p, seed = params["train_victim"], params["seed"]
    train = read_split(params, "train")
    ds = dataset(params)
    model = build_feature_token_model(train, seed=seed, categorical=ds.categorical, numeric=ds.numeric,
                                      log_numeric=ds.log_numeric, **p["architecture"])
    model.set_attn_implementation("eager")
    train_classifier(model, encode_frame(train, model.config), torch.tensor(train["label"].to_numpy()), p, seed, log)
    return model


def _values(model, attribute: str) -> list[str]:
    """The values of `attribute` the victim knows (its training vocabulary, without <unk>)."""
    return [v for v in model.config.vocab[attribute] if v != "<unk>"]


def counterfactual_inputs(model, frame: pd.DataFrame, attribute: str) -> list[dict]:
    """Model inputs of every counterfactual of `frame` in which only `attribute` takes another value."""
    return [encode_frame(cf, model.config) for cf in counterfactuals_all_values(frame, attribute, _values(model, attribute))]


def protected(params: dict) -> list[str]:
    """The protected attributes (columns of the splits); the first is the gated one."""
    return list(params["generate"]["protected"])


def counterfactual_sets(params: dict, model, frame: pd.DataFrame, attribute: str) -> list[dict]:
    """Kind interface for the baselines: `counterfactual_inputs` (one set per other value)."""
    return counterfactual_inputs(model, frame, attribute)


def counterfactual_sensitive(model, attribute: str, sensitive: np.ndarray) -> list[np.ndarray]:
    """The value of `attribute` in each set of `counterfactual_sets` (the same for every row of a set)."""
    return [np.full(len(sensitive), value, dtype=object) for value in _values(model, attribute)]


def fault_labels(model, frame: pd.DataFrame, attributes: list[str]) -> np.ndarray:
    """[N, K] int8: a protected token is 1 where changing only that attribute changes the prediction."""
    x = encode_frame(frame, model.config)
    pred = predict_labels(model, x)
    pos, n_tokens = column_positions(model.config), 1 + x["cat_ids"].shape[1] + x["num_values"].shape[1]
    labels = np.zeros((len(frame), n_tokens), np.int8)
    for a in attributes:
        cf = np.stack([predict_labels(model, x_cf) for x_cf in counterfactual_inputs(model, frame, a)])
        labels |= fault_token_labels(pred, cf, pos[a], n_tokens)
    return labels


def debug_set(params: dict, model) -> dict:
    """The debugging split with counterfactual fault labels; a share of the fault-free rows is the
    held-out calibration part (`generate.calib_share`)."""
    frame = read_split(params, "debug")
    labels = torch.from_numpy(fault_labels(model, frame, list(params["generate"]["protected"])))
    faulty = labels.bool().any(1)
    rng = np.random.default_rng(np.random.SeedSequence([params["seed"], STREAM_CALIB]))
    calib = torch.from_numpy(rng.random(len(frame)) < params["generate"]["calib_share"]) & ~faulty
    return {"inputs": encode_frame(frame, model.config), "token_labels": labels, "triggered": faulty, "calib": calib}


def token_strings(model, frame: pd.DataFrame) -> list[list[str]]:
    """"column=value" per token (CLS first), for figures."""
    cols = [*model.config.categorical, *model.config.numeric]
    return [["[CLS]"] + [f"{c}={row[c]}" for c in cols] for _, row in frame.iterrows()]


def test_sets(params: dict, model=None, split: str = "test") -> dict:
    """Test inputs, labels and, per protected attribute, groups, counterfactual inputs and token masks
    (`split`: another split scored the same way, e.g. the debugging split for choosing settings)."""
    from atpatch.scenarios.models.loading import load_classifier

    model = model or load_classifier(params["train_victim"]["out"])
    frame = read_split(params, split)
    x = encode_frame(frame, model.config)
    n_tokens = 1 + x["cat_ids"].shape[1] + x["num_values"].shape[1]
    attributes = {}
    for a in params["generate"]["protected"]:
        mask = np.zeros((len(frame), n_tokens), bool)
        mask[:, column_positions(model.config)[a]] = True
        x_cf = counterfactual_inputs(model, frame, a)
        attributes[a] = {"sensitive": frame[a].to_numpy(), "x_cf": x_cf, "fault_mask": mask,
                         "fault_mask_cf": [mask] * len(x_cf)}  # one token per column: same positions
    return {"x": x, "y": frame["label"].to_numpy(), "primary": params["generate"]["protected"][0],
            "attributes": attributes, "show": lambda idx: token_strings(model, frame.iloc[list(idx)])}


TEST_SPLITS = {"test": "test"}


def test_frame(params: dict, split: str, rows: slice = slice(None)) -> pd.DataFrame:
    """Rows of the test split as the pyfunc input (one column per victim feature, in token order, raw
    values) plus their `label`."""
    frame = read_split(params, TEST_SPLITS[split]).iloc[rows]
    return frame[list(dataset(params).features)].assign(label=frame[LABEL].astype(int).to_numpy())


def input_example(params: dict, rows: int = 2) -> pd.DataFrame:
    """`rows` test rows as the pyfunc input."""
    return test_frame(params, "test", slice(0, rows)).drop(columns="label")
