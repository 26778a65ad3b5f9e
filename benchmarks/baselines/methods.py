"""One result row per method: the unpatched victim, AtPatch as shipped in each mode, and each baseline
(applied to the victim with the repair data, tuned on it where baselines.yaml gives a grid).

Each row comes with its predictor fn(inputs, sensitive) -> labels, for the latency loop."""

from __future__ import annotations

import time
from typing import Callable

from atpatch.core.errors import AtPatchError

from .bench import Bench
from .formatting import fmt_short
from .latency import UNPATCHED, label_predictor
from .repair import method_budget, resolve_params
from .selection import apply_best
from .variants import patcher

# Bulky or internal entries of a defense's `changes`, left out of the results.
UNREPORTED_CHANGES = ("finetune_history", "pruned", "fill")


def unpatched_row(bench: Bench) -> tuple[dict, Callable]:
    row = {"method": UNPATCHED, "family": "reference", "metrics": bench.unpatched_row(), "repair_seconds": 0.0,
           "budget": {"uses": {}, "params": {}}}
    return row, label_predictor(bench.model)


def atpatch_budget(bench: Bench, budget: dict) -> dict:
    """What AtPatch learned from (the debugging set, the detector's training) and its shipped settings."""
    det_cfg = bench.det.config
    return {"uses": {"debugging set": budget["debugging set"], "token labels": "per-token fault labels of the fit part",
                     "detector": {"steps": det_cfg.steps, "batch_size": det_cfg.batch_size,
                                  "contrastive_weight": det_cfg.contrastive_weight, "layers": det_cfg.layers},
                     "calibration_fpr": det_cfg.calibration.get("fpr_target"),
                     "threshold": det_cfg.threshold},
            "params": {"benign_value": bench.shipped["benign_value"],
                       "patch_layers": bench.shipped["patch_layers"]}}


def atpatch_rows(bench: Bench, modes: list[str], budget: dict, log: Callable) -> tuple[list[dict], dict, dict]:
    """AtPatch as shipped, one row per mode: (rows, predictors, the default mode's metrics: the ablations' reference)."""
    rows, predictors, reference = [], {}, None
    at_budget = atpatch_budget(bench, budget)
    for mode in modes:
        t0 = time.perf_counter()
        patched = patcher(bench, bench.det, mode=mode)
        m = bench.eval_patched(patched)
        name = f"AtPatch {mode}"
        rows.append({"method": name, "family": "atpatch", "metrics": m, "repair_seconds": 0.0, "budget": at_budget})
        predictors[name] = label_predictor(patched)
        if mode == bench.shipped["mode"]:
            reference = m
        log(f"{name}: {fmt_short(m, bench.fairness)} ({time.perf_counter() - t0:.1f} s)")
    if reference is None:  # the default mode is not a row of its own: the ablations still need its metrics
        reference = bench.eval_patched(patcher(bench, bench.det))
    return rows, predictors, reference


def baseline_rows(bench: Bench, methods: list[str], repair: dict, budget: dict,
                  log: Callable) -> tuple[list[dict], dict]:
    """Every configured baseline applicable to the scenario's task: (rows, predictors of those that worked)."""
    task = "fairness" if bench.fairness else "backdoor"
    rows, predictors = [], {}
    for name in methods:
        if name == "none":
            continue  # the unpatched row is the "none" baseline (same predictor)
        entry = bench.cfg["methods"].get(name)
        if entry is None:
            raise AtPatchError(f"method {name!r} is not configured in baselines.yaml "
                               f"(methods: {sorted(bench.cfg['methods'])})")
        entry = entry or {}
        if task not in entry.get("tasks", ["backdoor", "fairness"]):
            log(f"{name}: not applicable to {task} scenarios (tasks {entry['tasks']}), skipped")
            continue
        row, predictor = baseline_row(bench, name, entry, repair, budget, log)
        rows.append(row)
        if predictor is not None:
            predictors[name] = predictor
    return rows, predictors


def baseline_row(bench: Bench, name: str, entry: dict, repair: dict, budget: dict,
                 log: Callable) -> tuple[dict, Callable | None]:
    """One baseline applied (the best of its grid on the repair data) and scored; a failure is a row too."""
    from atpatch.baselines import MODULES

    params = resolve_params(name, entry.get("params"), bench.model, bench.flat)
    t0 = time.perf_counter()
    try:
        defended, params, selection, tuning = apply_best(name, params, entry.get("grid"), bench.model, repair,
                                                         bench.seed, log)
        m = bench.eval_baseline(defended)
    except Exception as exc:  # recorded, not hidden: the table shows the error
        log(f"{name}: FAILED {type(exc).__name__}: {exc}")
        return {"method": name, "family": "baseline", "metrics": None, "error": f"{type(exc).__name__}: {exc}",
                "budget": method_budget(MODULES[name], repair, budget, params)}, None
    mb = method_budget(MODULES[name], repair, budget, defended.changes.get("params", params))
    if selection:
        mb["tuning"] = {"grid": entry.get("grid"), "chosen": selection["chosen"], "criterion": selection["criterion"],
                        "seconds_all_variants": tuning}
    row = {"method": name, "family": "baseline", "metrics": m, "repair_seconds": defended.repair_seconds,
           "note": method_note(name, defended.changes), "selection": selection,
           "needs_sensitive_at_predict": defended.needs_sensitive,
           "changes": {k: v for k, v in defended.changes.items() if k not in UNREPORTED_CHANGES}, "budget": mb}
    log(f"{name}: {fmt_short(m, bench.fairness)}, repair {defended.repair_seconds:.1f} s "
        f"({time.perf_counter() - t0:.1f} s with tuning and evaluation)")
    return row, defended_predictor(defended)


def defended_predictor(defended) -> Callable:
    """fn(inputs, sensitive): a defense that thresholds by the sensitive feature gets it at predict time."""
    if defended.needs_sensitive:
        return lambda x, s: defended.predict(x, sensitive=s)
    return lambda x, s: defended.predict(x)


def method_note(name: str, ch: dict) -> str:
    """One line on what the defense changed (from Defended.changes)."""
    def f(v):
        return "?" if v is None else f"{100 * v:.1f}%"

    if name == "fine_pruning":
        a = ch.get("clean_acc", {})
        return (f"pruned {ch.get('n_pruned')}/{ch.get('n_candidates')} feed-forward neurons (ratio {ch.get('prune_ratio')}); "
                f"repair-set accuracy {f(a.get('before'))} -> pruned {f(a.get('pruned'))} -> fine-tuned {f(a.get('finetuned'))}")
    if name == "care":
        rs, neurons = ch.get("repair_set", {}), ch.get("neurons") or []
        top = max((n["effect"] for n in neurons), default=float("nan"))
        return (f"{len(neurons)} neurons rescaled (largest causal effect {top:.3g} on {ch.get('fault_measure')}); "
                f"repair-set fault rate {f(rs.get('fault_rate', {}).get('before'))} -> {f(rs.get('fault_rate', {}).get('after'))}, "
                f"accuracy {f(rs.get('clean_acc', {}).get('before'))} -> {f(rs.get('clean_acc', {}).get('after'))}")
    if name == "attention_block":
        return (f"{ch.get('score')} score; outlier threshold z > {ch.get('threshold_z', float('nan')):.3g} at fpr {ch.get('fpr')} "
                f"({f(ch.get('calib_touched_rate'))} of {ch.get('calib_inputs')} calibration inputs touched)")
    if name == "threshold_optimizer":
        return f"{ch.get('constraints')} thresholds per group {sorted(ch.get('groups', {}))}; needs the sensitive feature at predict time"
    return ""
