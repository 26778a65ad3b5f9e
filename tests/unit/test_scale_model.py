"""The scale-out model of benchmarks/scale.py: makespan, fit, projection, and its RESULTS.md section."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks import scale_model as sm  # noqa: E402

PASSES = [{"label": "plain", "rows": 1000, "row_cost": 0.001}, {"label": "patched", "rows": 900, "row_cost": 0.002}]


def test_shards_go_to_the_first_free_worker():
    assert sm.makespan([1.0, 1.0, 1.0], 2) == 2.0
    assert sm.makespan([3.0, 1.0, 1.0, 1.0], 2) == 3.0
    assert sm.makespan([1.0, 2.0], 64) == 2.0 and sm.makespan([], 4) == 0.0


def test_one_worker_pays_every_shard_in_full_and_more_workers_only_divide_the_compute():
    one = sm.modelled_seconds(PASSES, 200, 1, overhead=0.1, batch=100)
    assert one == pytest.approx(5 * 0.1 + 1.0 + 5 * 0.1 + 1.8)
    # 2 workers: each pass in 6 shards (a multiple of 2) of 2 or 1 batches; 1000 rows: 4 x 200 + 2 x 100, so
    # 0.5 s on each worker; 900 rows: 3 x 200 + 3 x 100 at 0.002 s a row, the busier worker 1.0 s.
    two = sm.modelled_seconds(PASSES, 200, 2, overhead=0.1, batch=100)
    assert two == pytest.approx(6 * 0.1 + 0.5 + 6 * 0.1 + 1.0)


def test_fit_recovers_the_constants_of_a_run_made_by_the_model():
    size, overhead = 200, 0.05
    run = {"passes": [{"label": p["label"], "rows": p["rows"],
                       "shard_seconds": [r * p["row_cost"] for r in sm.shard_rows(p["rows"], 100, size)]} for p in PASSES]}
    run["seconds"] = sm.modelled_seconds(PASSES, size, 1, overhead, batch=100)
    fitted = sm.fit(run)
    assert fitted["overhead"] == pytest.approx(overhead)
    assert [p["row_cost"] for p in fitted["passes"]] == pytest.approx([p["row_cost"] for p in PASSES])


def test_projection_cannot_use_more_workers_than_a_pass_has_batches():
    model = {"passes": PASSES, "overhead": 0.01}
    rows = {(r["workers"], r["shard_size"]): r
            for r in sm.projection(model, 1900, batch=100, shard_size=400, workers=(1, 2, 16, 64))}
    assert rows[(1, 400)]["speedup"] == pytest.approx(1.0) and rows[(1, 400)]["shards_per_pass"] == 3
    assert rows[(2, 400)]["shards_per_pass"] == 4  # balanced: a multiple of the workers
    assert rows[(16, 400)]["speedup"] == pytest.approx(rows[(64, 400)]["speedup"])  # 3 shards: one round already
    assert rows[(64, 400)]["shards_per_pass"] == 3
    assert rows[(64, 100)]["speedup"] > rows[(64, 400)]["speedup"] and rows[(64, 100)]["shards_per_pass"] == 10


def test_the_results_section_says_the_projection_is_a_model():
    model = {"passes": PASSES, "overhead": 0.01}
    result = {"command": "benchmarks/scale.py", "cpus": 2, "threads": 1, "shard_size": 200, "batch_size": 100,
              "inputs": {"clean": 1000, "triggered": 900}, "passes": ["plain", "patched"], "identical": True,
              "serial": {"seconds": 2.5, "inputs_per_s": 760.0},
              "runs": [{"workers": 1, "seconds": 3.0, "inputs_per_s": 633.3, "shards": 10, "shard_seconds_median": 0.3},
                       {"workers": 2, "seconds": 1.6, "inputs_per_s": 1187.5, "shards": 10, "shard_seconds_median": 0.3}],
              "per_shard": {"cost_s": 0.28, "overhead_s": 0.02, "empty_round_trip_s": 0.1}, "target_speedup": 1.7,
              "speedup_2": 1.875, "target_met": True,
              "model": {"fit": model, "check": {"workers": 2, "modelled_s": 1.7, "measured_s": 1.6},
                        "projection": sm.projection(model, 1900, 100, 200)}}
    text = sm.markdown(json.loads(json.dumps(result)))
    assert "a model, not a measurement" in text and "1.88x, met" in text and "| 2 workers | 1.6 |" in text
    assert text.count("| 64 |") == 2  # the measured shard size and one batch a shard


def test_the_sweep_section_gives_both_wall_times_and_the_verdict():
    section = {"command": "benchmarks/sweep_timing.py", "profile": "small", "workers": 2, "threads": 1,
               "serial_threads": [2], "serial_seconds": 270.0, "parallel_seconds": 160.0, "ratio": 160 / 270,
               "target_ratio": 0.6, "met": True,
               "cells": [{"scenario": "tabular-fairness", "cell": "sex-seed0", "serial_seconds": 69.2,
                          "parallel_seconds": 75.9}]}
    text = sm.sweep_markdown(section)
    assert "| tabular-fairness sex-seed0 | 69 | 76 |" in text and "ratio 0.59; target at most 0.6: met" in text
    assert "**missed**" in sm.sweep_markdown({**section, "ratio": 0.7, "met": False})
