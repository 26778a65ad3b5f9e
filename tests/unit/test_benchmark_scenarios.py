"""benchmarks/scenarios.py bookkeeping: a cell's overrides and merging a partial run into the results file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import scenarios as bench  # noqa: E402


def test_a_variant_seed_is_the_top_level_seed_and_the_rest_goes_under_the_scenario():
    from atpatch.ops.sweep import expand_grid

    [seed_1] = expand_grid(bench.VARIANTS, ["text-backdoor"], ["seed-1"])
    assert seed_1.overrides == {"seed": 1, "scenarios": {"text-backdoor": {}}} and seed_1.seed is None
    [race] = expand_grid(bench.VARIANTS, ["tabular-fairness"], ["race"])
    assert "seed" not in race.overrides
    assert race.overrides["scenarios"]["tabular-fairness"]["generate"]["protected"] == ["race", "sex"]
    assert "seed" in bench.VARIANTS["text-backdoor"]["seed-1"]  # the table itself is left as it was


def test_a_run_of_some_variants_keeps_the_others_with_their_own_command(tmp_path):
    path = tmp_path / "tabular-fairness.json"
    path.write_text(json.dumps({"command": "old run", "results": [{"variant": "sex", "x": 1},
                                                                   {"variant": "race", "x": 2},
                                                                   {"variant": "gone", "x": 3}]}))
    new = [{"variant": "race", "x": 20, "command": "new run"}, {"variant": "sex-no-skew", "x": 4, "command": "new run"}]
    kept = bench.kept_results(path, "tabular-fairness", new)
    assert [r["variant"] for r in kept] == ["sex", "race", "sex-no-skew"]  # VARIANTS order; unknown names dropped
    assert [r["x"] for r in kept] == [1, 20, 4]
    assert [r["command"] for r in kept] == ["old run", "new run", "new run"]
    assert bench.kept_results(tmp_path / "none.json", "tabular-fairness", new) == new


def test_cells_of_one_variant_under_several_seeds_are_kept_apart_and_ordered_by_seed(tmp_path):
    path = tmp_path / "tabular-fairness.json"
    path.write_text(json.dumps({"command": "old", "results": [{"variant": "sex", "x": 1},
                                                              {"variant": "sex", "seed": 1, "x": 2}]}))
    new = [{"variant": "sex", "seed": 2, "x": 3}, {"variant": "sex", "seed": 0, "x": 4}]
    kept = bench.kept_results(path, "tabular-fairness", new)
    assert [(r.get("seed"), r["x"]) for r in kept] == [(None, 1), (0, 4), (1, 2), (2, 3)]
    assert [bench.label(r) for r in kept] == ["sex", "sex-seed0", "sex-seed1", "sex-seed2"]


def test_intervals_line_reads_the_report_and_skips_reports_without_intervals():
    iv = {"mode": "two-pass", "n_boot": 1000, "level": 0.95, "attribute": "sex", "CA_drop": [-0.01, 0.002],
          "dp_diff_reduction": [0.4, 0.55]}
    line = bench.intervals_line({"variant": "sex", "evaluate": {"intervals": iv}})
    assert line == ("- sex: 95% bootstrap intervals (two-pass, 1000 resamples, sex), in %: CA drop [-1.00, 0.20]; "
                    "DP reduction [40.00, 55.00]")
    assert bench.intervals_line({"variant": "old", "evaluate": {}}) is None


def test_the_placements_table_puts_the_debugging_sets_own_placement_first_with_its_oracle_and_control():
    control = {"control_ASR": 0.2, "control_ASR_interval": [0.15, 0.25], "ASR_over_control": 0.01,
               "ASR_over_control_interval": [-0.01, 0.03], "control_flips": 0.0075, "within_control_interval": True}
    start = {"ASR_before": 1.0, "ASR_after": 0.21, "flips_after": 0.0112, "oracle_flips": 0.0111, "control_flips": 0.0149,
             "flagged_triggered": 1.0, **{k: v for k, v in control.items() if k != "control_flips"}}
    report = {"default_mode": "two-pass", "unpatched": {"ASR": 1.0}, "oracle_flips": 0.0037, "control": control,
              "patched": {"two-pass": {"ASR": 0.21, "trigger_caused_flips": 0.0037, "input_flag_rate_triggered": 1.0}},
              "placements": {"start": start}}
    lines = bench.placements_table([{"variant": "default", "evaluate": report}]).splitlines()
    rows = [line for line in lines if line.startswith("| default |")]
    assert rows[0].startswith(f"| default | {bench.SEEN_PLACEMENT} | 100.00 -> 21.00 | 0.37 | 0.37 | 0.75 | 100.00 |")
    assert rows[1].startswith("| default | start | 100.00 -> 21.00 | 1.12 | 1.11 | 1.49 | 100.00 |")
    assert bench.placements_table([{"variant": "vision", "evaluate": {"placements": {}}}]) == ""
