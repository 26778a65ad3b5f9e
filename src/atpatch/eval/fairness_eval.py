"""Evaluation of a fairness scenario (tabular or text): unpatched vs AtPatch, per protected attribute.

Metrics (definitions in FAIRNESS_DEFINITIONS, stored in the report): accuracy (CA), counterfactual
flip rate, demographic parity difference and equalized odds difference (Fairlearn), detection of
the protected tokens that cause flips, clean-input flag rate, latency.

The report's `oracle` block: the same metrics when the primary attribute's tokens are patched in every
test input and every counterfactual (flip or not), the way the shipped patch patches (benign value,
layers), with no detector: the ceiling of the patch (backdoor scenarios: `oracle_ASR`).

Test data come from the scenario's `test_sets(params, model)`: `x` model inputs, `y` labels, `primary`
the attribute the gate judges, `attributes[name]` = {"sensitive": group per input, "x_cf": list of
counterfactual input dicts (only that attribute swapped), "fault_mask": [N, K] bool positions of
the attribute's tokens in `x`, "fault_mask_cf": list (one per entry of `x_cf`) of [N, K] bool positions
of the attribute's tokens in that counterfactual input (word pieces can move when a word is swapped)},
`show(indices)` the token strings of those inputs, for figures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from atpatch.eval import plots
from atpatch.eval.backdoor_eval import attention_figure, latency, roc_files, shipped_patchers
from atpatch.core.errors import AtPatchError
from atpatch.core.patched import shipped_patch
from atpatch.eval.evaluation import predict_oracle, predict_patched, predict_plain
from atpatch.eval.fairness import counterfactual_flip_rate, group_metrics
from atpatch.eval.metrics import DEFINITIONS, detection_metrics, input_flag_rate, pass_through_rate
from atpatch.eval.uncertainty import fairness_intervals, resamples

FAIRNESS_DEFINITIONS = {
    "CA": DEFINITIONS.get("CA", "accuracy on the clean test set"),
    "flip_rate": "counterfactual flip rate: share of test inputs whose prediction changes when only the "
                 "protected attribute is swapped (every counterfactual value; any change counts)",
    "dp_diff": "demographic parity difference (Fairlearn): largest gap in selection rate (share predicted "
               "positive) between groups of the protected attribute",
    "eo_diff": "equalized odds difference (Fairlearn): the larger of the largest TPR gap and the largest "
               "FPR gap between groups",
    "column_auroc": "AUROC of the detector's per-token scores, positives = the protected attribute's tokens "
                    "of inputs whose unpatched prediction flips under the counterfactual",
    "input_flag_rate_clean": "share of test inputs without a flip (no fault) that get any flag",
    "input_flag_rate_faulty": "share of test inputs with a flip that get any flag",
    "clean_pass_through_exact": DEFINITIONS["clean_pass_through_exact"],
    "reduction": "relative reduction (before - after) / before",
    "intervals": "bootstrap percentile intervals (test rows resampled, before and after on the same rows) of the "
                 "default mode's accuracy drop and reductions, primary attribute",
    "oracle": "the ceiling of the patch, no detector: the protected attribute's tokens patched in every test input "
              "and every counterfactual input (flipping or not), with the shipped patch's benign value and layers",
    "mediation": "attention-mediation check on the debugging split, no detector: its counterfactual flip rate with the "
                 "protected attribute's tokens patched in every row and counterfactual (gap, the fault-free rate being "
                 "0); it passes when the gap is at most max_gap",
}


def _flat_labels(preds) -> np.ndarray:
    return np.asarray(preds.labels)


def attribute_metrics(predict, data: dict) -> tuple[np.ndarray, dict]:
    """Labels on x and, per attribute, flip rate / DP / EO of the predictor `predict(inputs, desc)`."""
    pred = predict(data["x"], "test")
    out = {}
    for name, a in data["attributes"].items():
        cf = np.stack([predict(x_cf, f"counterfactual {name}") for x_cf in a["x_cf"]])
        g = group_metrics(data["y"], pred, a["sensitive"])
        out[name] = {"flip_rate": counterfactual_flip_rate(pred, cf), "dp_diff": g["demographic_parity_difference"],
                     "eo_diff": g["equalized_odds_difference"], "by_group": g["by_group"],
                     "flipped": (cf != pred[None]).any(0)}
    return pred, out


def summary(pred: np.ndarray, y: np.ndarray, per_attr: dict, primary: str) -> dict:
    """Report block: CA and the primary attribute's numbers at top level, every attribute under by_attribute."""
    by_attr = {k: {m: v for m, v in d.items() if m != "flipped"} for k, d in per_attr.items()}
    return {"CA": float(np.mean(pred == np.asarray(y))), **{m: by_attr[primary][m] for m in ("flip_rate", "dp_diff", "eo_diff")},
            "by_attribute": by_attr}


def reductions(before: dict, after: dict) -> dict:
    def rel(b, a):
        return None if b is None or a is None or b <= 0 else (b - a) / b

    return {f"{m}_reduction": rel(before[m], after[m]) for m in ("flip_rate", "dp_diff", "eo_diff")}


def oracle_masks(data: dict) -> list[tuple[dict, np.ndarray]]:
    """(inputs, [N, K] bool mask of the primary attribute's tokens) for `x` and every counterfactual set.

    The primary attribute's own counterfactuals use its `fault_mask_cf`; another attribute's
    counterfactuals swap only that attribute, so the primary's tokens keep their `fault_mask` positions.
    """
    primary = data["attributes"][data["primary"]]
    out = [(data["x"], primary["fault_mask"])]
    for name, a in data["attributes"].items():
        if name != data["primary"]:
            out += [(x_cf, primary["fault_mask"]) for x_cf in a["x_cf"]]
            continue
        masks = a.get("fault_mask_cf")
        if masks is None or len(masks) != len(a["x_cf"]):
            raise AtPatchError(f"test_sets: attributes[{name!r}] needs 'fault_mask_cf', one mask per counterfactual "
                               f"set ({len(a['x_cf'])}), got {None if masks is None else len(masks)}")
        out += list(zip(a["x_cf"], masks))
    return out


def oracle_metrics(model, data: dict, report_unpatched: dict, benign: torch.Tensor, layers, batch: int) -> dict:
    """The `oracle` block: attribute_metrics of `predict_oracle` with the primary attribute's tokens flagged
    in every input (test and counterfactual), as a `patched[mode]` block without detection and latency."""
    masks = oracle_masks(data)

    def oracle(x, desc):
        mask = next(m for inputs, m in masks if inputs is x)  # attribute_metrics passes these very dicts
        flags = torch.as_tensor(np.asarray(mask)).bool()
        return predict_oracle(model, x, flags, benign, layers, batch).labels

    pred, per_attr = attribute_metrics(oracle, data)
    m = summary(pred, data["y"], per_attr, data["primary"])
    m.update(reductions(report_unpatched, m))
    return m


def evaluate(params: dict, model, det, data: dict) -> tuple[dict, dict]:
    """The evaluate.json report of a fairness scenario and raw scores for the figures."""
    p, primary, mode_shipped = params["evaluate"], data["primary"], shipped_patch(params)["mode"]
    batch = p["batch_size"]

    base_runs = {}

    def plain(x, desc):
        out = predict_plain(model, x, batch, f"unpatched {desc}")
        base_runs.setdefault(desc, out)
        return out.labels

    base_pred, base = attribute_metrics(plain, data)
    report = {"scenario": params["scenario"], "kind": params["kind"], "default_mode": mode_shipped,
              "primary_attribute": primary, "definitions": FAIRNESS_DEFINITIONS,
              "unpatched": summary(base_pred, data["y"], base, primary), "patched": {}}
    flipped = base[primary]["flipped"]
    faults = data["attributes"][primary]["fault_mask"] & flipped[:, None]
    raw = {}
    patchers = shipped_patchers(params, model, det)
    shipped = patchers[mode_shipped]  # the oracle patches like the shipped patch (benign value, layers)
    report["oracle"] = oracle_metrics(model, data, report["unpatched"], shipped.benign, shipped.patch_layers, batch)
    for mode, patched in patchers.items():
        runs = {}

        def patched_pred(x, desc, patched=patched, runs=runs):
            out = predict_patched(patched, x, batch, f"{mode} {desc}")
            runs.setdefault(desc, out)
            return out.labels

        pred, per_attr = attribute_metrics(patched_pred, data)
        test = runs["test"]
        cand = patched.layout.masks(data["x"], len(data["y"]), test.scores.shape[1])[1].numpy()
        det_m = detection_metrics(test.scores[cand], faults[cand].astype(int), test.flagged[cand])
        m = summary(pred, data["y"], per_attr, primary)
        m.update(reductions(report["unpatched"], m), **det_m,
                 input_flag_rate_clean=input_flag_rate(test.flagged[~flipped]),
                 input_flag_rate_faulty=input_flag_rate(test.flagged[flipped]),
                 clean_pass_through_exact=pass_through_rate(test.logits, base_runs["test"].logits, test.flagged))
        report["patched"][mode] = m
        if mode == mode_shipped and resamples(params):
            report["intervals"] = {"mode": mode, "attribute": primary, **fairness_intervals(
                data["y"], data["attributes"][primary]["sensitive"], base_pred, flipped, pred,
                per_attr[primary]["flipped"], resamples(params), params.get("seed", 0))}
        raw[mode] = {"scores": test.scores[cand], "labels": faults[cand].astype(int), "test": test, "faulty": flipped}
    lat = latency(model, patchers, {"clean": data["x"]}, p)
    report["latency"] = lat
    for mode in patchers:
        report["patched"][mode]["latency_ratio_default"] = lat[f"clean_{mode}_ratio_default"]
        report["patched"][mode]["latency_ratio_eager"] = lat[f"clean_{mode}_ratio_eager"]
    return report, raw


def mediation(params: dict, kind, model, det) -> dict:
    """The attention-mediation check on the debugging split: its counterfactual flip rate unpatched and with
    the protected attribute's tokens patched in every row (oracle_metrics), patched like the shipped patch."""
    from atpatch.eval.mediation import fairness_mediation

    batch = params["evaluate"]["batch_size"]
    shipped = shipped_patchers(params, model, det)[shipped_patch(params)["mode"]]
    data = kind.test_sets(params, model, split="debug")
    pred, per_attr = attribute_metrics(lambda x, desc: predict_plain(model, x, batch, f"mediation {desc}").labels, data)
    before = summary(pred, data["y"], per_attr, data["primary"])
    after = oracle_metrics(model, data, before, shipped.benign, shipped.patch_layers, batch)
    return fairness_mediation(before["flip_rate"], after["flip_rate"], len(data["y"]))


def figures(out_dir: Path, model, det, data: dict, report: dict, raw: dict, default_mode: str) -> list[Path]:
    """Before/after bars of the fairness metrics, ROC, attention to the tokens of a few inputs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = ("CA", "flip_rate", "dp_diff", "eo_diff")
    bars = {"unpatched": {k: report["unpatched"][k] or 0.0 for k in keys}}  # None: undefined gap, drawn as 0
    bars.update({f"AtPatch {m}": {k: v[k] or 0.0 for k in keys} for m, v in report["patched"].items()})
    plots.before_after_bars(out_dir / "before_after.png", bars,
                            f"{report['scenario']} ({report['primary_attribute']}): accuracy and fairness gaps")
    r = raw[default_mode]
    files = roc_files(out_dir, r["scores"], r["labels"], report["patched"][default_mode].get("column_auroc", float("nan")),
                      f"detector ({default_mode})")
    faulty = np.flatnonzero(r["faulty"])[:2].tolist()
    clean = np.flatnonzero(~r["faulty"])[:1].tolist()
    pick = (faulty + clean) or [0]
    inputs = {k: v[pick] for k, v in data["x"].items()}
    flags = torch.as_tensor(r["test"].flagged[pick])
    show = data["show"](pick)
    titles = ["counterfactual flips" if i in faulty else "no flip" for i in pick]
    attention_figure(out_dir / "attention_maps.png", model, det, inputs, flags, show, titles)
    return [out_dir / "before_after.png", *files, out_dir / "attention_maps.png"]


def print_table(report: dict) -> None:
    """A readable summary in the terminal."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report['scenario']} (protected attribute {report['primary_attribute']})")
    for col in ("method", "CA %", "flip rate %", "DP diff", "EO diff", "clean flagged %", "col AUROC", "latency x"):
        table.add_column(col)

    def fmt(v, scale=1.0, digits=4):
        return "" if v is None else f"{scale * v:.{digits}f}"

    u = report["unpatched"]
    table.add_row("unpatched", fmt(u["CA"], 100, 2), fmt(u["flip_rate"], 100, 2), fmt(u["dp_diff"]), fmt(u["eo_diff"]),
                  "", "", "1.00")
    for mode, m in report["patched"].items():
        table.add_row(f"AtPatch {mode}", fmt(m["CA"], 100, 2), fmt(m["flip_rate"], 100, 2), fmt(m["dp_diff"]),
                      fmt(m["eo_diff"]), fmt(m["input_flag_rate_clean"], 100, 2), fmt(m.get("column_auroc"), 1, 4),
                      fmt(m["latency_ratio_default"], 1, 2))
    o = report.get("oracle")
    if o:
        table.add_row("oracle (no detector)", fmt(o["CA"], 100, 2), fmt(o["flip_rate"], 100, 2),
                      fmt(o["dp_diff"]), fmt(o["eo_diff"]), "", "", "")
    Console().print(table)
