"""Every scenario besides vision-backdoor end to end on the small profile, through the Prefect flow
(one `dvc repro --single-item <stage>@<scenario>` task per stage), into its own registered model.

vision-backdoor has its own, more thorough file (test_pipeline_small.py). Here each scenario gets a
fresh workspace; the checks: all stages ran, the report carries the scenario's metrics with their
definitions, the gate judged the scenario's own checks, the registry holds `atpatch-<scenario>`
with alias `challenger`, and the registered pyfunc answers its input example like the in-process
patched model.
"""

from __future__ import annotations

import json
import re
import os
import sys
import time
from pathlib import Path

import pytest
import yaml
from _outcomes import assert_the_patch_works
from _workspace_env import env_for  # noqa: E402

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BASE = ["fetch", "generate", "train_victim", "extract", "train_detector", "evaluate", "gate", "register"]
# What each scenario's report and gate must hold (beyond CA and the detection metrics).
EXPECTED = {
    "text-backdoor": {"metrics": ["ASR", "trigger_caused_flips", "DER", "input_flag_rate_triggered",
                                  "clean_pass_through_exact"],
                      "defined": ["CA", "ASR", "DER", "trigger_caused_flips", "control_ASR", "placements"],
                      "checks": {"ca_drop", "asr_over_control", "clean_flag_rate", "column_auroc", "clean_pass_through"}},
    "text-fairness": {"metrics": ["flip_rate", "dp_diff", "eo_diff", "flip_rate_reduction"],
                      "defined": ["CA", "flip_rate", "dp_diff", "eo_diff"],
                      "checks": {"ca_drop", "flip_rate_reduction", "dp_reduction", "eo_reduction", "clean_pass_through"}},
    "tabular-fairness": {"metrics": ["flip_rate", "dp_diff", "eo_diff", "flip_rate_reduction"],
                         "defined": ["CA", "flip_rate", "dp_diff", "eo_diff"],
                         "checks": {"ca_drop", "flip_rate_reduction", "dp_reduction", "eo_reduction", "clean_pass_through"}},
    "tabular-fairness-compas": {"metrics": ["flip_rate", "dp_diff", "eo_diff", "flip_rate_reduction"],
                                "defined": ["CA", "flip_rate", "dp_diff", "eo_diff"],
                                "checks": {"ca_drop", "flip_rate_reduction", "dp_reduction", "eo_reduction", "clean_pass_through"}},
}




@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PREFECT_HOME", str(home))
        sys.path.insert(0, str(REPO / "flows"))
        with prefect_test_harness(server_startup_timeout=90):
            yield
        sys.path.remove(str(REPO / "flows"))


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_scenario_end_to_end(scenario, harness, tmp_path, monkeypatch):
    import pipeline
    from mlflow import MlflowClient

    from atpatch.scenarios import kind_module, scenario_params
    from atpatch.ops.workspace import make_workspace

    for key, value in env_for(tmp_path).items():
        if key != "PREFECT_HOME":  # the harness's server stays in charge
            monkeypatch.setenv(key, value)
    ws = make_workspace(tmp_path, "small")
    params = yaml.safe_load((ws / "params.yaml").read_text())
    source = params["scenarios"][scenario]["source"]
    t0 = time.perf_counter()
    with pipeline.no_heartbeats():
        results = pipeline.atpatch_pipeline(workdir=str(ws), scenario=scenario)
    print(f"\n{scenario}: flow over all stages {time.perf_counter() - t0:.0f} s")
    assert [r["stage"] for r in results] == [f"fetch@{source}"] + [f"{s}@{scenario}" for s in BASE[1:]]
    assert all(r["ran"] for r in results[1:])  # fetch: the workspace committed the copied raw data

    metrics = ws / "metrics" / scenario
    report = json.loads((metrics / "evaluate.json").read_text())
    for mode in report["patched"]:
        for key in ["CA", "column_auroc", "input_flag_rate_clean", *EXPECTED[scenario]["metrics"]]:
            assert key in report["patched"][mode], (mode, key)
    assert set(EXPECTED[scenario]["defined"]) <= set(report["definitions"])
    assert report["intervals"]["mode"] == report["default_mode"]  # bootstrap intervals of the shipped mode
    print(scenario, json.dumps({k: v for k, v in report["patched"][report["default_mode"]].items()
                                if not isinstance(v, dict)}, indent=None))
    flat = scenario_params(params, scenario)
    assert_the_patch_works(report, flat["train_detector"]["calibration_fpr"])
    if scenario == "text-backdoor":  # the insertion control and every unseen placement, judged by the same patch
        assert set(report["placements"]) == set(flat["generate"]["placements"]) and report["control"]["control_ASR"] < 1
        for name, row in report["placements"].items():
            assert row["ASR_after"] < row["ASR_before"] and row["flagged_triggered"] > 0.5, (name, row)
            assert row["oracle_flips"] < row["flips_before"], (name, row)  # the known trigger patched: fewer flips
    gate = json.loads((metrics / "gate.json").read_text())
    assert {c["name"] for c in gate["checks"]} == EXPECTED[scenario]["checks"] | {"attention_mediation"}
    # The attention-mediation check ran on the debugging split and the gate judged its gap.
    mediation = report["mediation"]
    check = next(c for c in gate["checks"] if c["name"] == "attention_mediation")
    assert check["value"] == pytest.approx(mediation["gap"]) and check["passed"] is (mediation["gap"] <= check["limit"])
    assert mediation["message"].startswith("attention mediation")

    model_name = f"atpatch-{scenario}"
    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"], registry_uri=os.environ["MLFLOW_TRACKING_URI"])
    assert str(client.get_model_version_by_alias(model_name, "challenger").version) == "1"
    reg = json.loads((metrics / "register.json").read_text())
    assert reg["model_name"] == model_name and reg["promoted"] == gate["passed"]

    # The registered pyfunc answers like the in-process patched model.
    import mlflow

    from atpatch.core.detector import Detector
    from atpatch.scenarios.models.loading import load_classifier
    from atpatch.eval.backdoor_eval import shipped_patchers
    from atpatch.ops.serving.pyfunc_model import predict_frame

    monkeypatch.chdir(ws)
    kind = kind_module(flat)
    example = kind.input_example(flat, rows=4)
    # models:/ URIs resolve through mlflow's process-wide URIs, which earlier tests may have set. Not
    # restored after: mlflow.set_tracking_uri also writes MLFLOW_TRACKING_URI into the environment,
    # which monkeypatch restores at teardown.
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    mlflow.set_registry_uri(os.environ["MLFLOW_TRACKING_URI"])
    served = mlflow.pyfunc.load_model(f"models:/{model_name}@challenger").predict(example)
    # In process, configured as the register stage ships it (mode, benign value, patched layers).
    local = shipped_patchers(flat, load_classifier(flat["train_victim"]["out"]),
                             Detector.load(flat["train_detector"]["out"]))[gate["mode"]]
    if kind.INPUT_KIND == "text":
        from atpatch.scenarios.models.text import load_tokenizer

        local.model.atpatch_tokenizer = load_tokenizer(flat["train_victim"]["out"])
    expected = predict_frame(local, kind.INPUT_KIND, example)
    assert served["label"].tolist() == expected["label"].tolist()
    assert served["flagged"].tolist() == expected["flagged"].tolist()
    # ... and like the patch on the inputs the evaluation encoded itself (not through the pyfunc's decoding).
    import torch

    # text-fairness evaluates only its single-gender reviews, so its rows do not line up with the example.
    data = kind.test_sets(flat, local.model)
    x = data["x_clean"] if "x_clean" in data else data["x"]
    if len(next(iter(x.values()))) == len(kind.test_frame(flat, list(kind.TEST_SPLITS)[0])):
        with torch.no_grad():
            direct = local(**{k: v[: len(example)] for k, v in x.items()})
        assert served["label"].tolist() == direct.logits.argmax(-1).tolist()
    else:
        assert scenario == "text-fairness"

    # `atpatch inspect` answers for every scenario kind, run as a user runs it (its own process): a test
    # row through the registered patch, its prediction as the served model gives it, and a readable
    # name for every flagged position.
    import subprocess

    split = list(kind.TEST_SPLITS)[-1]
    proc = subprocess.run([sys.executable, "-m", "atpatch.cli", "inspect", "--root", str(ws), "--scenario", scenario,
                           "--split", split, "0"], capture_output=True, text=True, env=dict(os.environ),
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = " ".join(proc.stdout.split())
    row = kind.test_frame(flat, split, slice(0, 1))
    served_row = predict_frame(local, kind.INPUT_KIND, row.drop(columns="label"))
    assert f"input: {split} test row 0 (label {int(row['label'][0])})" in out
    assert re.search(rf"(?<!un)patched\W+{served_row['label'][0]}\b", out), out
    assert "column attention" in out
