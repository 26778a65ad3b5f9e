"""Latency of the shipped patch against the victim as its user runs it, on a trained workspace.

The evaluate stage measures latency too, but inside a pipeline run that may share the cores with other
jobs. This benchmark measures only latency, round robin (every repeat times the unpatched model with its
default attention, eager, and each patch mode on the same batch of clean, then triggered test inputs), so
run it on a quiet machine:

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/latency.py --workspace .work/bench/default/vision-backdoor-corner

Writes benchmarks/results/latency-<scenario>-<variant>.json and prints the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def main() -> None:
    from atpatch.eval.backdoor_eval import latency, shipped_patchers
    from atpatch.core.detector import Detector
    from atpatch.scenarios.models.loading import load_classifier
    from atpatch.scenarios import kind_module, scenario_params

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--scenario", default="vision-backdoor")
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()
    ws = Path(args.workspace).resolve()
    params = scenario_params(yaml.safe_load((ws / "params.yaml").read_text()), args.scenario)
    p = {**params["evaluate"], "latency_repeats": args.repeats}
    with contextlib.chdir(ws):
        model = load_classifier(params["train_victim"]["out"], attn_implementation=p["default_attention"])
        data = kind_module(params).test_sets(params, model)
        patchers = shipped_patchers(params, model, Detector.load(params["train_detector"]["out"]))
    torch.manual_seed(0)
    result = {"command": " ".join(["benchmarks/latency.py", *sys.argv[1:]]), "threads": torch.get_num_threads(),
              "cpus": os.cpu_count(), "batch": p["latency_batch"], "repeats": args.repeats,
              "latency": latency(model, patchers, {"clean": data["x_clean"], "triggered": data["x_trig"]}, p)}
    variant = ws.name.removeprefix(args.scenario + "-")
    (RESULTS / f"latency-{args.scenario}-{variant}.json").write_text(json.dumps(result, indent=2) + "\n")
    lat = result["latency"]
    for split in ("clean", "triggered"):
        print(f"{split}: unpatched ({p['default_attention']}) {1e3 * lat[f'{split}_default_s']:.1f} ms, eager "
              f"{1e3 * lat[f'{split}_eager_s']:.1f} ms; " + ", ".join(
                  f"{mode} {lat[f'{split}_{mode}_ratio_default']:.3f}x" for mode in patchers))


if __name__ == "__main__":
    main()
