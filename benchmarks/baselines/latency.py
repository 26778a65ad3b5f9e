"""Latency of every predictor, timed round robin on the same clean batches so that the load of a shared
machine falls on all of them alike."""

from __future__ import annotations

import os
import time
from typing import Callable

import numpy as np
import torch

from .inputs import n_of

UNPATCHED = "none (unpatched)"
EAGER = "unpatched eager"


def label_predictor(model) -> Callable:
    """fn(inputs, sensitive) -> predicted labels, for a classifier that ignores the sensitive feature."""
    return lambda x, s: model(**x).logits.argmax(-1)


def round_robin_latency(fns: dict[str, Callable], inputs: dict, sensitive, batch: int, repeats: int,
                        warmup: int = 2) -> dict:
    """Median seconds per full batch of `inputs` for every fn(chunk, sensitive_chunk), interleaved."""
    n = n_of(inputs)
    starts = list(range(0, max(n - batch + 1, 1), batch))
    chunks = [({k: v[s:s + batch] for k, v in inputs.items()}, None if sensitive is None else sensitive[s:s + batch])
              for s in starts]
    times = {name: [] for name in fns}
    names = list(fns)
    with torch.no_grad():
        for _ in range(warmup):
            for fn in fns.values():
                fn(*chunks[0])
        for i in range(repeats):
            chunk = chunks[i % len(chunks)]
            shift = i % len(names)  # rotate the order: no method is always first after another
            for name in names[shift:] + names[:shift]:
                t0 = time.perf_counter()
                fns[name](*chunk)
                times[name].append(time.perf_counter() - t0)
    return {name: {"median": float(np.median(t)), "min": float(np.min(t))} for name, t in times.items()}


def measure_latency(bench, predictors: dict[str, Callable], ablation_patchers: dict) -> dict:
    """The result's latency block: every method's predictor, every measured ablation's patched classifier and a
    second copy of the victim with eager attention (the attention implementation's share of the cost)."""
    from atpatch.scenarios.models.loading import load_classifier

    x_lat, s_lat = bench.latency_inputs()
    e = bench.cfg["evaluation"]
    fns = dict(predictors)
    fns.update({k: label_predictor(p) for k, p in ablation_patchers.items()})
    eager_model = load_classifier(bench.flat["train_victim"]["out"]).eval()
    fns[EAGER] = label_predictor(eager_model)
    lat = round_robin_latency(fns, x_lat, s_lat, int(e["latency_batch"]), int(e["latency_repeats"]),
                              int(e.get("latency_warmup", 2)))
    stat = e.get("latency_statistic", "min")
    eager_all = lat.pop(EAGER)
    return {"batch": int(e["latency_batch"]), "repeats": int(e["latency_repeats"]), "statistic": stat,
            "unpatched_default_s": lat[UNPATCHED][stat], "unpatched_eager_s": eager_all[stat],
            "load_average": os.getloadavg()[0], "cpus": os.cpu_count(), "all_s": {**lat, EAGER: eager_all}}


def attach_latency(latency: dict, rows: list[dict], ablation_rows: list[dict], reference: dict,
                   default_mode: str) -> None:
    """Latency ratios (/ the unpatched victim) into the rows. An ablation row that reuses another row's metrics
    (the shipped configuration, or a mode measured as a main row) gets that row's latency."""
    stat, timed = latency["statistic"], latency["all_s"]
    ratio = {k: v[stat] / latency["unpatched_default_s"] for k, v in timed.items() if k != EAGER}
    for r in rows:
        if r["method"] in ratio:
            r["latency_s"], r["latency_ratio"] = timed[r["method"]], ratio[r["method"]]
            r["latency_ratio_eager"] = timed[r["method"]][stat] / latency["unpatched_eager_s"]
    default_key = f"AtPatch {default_mode}"
    for r in ablation_rows:
        key = f"ablation:{r['group']}={r['value']}"
        if key in ratio:
            r["latency_ratio"] = ratio[key]
        elif r.get("metrics") is reference and default_key in ratio:
            r["latency_ratio"] = ratio[default_key]
        elif r["group"] == "mode" and f"AtPatch {r['value']}" in ratio:
            r["latency_ratio"] = ratio[f"AtPatch {r['value']}"]
