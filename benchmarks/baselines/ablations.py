"""AtPatch ablations: the shipped configuration with one factor changed at a time.

ABLATIONS maps each group (a key of baselines.yaml's `ablations`) to the function that adds the row of one
value of it. A value equal to the shipped setting is not measured again: its row holds the reference
metrics themselves (the same dict, which is how the latency step knows to give it the shipped row's latency).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

from atpatch.core.errors import AtPatchError

from .bench import Bench
from .formatting import fmt_short
from .variants import detector_params, patcher, recalibrated, refit, subsample_fit


@dataclass
class AblationRun:
    """The ablation rows so far, and the patched classifier of each measured one (timed later for latency)."""

    bench: Bench
    reference: dict  # the shipped default-mode metrics
    main: dict  # mode -> the shipped metrics of each mode already measured as a main row
    log: Callable
    rows: list[dict] = field(default_factory=list)
    patchers: dict = field(default_factory=dict)

    def reuse(self, group: str, value, metrics: dict | None, note: str, **extra) -> None:
        """A row whose metrics were measured elsewhere."""
        self.rows.append({"group": group, "value": value, "metrics": metrics, "note": note, **extra})

    def reference_row(self, group: str, value, note: str = "reference", **extra) -> None:
        self.reuse(group, value, self.reference, note, **extra)

    def measure(self, group: str, value, make: Callable, **extra) -> None:
        """Score the patched classifier make() builds; keep it for the latency loop."""
        t0 = time.perf_counter()
        patched = make()
        key = f"ablation:{group}={value}"
        m = self.bench.eval_patched(patched)
        self.patchers[key] = patched
        self.rows.append({"group": group, "value": value, "metrics": m, "note": None, **extra})
        self.log(f"  {key}: {fmt_short(m, self.bench.fairness)} ({time.perf_counter() - t0:.1f} s)")


def ablate_mode(run: AblationRun, group: str, value: str) -> None:
    if value == run.bench.shipped["mode"]:
        return run.reference_row(group, value)
    if value in run.main:  # already measured as a main row: reuse (the latency comes from that row too)
        return run.reuse(group, value, run.main[value], f"= AtPatch {value}")
    run.measure(group, value, lambda: patcher(run.bench, run.bench.det, mode=value))


def ablate_benign_value(run: AblationRun, group: str, value: str) -> None:
    if value == (run.bench.shipped["benign_value"]):
        return run.reference_row(group, value)
    run.measure(group, value, lambda: patcher(run.bench, run.bench.det, benign_value=value))


def ablate_patch_layers(run: AblationRun, group: str, value: str) -> None:
    n_layers, shipped = run.bench.n_layers, run.bench.shipped["patch_layers"]
    layers = {"all": None, "last_half": list(range(n_layers // 2, n_layers)), "first": [0]}[value]
    resolved = list(range(n_layers)) if layers is None else layers
    same = [r for r in run.rows if r["group"] == group and r.get("layers") == resolved]
    if resolved == (list(range(n_layers)) if shipped is None else list(shipped)):
        run.reference_row(group, value, layers=resolved)
    elif same:  # two names for one layer set on a shallow victim: measured once
        run.reuse(group, value, same[0]["metrics"], f"same layers as {same[0]['value']}", layers=resolved)
    else:
        run.measure(group, value, lambda: patcher(run.bench, run.bench.det, patch_layers=layers), layers=resolved)


def ablate_calibration_fpr(run: AblationRun, group: str, value) -> None:
    fpr, shipped = float(value), run.bench.flat["train_detector"]
    if math.isclose(fpr, float(shipped["calibration_fpr"])):
        return run.reference_row(group, fpr, threshold=run.bench.det.config.threshold)
    det = recalibrated(run.bench, fpr, float(shipped["min_threshold"]))
    run.measure(group, fpr, lambda: patcher(run.bench, det), threshold=det.config.threshold,
                calib_inputs=int(run.bench.features["calib"].bool().sum()))


def ablate_loss(run: AblationRun, group: str, value: str) -> None:
    if value == "contrastive":
        w = float(run.bench.flat["train_detector"]["network"]["contrastive_weight"])
        return run.reference_row(group, value, f"reference (contrastive_weight {w})")
    if value != "ce_only":
        raise AtPatchError(f"ablation loss: expected contrastive or ce_only, got {value!r}")
    det, _, seconds = refit(run.bench, run.bench.features, detector_params(run.bench, contrastive_weight=0.0))
    run.measure(group, value, lambda: patcher(run.bench, det), fit_seconds=seconds, threshold=det.config.threshold)


def ablate_debug_size(run: AblationRun, group: str, value) -> None:
    feats, n = run.bench.features, int(value)
    n_fit = int((~feats["calib"].bool()).sum())
    if n >= n_fit:
        return run.reference_row(group, n, f"the fit part has {n_fit} inputs: the shipped detector", fit_inputs=n_fit)
    sub = subsample_fit(feats, n, run.bench.seed)
    n_faulty = int((sub["triggered"].bool() & ~sub["calib"].bool()).sum())
    try:
        det, _, seconds = refit(run.bench, sub, detector_params(run.bench))
    except Exception as exc:  # e.g. no labelled token left among the fit inputs: a row that says so
        run.rows.append({"group": group, "value": n, "metrics": None, "error": str(exc)})
        return run.log(f"  ablation:{group}={n}: {exc}")
    run.measure(group, n, lambda: patcher(run.bench, det), fit_seconds=seconds, fit_inputs=n, fit_faulty=n_faulty,
                threshold=det.config.threshold)


ABLATIONS: dict[str, Callable[[AblationRun, str, object], None]] = {
    "mode": ablate_mode,
    "loss": ablate_loss,
    "benign_value": ablate_benign_value,
    "patch_layers": ablate_patch_layers,
    "debug_size": ablate_debug_size,
    "calibration_fpr": ablate_calibration_fpr,
}


def run_ablations(bench: Bench, groups: list[str], reference: dict, main: dict, log: Callable) -> tuple[list[dict], dict]:
    """Rows {group, value, metrics, ...} and the measured rows' patched classifiers (key ablation:<group>=<value>).
    `reference` = the shipped default-mode metrics and `main` = mode -> the shipped metrics of each mode already
    measured (reused, not rerun)."""
    run = AblationRun(bench, reference, main, log)
    for group in groups:
        for value in bench.cfg["ablations"].get(group) or []:
            if group not in ABLATIONS:
                raise AtPatchError(f"unknown ablation group {group!r}")
            ABLATIONS[group](run, group, value)
    return run.rows, run.patchers
