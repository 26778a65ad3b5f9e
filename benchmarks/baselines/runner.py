"""`run`: every method and ablation measured on one scenario of one pipeline workspace, as one result dict.

Loads the workspace's victim, AtPatch detector (data/<scenario>/detector) and test sets, builds every
baseline's repair data from the scenario's debugging set, applies each baseline (`atpatch.baselines`), runs
AtPatch as shipped (two-pass, online) and its ablations (detector refits reuse data/<scenario>/features.safetensors),
and scores everything with the same metric code (`atpatch.eval.backdoor_eval`, `atpatch.eval.fairness_eval`,
`atpatch.eval.metrics`).
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import numpy as np
import torch

from atpatch.core.errors import AtPatchError
from atpatch.io import load_params

from .ablations import run_ablations
from .bench import Bench
from .formatting import fmt_short
from .inputs import n_of
from .latency import UNPATCHED, attach_latency, measure_latency
from .methods import atpatch_rows, baseline_rows, unpatched_row
from .repair import build_repair
from .variants import setup_cost

DEFINITIONS_EXTRA = {
    "DER_flip": "fairness analogue of DER: (max(0, flip_before - flip_after) - max(0, CA_before - CA_after) + 1) / 2, "
                "flip rate of the primary attribute",
    "latency_ratio": "batch latency of the method's prediction / the unpatched victim with its default attention "
                     "(round-robin over all methods in one loop, clean test inputs; the statistic over the repeats is "
                     "evaluation.latency_statistic, min by default: the least disturbed by other processes)",
    "repair_seconds": "time to apply the defense to the victim (weight edits, fitting); 0 for AtPatch, whose "
                      "setup (feature extraction + detector fit on the debugging set) is reported separately",
    "input_flag_rate": "share of inputs the method touched (AtPatch: any flagged position; attention_block: "
                       "its outlier gate fired and it blocked a token)",
    "blocked_is_trigger": "attention_block: share of touched triggered inputs whose blocked token is a trigger token",
}


def profile_of(ws_params: dict, scenario: str) -> str:
    """'default', 'small' or 'custom': which repository profile the workspace's scenario params equal."""
    from atpatch.ops.workspace import merged_params

    mine = ws_params["scenarios"][scenario]
    for name in (None, "small"):
        try:
            if merged_params(name)["scenarios"].get(scenario) == mine:
                return name or "default"
        except AtPatchError:
            pass
    return "custom"


def clean_float(v):
    """JSON-safe numbers (NaN -> None), recursively."""
    if isinstance(v, dict):
        return {str(k): clean_float(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [clean_float(x) for x in v]
    if isinstance(v, (np.floating, float)):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, np.ndarray):
        return clean_float(v.tolist())
    if isinstance(v, (np.bool_,)):
        return bool(v)
    return v


def run(workspace: Path, scenario: str, cfg: dict, methods: list[str], groups: list[str], log=print) -> dict:
    """The scenario's result: one row per method, the ablation rows, budgets, latency, setup cost."""
    from atpatch.scenarios import scenario_params

    workspace = Path(workspace).resolve()
    ws_params = load_params(path=workspace / "params.yaml")
    flat = scenario_params(ws_params, scenario, workspace / "params.yaml")
    profile = profile_of(ws_params, scenario)  # against the repository's params as they are when the run starts
    t_start = time.perf_counter()
    torch.manual_seed(int(cfg.get("seed", 0)))
    with contextlib.chdir(workspace):  # the workspace's params name its files relative to it
        bench = Bench(flat, cfg)
        measured = measure(bench, scenario, methods, groups, log)
    result = {"scenario": scenario, "kind": flat["kind"], "task": "fairness" if bench.fairness else "backdoor",
              "workspace": str(workspace), "profile": profile, **describe(bench), **measured,
              "seconds": time.perf_counter() - t_start}
    return clean_float(result)


def measure(bench: Bench, scenario: str, methods: list[str], groups: list[str], log) -> dict:
    """Every method, AtPatch's setup cost, the ablations and the latency of all, in that order."""
    cfg = bench.cfg
    log(f"{scenario}: victim {bench.flat['train_victim']['out']}, unpatched "
        f"{fmt_short(bench.unpatched_row(), bench.fairness)}")
    repair, budget = build_repair(bench.kind, bench.flat, bench.model, bench.features, bench.fairness, cfg)
    row, predictor = unpatched_row(bench)
    at_rows, at_predictors, reference = atpatch_rows(bench, list(cfg["atpatch"]["modes"]), budget, log)
    base_rows, base_predictors = baseline_rows(bench, methods, repair, budget, log)
    rows, predictors = [row, *at_rows, *base_rows], {UNPATCHED: predictor, **at_predictors, **base_predictors}
    setup = setup_cost(bench) if cfg["atpatch"].get("measure_setup", True) else None
    if setup:
        log(f"AtPatch setup: extract {setup['extract_seconds']:.1f} s + detector fit {setup['fit_seconds']:.1f} s")
    main_modes = {r["method"].removeprefix("AtPatch "): r["metrics"] for r in at_rows}
    abl_rows, abl_patchers = run_ablations(bench, groups, reference, main_modes, log) if groups else ([], {})
    latency = measure_latency(bench, predictors, abl_patchers)
    attach_latency(latency, rows, abl_rows, reference, bench.shipped["mode"])
    return {"repair_data": budget, "rows": rows, "ablations": abl_rows, "atpatch_setup": setup, "latency": latency}


def describe(bench: Bench) -> dict:
    """What was measured: the victim, the test set's size, the settings the ratios and DER refer to."""
    from atpatch.eval.fairness_eval import FAIRNESS_DEFINITIONS
    from atpatch.eval.metrics import DEFINITIONS

    return {"seed": bench.seed, "default_attention": bench.p["default_attention"],
            "default_mode": bench.shipped["mode"],
            "victim": {"model_type": bench.model.config.model_type, "layers": bench.n_layers,
                       "heads": int(bench.meta["heads"])},
            "test_inputs": n_of(bench.data["x"] if bench.fairness else bench.data["x_clean"]),
            "primary_attribute": getattr(bench, "primary", None),
            "ASR_floor": None if bench.fairness else bench.base["ASR_floor"],
            "definitions": {**(FAIRNESS_DEFINITIONS if bench.fairness else DEFINITIONS), **DEFINITIONS_EXTRA}}
