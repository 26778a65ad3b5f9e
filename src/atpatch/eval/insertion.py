"""The insertion control and unseen trigger placements of a text backdoor (docs/metrics.md).

Inserting any word into a review shifts the positions of the words after it, which changes a few
predictions either way. The insertion control is the triggered test set with a neutral common word
where the trigger's copies are; the share of it that the unpatched model sends to the target is that
noise. A patch that removes the backdoor leaves the triggered inputs at the control's rate, so the
gate compares the patched triggered inputs with the control, row for row (paired bootstrap), rather
than with the untouched clean inputs (the ASR floor).

Unseen placements: the shipped patch (nothing refit) on triggers placed where the debugging set never
put them (`generate.placements`), each judged against its own control. Each placement's flips also come
with the two numbers that say what is left to win: the control's flips (what inserting a neutral word
there does by itself) and the oracle's (the known trigger tokens patched as the shipped patch does, so
what a perfect detector would leave).
"""

from __future__ import annotations

import numpy as np

import torch

from atpatch.eval.evaluation import predict_oracle, predict_patched, predict_plain
from atpatch.eval.metrics import input_flag_rate, trigger_caused_flips
from atpatch.eval.uncertainty import interval, resample_weights, weighted_mean

INSERTION_DEFINITIONS = {
    "control_flips": "trigger-caused flips of the insertion control (the unpatched model, the neutral word in place of "
                     "every trigger copy): the flips that inserting a word causes by itself; per placement too",
}


def target_rate(pred: np.ndarray, target: int) -> float:
    """Share of predictions equal to the target (every row here has a non-target true label)."""
    return float(np.mean(np.asarray(pred) == target))


def against_control(trig: np.ndarray, control: np.ndarray, target: int, n_boot: int, seed: int) -> dict:
    """Triggered predictions against the control's, row for row: the control's target rate with its
    bootstrap interval, and the paired difference with its interval (rows resampled together)."""
    trig, control = np.asarray(trig) == target, np.asarray(control) == target
    out = {"control_ASR": float(control.mean()), "ASR_over_control": float(trig.mean() - control.mean())}
    if n_boot:
        w = resample_weights(len(trig), n_boot, seed)
        out["control_ASR_interval"] = interval(weighted_mean(w, control))
        out["ASR_over_control_interval"] = interval(weighted_mean(w, trig) - weighted_mean(w, control))
    return out


def known_trigger_patched(model, patched, x_trig: dict, tokens_trig, batch: int) -> np.ndarray:
    """Labels with the known trigger tokens (tokens_trig [N, K]) patched as `patched` patches: the oracle."""
    flags = torch.as_tensor(np.asarray(tokens_trig)).bool()
    return predict_oracle(model, x_trig, flags, patched.benign, patched.patch_layers, batch).labels


def inside_control_interval(asr: float, block: dict) -> bool:
    """Whether a patched ASR lies inside the control's bootstrap interval (False without resamples)."""
    low_high = block.get("control_ASR_interval")
    return bool(low_high and low_high[0] <= asr <= low_high[1])


def control_block(model, trig_patched: np.ndarray, clean_non_target: np.ndarray, data: dict, batch: int,
                  n_boot: int, seed: int) -> dict:
    """The insertion control of the main triggered test set, against the shipped patch's triggered predictions.
    clean_non_target: the unpatched model's predictions on the same rows without any insertion."""
    target = data["target"]
    control = predict_plain(model, data["x_control"], batch, "unpatched control").labels
    block = {**against_control(trig_patched, control, target, n_boot, seed),
             "control_flips": trigger_caused_flips(clean_non_target, control, target)}
    block["within_control_interval"] = inside_control_interval(target_rate(trig_patched, target), block)
    return block


def placement_row(model, patched, moved: dict, clean_non_target: np.ndarray, target: int, batch: int,
                  n_boot: int, seed: int) -> dict:
    """One unseen placement: unpatched and patched ASR and trigger-caused flips, flag rate, against its control;
    the control's and the oracle's flips (moved["tokens_trig"]: this placement's trigger tokens, [N, K])."""
    before = predict_plain(model, moved["x_trig"], batch, "unpatched moved trigger").labels
    after = predict_patched(patched, moved["x_trig"], batch, "patched moved trigger")
    control = predict_plain(model, moved["x_control"], batch, "unpatched moved control").labels
    oracle = known_trigger_patched(model, patched, moved["x_trig"], moved["tokens_trig"], batch)
    row = {"ASR_before": target_rate(before, target), "ASR_after": target_rate(after.labels, target),
           "flips_before": trigger_caused_flips(clean_non_target, before, target),
           "flips_after": trigger_caused_flips(clean_non_target, after.labels, target),
           "control_flips": trigger_caused_flips(clean_non_target, control, target),
           "oracle_flips": trigger_caused_flips(clean_non_target, oracle, target),
           "flagged_triggered": input_flag_rate(after.flagged),
           **against_control(after.labels, control, target, n_boot, seed)}
    row["within_control_interval"] = inside_control_interval(row["ASR_after"], row)
    return row


def placements_table(model, patched, data: dict, clean_non_target: np.ndarray, batch: int, n_boot: int,
                     seed: int) -> dict[str, dict]:
    """Every unseen placement of the scenario's test sets (data["placements"]), one row each."""
    return {name: placement_row(model, patched, moved, clean_non_target, data["target"], batch, n_boot, seed + i)
            for i, (name, moved) in enumerate((data.get("placements") or {}).items())}
