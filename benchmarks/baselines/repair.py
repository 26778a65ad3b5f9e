"""The repair data every baseline gets, built from the scenario's debugging set (the inputs AtPatch's detector
learned from), and what each baseline read of it (its budget)."""

from __future__ import annotations

import copy

import numpy as np
import torch

from atpatch.core.errors import AtPatchError

from .inputs import n_of, take


def check_debug_set(debug: dict, features: dict, labels: np.ndarray, flat: dict) -> None:
    """The debugging set rebuilt now must be the one the workspace's features were extracted from."""
    n = n_of(debug["inputs"])
    for key in ("token_labels", "triggered", "calib"):
        if not torch.equal(debug[key].bool(), features[key].bool()):
            raise AtPatchError(f"debugging set: {key} differs from {flat['extract']['out']} (stale features? "
                               f"run dvc repro extract@{flat['scenario']})")
    if len(labels) != n:
        raise AtPatchError(f"debugging split: {len(labels)} labels for {n} inputs")


def clean_rows(cfg: dict, triggered: np.ndarray, calib: np.ndarray, fairness: bool) -> np.ndarray:
    """Indices of the debugging rows a baseline may use as clean data (repair.clean: all, or the fit part only)."""
    mode = cfg["repair"]["clean"]
    if mode not in ("all", "fit"):
        raise AtPatchError(f"baselines.yaml repair.clean: expected all or fit, got {mode!r}")
    rows = np.ones(len(triggered), bool) if fairness else ~triggered
    if mode == "fit":
        rows &= ~calib
    return np.flatnonzero(rows)


def build_repair(kind, flat: dict, model, features: dict, fairness: bool, cfg: dict) -> tuple[dict, dict]:
    """The repair dict every baseline gets, and a description of the budget (counts per key)."""
    debug = kind.debug_set(flat, model)
    labels = np.asarray(kind.debug_labels(flat))
    inputs = debug["inputs"]
    check_debug_set(debug, features, labels, flat)
    triggered, calib = features["triggered"].bool().numpy(), features["calib"].bool().numpy()
    clean_idx = clean_rows(cfg, triggered, calib, fairness)
    repair = {"clean_inputs": take(inputs, clean_idx), "clean_labels": labels[clean_idx],
              "calib_inputs": take(inputs, np.flatnonzero(calib)), "layout": kind.layout(model)}
    budget = {"debugging set": {"inputs": n_of(inputs), "fit": int((~calib).sum()),
                                "fit faulty" if fairness else "fit triggered": int((triggered & ~calib).sum()),
                                "calib (clean)": int(calib.sum())},
              "clean_inputs": len(clean_idx), "calib_inputs": int(calib.sum())}
    if fairness:
        add_counterfactuals(repair, budget, kind, flat, model, clean_idx)
    else:
        trig_idx = np.flatnonzero(triggered)
        repair["triggered_inputs"] = take(inputs, trig_idx)
        repair["target_label"] = kind.target_label(flat)
        repair["_triggered_labels"] = labels[trig_idx]  # the runner's own (selection on the repair set); no baseline reads it
        budget["triggered_inputs"] = len(trig_idx)
    return repair, budget


def add_counterfactuals(repair: dict, budget: dict, kind, flat: dict, model, clean_idx: np.ndarray) -> None:
    """Fairness repair data: the clean rows' counterfactuals (every other value of each protected attribute)
    and their primary sensitive feature."""
    sub = kind.debug_frame(flat).iloc[clean_idx].reset_index(drop=True)
    protected = kind.protected(flat)
    cfs = [cf for a in protected for cf in kind.counterfactual_sets(flat, model, sub, a)]
    repair["counterfactual_inputs"] = cfs
    repair["sensitive"] = sub[protected[0]].to_numpy()
    budget.update(counterfactual_inputs=f"{len(cfs)} sets x {len(clean_idx)} rows (every other value of "
                                        f"{', '.join(protected)})",
                  sensitive=f"{protected[0]} of the {len(clean_idx)} clean_inputs")


def method_budget(module, repair: dict, budget: dict, params: dict) -> dict:
    """What one baseline read of the repair data, and its params."""
    used = {}
    for key in module.USES:
        if repair.get(key) is None:
            continue
        if key in budget:
            used[key] = budget[key]
        elif key == "clean_labels":
            used[key] = f"{len(repair[key])} true labels"
        elif key == "target_label":
            used[key] = repair[key]
        elif key == "layout":
            used[key] = repair[key].to_dict()
    if module.NAME == "attention_block" and "calib_inputs" in used:
        used.pop("clean_inputs", None)
    return {"uses": used, "params": params}


def resolve_params(name: str, raw: dict | None, model, flat: dict) -> dict:
    """baselines.yaml's params for `name`, with its symbolic values resolved for this victim."""
    from atpatch.baselines import block_list

    p = copy.deepcopy(raw or {})
    if name == "attention_block" and p.get("fpr") == "atpatch":
        p["fpr"] = float(flat["train_detector"]["calibration_fpr"])
    n_blocks = len(block_list(model))
    if isinstance(p.get("layers"), int) and not isinstance(p.get("layers"), bool):
        p["layers"] = min(p["layers"], n_blocks)
    return p
