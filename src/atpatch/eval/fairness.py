"""Fairness: counterfactual inputs, flip rate, debugging labels and group metrics (docs/method.md, docs/metrics.md).

Individual discrimination is found by counterfactual testing: swap only the protected attribute
of an input and see whether the model's prediction changes. Group metrics come from Fairlearn.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from atpatch.core.errors import AtPatchError, ShapeError

DEFINITIONS = {
    "accuracy": "share of test predictions equal to the true label",
    "counterfactual_flip_rate": "share of test inputs whose prediction changes when only the protected attribute "
                                "is swapped (every other column kept)",
    "demographic_parity_difference": "largest minus smallest selection rate (share predicted positive) across the "
                                     "protected groups (Fairlearn)",
    "equalized_odds_difference": "the larger of the between-group differences in true positive rate and in false "
                                 "positive rate (Fairlearn)",
    "selection_rate": "per group: share of inputs predicted positive",
    "TPR": "per group: share of true positives predicted positive",
    "FPR": "per group: share of true negatives predicted positive",
    "fault_token": "a protected-attribute token is labelled a fault (1) in the inputs whose prediction changes when "
                   "only that attribute is swapped; every other token, and every token of other inputs, is 0",
}

SEX_SWAP = {"Male": "Female", "Female": "Male"}


def swap_mapping(a: str, b: str) -> dict[str, str]:
    """{a: b, b: a}: swap two values of an attribute (e.g. race White <-> Black), leave the others."""
    return {a: b, b: a}


def counterfactual(frame, attribute: str, mapping: Mapping):
    """A copy of `frame` where only column `attribute` is changed: each value in `mapping` becomes its image.

    Values not in `mapping` stay as they are (their rows are identical to the original).
    """
    if attribute not in frame.columns:
        raise AtPatchError(f"counterfactual: attribute {attribute!r} not in the frame (columns: {list(frame.columns)})")
    if not mapping:
        raise AtPatchError(f"counterfactual: empty mapping for attribute {attribute!r}")
    out = frame.copy()
    col = frame[attribute]
    out[attribute] = col.map(lambda v: mapping.get(v, v)).astype(col.dtype)
    return out


def counterfactuals_all_values(frame, attribute: str, values: Iterable) -> list:
    """One counterfactual frame per value in `values`: `attribute` set to that value in every row.

    For a many-valued attribute (race) "swap" means every other value; rows already holding the
    value are unchanged in that frame, so they cannot flip in it.
    """
    if attribute not in frame.columns:
        raise AtPatchError(f"counterfactual: attribute {attribute!r} not in the frame (columns: {list(frame.columns)})")
    outs = []
    for value in values:
        out = frame.copy()
        out[attribute] = frame[attribute].map(lambda _v, value=value: value).astype(frame[attribute].dtype)
        outs.append(out)
    return outs


def _flips(pred, pred_cf) -> np.ndarray:
    """[N] bool: prediction changed in any counterfactual. pred [N]; pred_cf [N] or [M, N]."""
    pred, pred_cf = np.asarray(pred), np.asarray(pred_cf)
    if pred.ndim != 1:
        raise ShapeError(f"pred: expected shape (N,), got {pred.shape}")
    cf = pred_cf[None] if pred_cf.ndim == 1 else pred_cf
    if cf.ndim != 2 or cf.shape[1] != pred.shape[0]:
        raise ShapeError(f"pred_cf: expected shape ({pred.shape[0]},) or (M, {pred.shape[0]}), got {pred_cf.shape}")
    return (cf != pred[None]).any(0)


def counterfactual_flip_rate(pred, pred_cf) -> float:
    """Share of inputs whose prediction differs in the counterfactual (any of them, for [M, N])."""
    flips = _flips(pred, pred_cf)
    return float(flips.mean()) if flips.size else float("nan")


def fault_token_labels(pred, pred_cf, position: int | Iterable[int], n_tokens: int) -> np.ndarray:
    """Debugging labels [N, n_tokens] int8 from counterfactual testing.

    Input i gets 1 at the protected column's token position(s) when swapping only that attribute
    changes its prediction (pred_cf: [N] or [M, N] for several counterfactuals); else it is clean
    (all zeros). Position 0 (CLS) is never a fault.
    """
    positions = np.atleast_1d(np.asarray(position, dtype=np.int64))
    if positions.size == 0 or (positions < 1).any() or (positions >= n_tokens).any():
        raise ShapeError(f"fault_token_labels: positions {positions.tolist()} must lie in [1, {n_tokens - 1}] "
                         "(0 is CLS)")
    flips = _flips(pred, pred_cf)
    labels = np.zeros((flips.shape[0], n_tokens), dtype=np.int8)
    labels[np.ix_(flips, positions)] = 1
    return labels


def _plain(value):
    """A JSON-able float (NaN -> None)."""
    value = float(value)
    return None if np.isnan(value) else value


def group_metrics(y_true, y_pred, sensitive) -> dict:
    """Accuracy, demographic parity difference, equalized odds difference and per-group rates.

    Returns {"accuracy", "demographic_parity_difference", "equalized_odds_difference",
    "by_group": {group: {"count", "selection_rate", "accuracy", "TPR", "FPR"}}} as plain Python
    values. A rate that is undefined for a group (TPR without positives, FPR without negatives) is
    None in `by_group`; Fairlearn's equalized odds difference counts it as 0. Binary labels, 1 = positive.
    """
    from fairlearn.metrics import (MetricFrame, count, demographic_parity_difference, equalized_odds_difference,
                                   false_positive_rate, selection_rate, true_positive_rate)
    from sklearn.metrics import accuracy_score

    y_true, y_pred, sensitive = np.asarray(y_true), np.asarray(y_pred), np.asarray(sensitive)
    if not (y_true.shape == y_pred.shape == sensitive.shape) or y_true.ndim != 1:
        raise ShapeError(f"group_metrics: y_true {y_true.shape}, y_pred {y_pred.shape} and sensitive "
                         f"{sensitive.shape} must be the same 1-D shape")
    if y_true.size == 0:
        raise AtPatchError("group_metrics: no inputs")
    frame = MetricFrame(
        metrics={"count": count, "selection_rate": selection_rate, "accuracy": accuracy_score,
                 "TPR": true_positive_rate, "FPR": false_positive_rate},
        y_true=y_true, y_pred=y_pred, sensitive_features=sensitive)
    by_group = {}
    for group, row in frame.by_group.iterrows():
        values = {name: (int(v) if name == "count" else _plain(v)) for name, v in row.items()}
        in_group = sensitive == group
        if not (y_true[in_group] == 1).any():  # Fairlearn reports 0 where a rate has no denominator
            values["TPR"] = None
        if not (y_true[in_group] == 0).any():
            values["FPR"] = None
        by_group[str(group)] = values
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "demographic_parity_difference": _plain(demographic_parity_difference(y_true, y_pred,
                                                                              sensitive_features=sensitive)),
        "equalized_odds_difference": _plain(equalized_odds_difference(y_true, y_pred, sensitive_features=sensitive)),
        "by_group": by_group,
    }
