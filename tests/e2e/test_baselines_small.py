"""The baselines-and-ablations benchmark (benchmarks.baselines) end to end on a small vision-backdoor workspace.

A fresh small-profile workspace (further cut down: fewer images, 2 victim epochs) is trained up to
`train_detector@vision-backdoor` through DVC; the benchmark's `main` then runs a reduced method and
ablation list on it (cheap params in a config derived from benchmarks/baselines.yaml) and writes its
JSON, markdown section, trade-off plot and MLflow run into the test's temp dir. Checked: one row per
method with numbers, DER in [0, 1], the repair budget stated, the ablation rows, the plot and the table.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from _recipes import cheap_vision
from _workspace_env import env_for

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SCENARIO = "vision-backdoor"
# Smaller than profiles/small.yaml: the test checks the benchmark's mechanics, not a victim's quality.
OVERRIDES = cheap_vision(SCENARIO, {
    "generate": {"train_limit": 2000, "test_limit": 400,
                 "debug": {"n_triggered": 100, "n_clean": 100, "n_calib": 200}},
    "train_victim": {"epochs": 2},
    "train_detector": {"network": {"steps": 100}},
})
METHODS = ["none", "fine_pruning", "care", "attention_block"]
CHEAP = {"fine_pruning": {"finetune": {"epochs": 1}},
         "care": {"top_k": 4, "max_inputs": 16, "optimise": {"steps": 10}}}
ABLATIONS = {"benign_value": ["unified", "zero"], "calibration_fpr": [0.02], "debug_size": [50]}




def load_script(name: str):
    """A single-file benchmark (benchmarks/<name>.py), loaded from its path as its command line runs it."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_baselines_benchmark_small(tmp_path, monkeypatch):
    from atpatch.io import deep_merge
    from atpatch.ops.workspace import make_workspace

    for key, value in env_for(tmp_path / "ws").items():
        monkeypatch.setenv(key, value)
    t0 = time.perf_counter()
    ws = make_workspace(tmp_path / "ws", "small", OVERRIDES)
    res = subprocess.run([str(REPO / ".venv" / "bin" / "dvc"), "repro", f"train_detector@{SCENARIO}"], cwd=ws,
                         env=os.environ.copy(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    t_ws = time.perf_counter() - t0

    cfg = yaml.safe_load((REPO / "benchmarks" / "baselines.yaml").read_text())
    for name, params in CHEAP.items():
        cfg["methods"][name]["params"] = deep_merge(cfg["methods"][name].get("params"), params)
    cfg["methods"]["care"]["grid"] = [{}, {"top_k": 8}]  # two cheap variants: the selection on the repair set runs
    cfg["ablations"] = ABLATIONS
    cfg["evaluation"].update(latency_repeats=2, latency_warmup=1)
    config = tmp_path / "baselines.yaml"
    config.write_text(yaml.safe_dump(cfg))
    out, md = tmp_path / "results", tmp_path / "BASELINES.md"
    md.write_text("# kept\n\nhand-written text stays.\n")

    monkeypatch.syspath_prepend(str(REPO))  # where `python -m benchmarks.baselines`, run from the root, finds it
    from benchmarks.baselines.__main__ import main
    from benchmarks.baselines.render import replace_section

    t1 = time.perf_counter()
    args = ["--workspace", str(ws), "--scenario", SCENARIO, "--config", str(config), "--results-dir", str(out),
            "--markdown", str(md), "--methods", *METHODS, "--ablations", *ABLATIONS]
    result = main(args)
    print(f"\nworkspace (dvc repro train_detector) {t_ws:.0f} s, benchmark {time.perf_counter() - t1:.0f} s")

    saved = json.loads((out / f"baselines-{SCENARIO}.json").read_text())
    assert saved["scenario"] == SCENARIO and saved["task"] == "backdoor"
    assert saved["command"] == "python -m benchmarks.baselines " + " ".join(args)  # the command that reruns it
    names = [r["method"] for r in saved["rows"]]
    assert names == ["none (unpatched)", "AtPatch two-pass", "AtPatch online", "fine_pruning", "care", "attention_block"]
    for r in saved["rows"]:
        m = r["metrics"]
        assert m is not None, r.get("error")
        for key in ("CA", "ASR", "DER"):
            assert isinstance(m[key], float) and 0.0 <= m[key] <= 1.0, (r["method"], key, m[key])
        assert r["latency_ratio"] > 0 and r["repair_seconds"] >= 0
        assert "uses" in r["budget"] and "params" in r["budget"]
    by = {r["method"]: r for r in saved["rows"]}
    assert by["none (unpatched)"]["metrics"]["DER"] == 0.5
    assert by["AtPatch two-pass"]["repair_seconds"] == 0.0
    assert 0.0 <= by["AtPatch two-pass"]["metrics"]["column_auroc"] <= 1.0
    assert by["fine_pruning"]["repair_seconds"] > 0 and by["care"]["changes"]["neurons"]
    sel = by["care"]["selection"]
    assert len(sel["variants"]) == 2 and sel["chosen"] in (0, 1) and "test sets unused" in sel["criterion"]
    assert len(by["care"]["changes"]["neurons"]) == (4, 8)[sel["chosen"]]
    assert all(0.0 <= v["score"] <= 1.0 for v in sel["variants"])
    assert by["attention_block"]["budget"]["params"]["fpr"] == saved["rows"][1]["budget"]["uses"]["calibration_fpr"]
    assert "input_flag_rate_clean" in by["attention_block"]["metrics"]
    assert saved["repair_data"]["triggered_inputs"] == 100 and saved["repair_data"]["calib_inputs"] == 200
    assert saved["atpatch_setup"]["fit_seconds"] > 0

    groups = [(a["group"], a["value"]) for a in saved["ablations"]]
    assert groups == [("benign_value", "unified"), ("benign_value", "zero"), ("calibration_fpr", 0.02),
                      ("debug_size", 50)]
    for a in saved["ablations"]:
        assert a["metrics"] is not None and 0.0 <= a["metrics"]["DER"] <= 1.0, a

    png = out / f"tradeoff-{SCENARIO}.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    text = md.read_text()
    assert text.startswith("# kept") and "hand-written text stays." in text
    assert text.count(f"<!-- baselines:{SCENARIO}:start -->") == 1
    table = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| method")
             and not line.startswith("| ablation")]
    for name in names:
        assert any(line.startswith(f"| {name} |") for line in table), name
    assert result.get("mlflow_run_id")

    # A second run replaces the scenario's section instead of appending another one.
    replace_section(md, SCENARIO, "## again\n")
    assert md.read_text().count(f"<!-- baselines:{SCENARIO}:start -->") == 1 and "## again" in md.read_text()

    # The operating-point sweep on the same workspace: recalibrating at the shipped FPR with the shipped
    # benign value reproduces the runner's AtPatch row; a looser FPR never raises the threshold.
    shipped_fpr = saved["rows"][1]["budget"]["uses"]["calibration_fpr"]
    sweep = load_script("operating_points").main(
        ["--workspace", str(ws), "--scenario", SCENARIO, "--fpr", str(shipped_fpr), "0.5", "--benign", "unified", "zero",
         "--results-dir", str(out), "--no-mlflow"])
    points = json.loads((out / f"operating-points-{SCENARIO}.json").read_text())["points"]
    assert points == sweep["points"]
    assert [(p["calibration_fpr"], p["benign_value"]) for p in points] == [(shipped_fpr, "unified"), (shipped_fpr, "zero"),
                                                                           (0.5, "unified"), (0.5, "zero")]
    reference = by["AtPatch two-pass"]["metrics"]
    assert (points[0]["CA"], points[0]["ASR"]) == (reference["CA"], reference["ASR"])
    assert points[2]["threshold"] <= points[0]["threshold"]
    assert points[2]["input_flag_rate_clean"] >= points[0]["input_flag_rate_clean"]
    assert sweep["table"].count("\n") == 2 + 1 + 4
    from atpatch.core.errors import AtPatchError

    with pytest.raises(AtPatchError, match="only fairness scenarios"):  # no clean/triggered pairs in a backdoor's debugging split
        load_script("operating_points").main(["--workspace", str(ws), "--scenario", SCENARIO, "--split", "debug",
                                              "--results-dir", str(out), "--no-mlflow"])
