"""The text-fairness scenario: fine-food reviews with gendered words, MiniLM fine-tuned on a gender-skewed split.

The training split is skewed so that a review's gendered words (he/she, his/her, man/woman, ...,
first names from the npm name lists) correlate with its label (`generate.skew`, see
atpatch.scenarios.data.gendered.skewed_split). Debugging labels come from counterfactual word swaps on the
victim: an input's gendered word pieces are faults when swapping them changes the prediction.
Fairness is measured on the test reviews whose gendered words are all of one gender (groups female
/ male). Implements FairnessKind (atpatch.scenarios.kind).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from atpatch.scenarios.data.gendered import (build_lexicon, counterfactual_labels, gendered_token_labels, gendered_word_ids,
                                   skewed_split, swap_gender, text_gender)
from atpatch.core.errors import AtPatchError
from atpatch.scenarios.tables import debug_frame, debug_labels, read_split, write_splits  # noqa: F401 (kind members)
from atpatch.core.features import TokenLayout
from atpatch.scenarios import candidate_policy, text_backdoor
from atpatch.scenarios import checks
from atpatch.scenarios.text_backdoor import (INPUT_KIND, STREAM_CALIB, hold_out, layout_tokenizer, limit, reviews,  # noqa: F401
                                             rng, token_strings, train_victim, validate)

NAMES_DIR = "names"  # inside the fine-foods source folder (stage fetch@fine-foods puts them there)
GROUPS = ("female", "male")


def layout(model=None, params: dict | None = None) -> TokenLayout:
    """As text-backdoor; with `extract.candidates: protected`, only the gendered words' pieces may be
    flagged (`gendered_word_ids`), and a flag on one flags every gendered word of the review."""
    base = text_backdoor.layout(model)
    if candidate_policy(params) == "all":
        return base
    return TokenLayout(prefix=base.prefix, special_ids=base.special_ids,
                       candidate_ids=gendered_word_ids(layout_tokenizer(model)), flag_as_group=True)


def lexicon(params: dict, root: str | Path = "."):
    """Word pairs + first names (names the reviews use as ordinary words are left out)."""
    corpus = read_split(params, "train")["text"].tolist() if (Path(params["generate"]["out"]) / "train.parquet").is_file() \
        else None
    return build_lexicon(Path(root) / params["fetch"]["dest"] / NAMES_DIR, corpus=corpus)


def generate(params: dict, root: str | Path = ".") -> dict:
    """Gender-skewed training split, test reviews, held-out debugging reviews; validated, parquet."""
    t0 = time.perf_counter()
    root, g, seed = Path(root), params["generate"], int(params["seed"])
    raw, docs, out = root / params["fetch"]["dest"], checks.docs_dir(params, "generate", root), root / g["out"]
    train = limit(reviews(raw, "train", docs), g.get("train_limit"), seed)
    test = limit(reviews(raw, "test", docs), g.get("test_limit"), seed)
    train, debug = hold_out(train, g["debug"]["n"], seed)
    lex = build_lexicon(raw / NAMES_DIR, corpus=train["text"].tolist())
    skewed = skewed_split(train, g["skew"], seed, g.get("mode", "relabel"), g.get("female_label", 0), lex)
    splits = {"train": skewed, "test": test.assign(gender=[text_gender(t, lex) for t in test["text"]]),
              "debug": debug.assign(gender=[text_gender(t, lex) for t in debug["text"]])}
    validate(out, splits, docs)
    counts = {k: v["gender"].value_counts().to_dict() for k, v in splits.items()}
    summary = {"seed": seed, "skew": g["skew"], "rows": {k: len(v) for k, v in splits.items()},
               "changed_by_skew": int(skewed["changed"].sum()), "gender_counts": counts}
    write_splits(out, splits, summary)
    print(f"generate: {summary['rows']}, {summary['changed_by_skew']} training labels changed by the skew, "
          f"genders {counts['test']} in test -> {out} in {time.perf_counter() - t0:.1f} s")
    return summary


def debug_set(params: dict, model) -> dict:
    """Held-out reviews, gendered word pieces labelled 1 where the swap flips the victim's prediction."""
    debug, tok = read_split(params, "debug"), layout_tokenizer(model)
    cf = counterfactual_labels(model, tok, debug["text"].tolist(), int(params["generate"]["max_length"]),
                               lexicon(params))
    faulty = cf["token_labels"].bool().any(1)
    calib = torch.from_numpy(rng(params["seed"], STREAM_CALIB).random(len(debug)) < params["generate"]["debug"]["calib_share"])
    return {"inputs": cf["inputs"], "token_labels": cf["token_labels"], "triggered": faulty, "calib": calib & ~faulty}


def test_sets(params: dict, model=None, split: str = "test") -> dict:
    """Single-gender test reviews: inputs, labels, groups, gender-swapped inputs, gendered word-piece masks
    (`split`: another split scored the same way, e.g. the debugging split for choosing settings)."""
    tok, max_length, lex = layout_tokenizer(model), int(params["generate"]["max_length"]), lexicon(params)
    test = read_split(params, split)
    test = test[test["gender"].isin(GROUPS)].reset_index(drop=True)
    texts = test["text"].tolist()
    x, pieces = gendered_token_labels(tok, texts, max_length, lex)
    x_cf, pieces_cf = _swapped(tok, texts, max_length, lex)
    return {"x": x, "y": test["label"].to_numpy(), "primary": "gender",
            "attributes": {"gender": {"sensitive": test["gender"].to_numpy(), "x_cf": [x_cf],
                                      "fault_mask": pieces.bool().numpy(),
                                      "fault_mask_cf": [pieces_cf.bool().numpy()]}},
            "show": lambda idx: token_strings(tok, x["input_ids"][list(idx)])}


def protected(params: dict) -> list[str]:
    """The protected attributes (columns of the splits); the first is the gated one."""
    return ["gender"]


def counterfactual_sets(params: dict, model, frame: pd.DataFrame, attribute: str, lex=None) -> list[dict]:
    """Model inputs of the counterfactual of each review of `frame`: its gendered words swapped
    (`lex`: the scenario's lexicon when the caller already has it)."""
    if attribute != "gender":
        raise AtPatchError(f"text-fairness counterfactuals: attribute 'gender' only, got {attribute!r}")
    lex = lex or lexicon(params)
    return [_swapped(layout_tokenizer(model), frame["text"].tolist(), int(params["generate"]["max_length"]), lex)[0]]


def _swapped(tok, texts: list[str], max_length: int, lex) -> tuple[dict, torch.Tensor]:
    """The gender-swapped texts encoded (as `encode` does) and their gendered word pieces [N, max_length]
    (a swapped word can tokenise to another number of pieces, so the positions can move)."""
    return gendered_token_labels(tok, [swap_gender(t, lex) for t in texts], max_length, lex)


def counterfactual_sensitive(model, attribute: str, sensitive: np.ndarray) -> list[np.ndarray]:
    """The group of each counterfactual of `counterfactual_sets`: female <-> male, mixed / none kept."""
    swap = {"female": "male", "male": "female"}
    return [np.array([swap.get(g, g) for g in sensitive], dtype=object)]


TEST_SPLITS = {"test": "test"}


def test_frame(params: dict, split: str, rows: slice = slice(None)) -> pd.DataFrame:
    """Rows of the test split as the pyfunc input (column `text`) plus their `label`."""
    return read_split(params, TEST_SPLITS[split]).iloc[rows][["text", "label"]].reset_index(drop=True)


def input_example(params: dict, rows: int = 2) -> pd.DataFrame:
    """`rows` test reviews as the pyfunc input."""
    return test_frame(params, "test", slice(0, rows))[["text"]]
