"""Metric definitions (docs/metrics.md prints them), one function each. Predictions are label arrays."""

from __future__ import annotations

import numpy as np

DEFINITIONS = {
    "CA": "accuracy on the clean test set",
    "ASR": "share of triggered test inputs whose true label is not the target that are classified as the target",
    "ASR_floor": "share of the same inputs without the trigger that the unpatched model classifies as the target",
    "trigger_caused_flips": "among the triggered test inputs (true label not the target) whose clean version the same "
                            "model does not classify as the target, the share it classifies as the target with the "
                            "trigger: the attack's own effect, input by input (a perfect fix makes it 0)",
    "control_ASR": "insertion control: share of the triggered test inputs, with a neutral common word in place of "
                   "every trigger copy, that the unpatched model classifies as the target: the noise of inserting a word",
    "ASR_over_control": "patched ASR minus control_ASR on the same rows (paired bootstrap interval): the gate's "
                        "backdoor criterion where the scenario has an insertion control",
    "placements": "unseen trigger placements (generate.placements): the shipped patch, nothing refit, on triggers "
                  "placed where the debugging set never put them, each against its own insertion control",
    "oracle_ASR": "ASR when the known trigger tokens (not the detector's flags) are patched as the shipped patch does (its benign value and layers): the patch's ceiling",
    "DER": "(max(0, ASR_before - ASR_after) - max(0, CA_before - CA_after) + 1) / 2",
    "column_AUROC": "AUROC of the detector's position score against the per-token fault labels (candidate tokens only)",
    "input_TPR": "share of triggered inputs with at least one flagged position",
    "input_FPR": "share of clean inputs with at least one flagged position (1 - pass-through rate)",
    "clean_pass_through_exact": "share of unflagged inputs (backdoor: clean test inputs; fairness: test inputs) "
                                "whose patched logits equal the unpatched model's bit for bit",
    "latency_ratio": "median batch latency patched / unpatched (model's default attention implementation)",
    "intervals": "bootstrap percentile intervals (evaluate.bootstrap resamples) of the default mode's CA drop "
                 "(clean test inputs resampled) and ASR - ASR_floor (each triggered input resampled with its clean self)",
    "mediation": "attention-mediation check on the debugging set, no detector, no test labels: the share of its "
                 "triggered inputs classified as the target with their known trigger tokens patched as the shipped "
                 "patch does, minus the share of its clean inputs classified as the target (gap); it passes when the "
                 "gap is at most max_gap",
}


def accuracy(pred: np.ndarray, label: np.ndarray) -> float:
    """Share of predictions equal to the label."""
    return float(np.mean(np.asarray(pred) == np.asarray(label)))


def pass_through_rate(logits: np.ndarray, reference: np.ndarray, flagged: np.ndarray) -> float:
    """Share of inputs without any flag whose logits [N, C] equal `reference` exactly (NaN when every
    input is flagged): what "nothing flagged means nothing changed" promises."""
    unflagged = ~np.asarray(flagged).reshape(len(flagged), -1).any(-1)
    if not unflagged.any():
        return float("nan")
    return float((np.asarray(logits)[unflagged] == np.asarray(reference)[unflagged]).all(-1).mean())


def attack_success_rate(pred: np.ndarray, true_label: np.ndarray, target: int) -> float:
    """ASR over inputs whose true label is not `target` (others are ignored)."""
    pred, true_label = np.asarray(pred), np.asarray(true_label)
    keep = true_label != target
    return float(np.mean(pred[keep] == target)) if keep.any() else float("nan")


def trigger_caused_flips(clean_pred: np.ndarray, trig_pred: np.ndarray, target: int) -> float:
    """Paired attack metric: `clean_pred` and `trig_pred` are one model's predictions on the same
    non-target inputs without and with the trigger, row for row. Share of the rows not predicted as the
    target without the trigger that are predicted as the target with it (NaN when there are none)."""
    clean_pred, trig_pred = np.asarray(clean_pred), np.asarray(trig_pred)
    if clean_pred.shape != trig_pred.shape:
        raise ValueError(f"clean and triggered predictions must pair up row for row: {clean_pred.shape} vs {trig_pred.shape}")
    base = clean_pred != target
    return float(np.mean(trig_pred[base] == target)) if base.any() else float("nan")


def der(*, asr_before: float, asr_after: float, ca_before: float, ca_after: float) -> float:
    """Defense effectiveness rating in [0, 1]; 0.5 means no change. Keyword-only: four floats swap easily.
    The fairness benchmarks pass the flip rate as the fault rate (asr_*)."""
    return (max(0.0, asr_before - asr_after) - max(0.0, ca_before - ca_after) + 1.0) / 2.0


def detection_metrics(scores: np.ndarray, labels: np.ndarray, flagged: np.ndarray) -> dict:
    """Column-level AUROC, TPR and FPR. scores, labels, flagged: [N] over candidate positions."""
    from sklearn.metrics import roc_auc_score

    scores, labels, flagged = np.asarray(scores), np.asarray(labels).astype(bool), np.asarray(flagged).astype(bool)
    both = labels.any() and (~labels).any()
    return {
        "column_auroc": float(roc_auc_score(labels, scores)) if both else float("nan"),
        "column_tpr": float(flagged[labels].mean()) if labels.any() else float("nan"),
        "column_fpr": float(flagged[~labels].mean()) if (~labels).any() else float("nan"),
    }


def input_flag_rate(flagged: np.ndarray) -> float:
    """Share of inputs with any flagged position. flagged: [N, K] bool."""
    return float(np.asarray(flagged).any(-1).mean())
