"""End to end on the small profile: DVC, the Prefect flows, the MLflow registry, a failing split.

One workspace (profiles/small.yaml, the gate's own thresholds) in a temp dir, with its own DVC
cache, MLflow store and Prefect home. The tests run in file order and share it:

(a) `dvc repro` runs every stage; a second one runs nothing; the registry holds the champion.
(b) the Prefect pipeline flow forces gate + register, then finds every stage up to date;
    the nightly flow, in process and as a scheduled deployment run by a worker of a real Prefect server.
(c) gate.force_fail: the new version becomes `challenger`, `champion` stays.
(d) a generate param that breaks a split's validation: `dvc repro` fails at generate naming the
    split and the expectation, and the previous generated data stays byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from _outcomes import assert_the_patch_works
from _prefect_server import api_get, api_post, prefect_server, run_cli
from _workspace_env import env_for  # noqa: E402

from atpatch.eval.mediation import MAX_GAP
from atpatch.scenarios import scenario_params

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DVC = REPO / ".venv" / "bin" / "dvc"
MODEL = "atpatch-vision-backdoor"
METRICS = Path("metrics/vision-backdoor")
SCENARIO = "vision-backdoor"
BASE = ["fetch", "generate", "train_victim", "extract", "train_detector", "evaluate", "gate", "register"]
STAGES = ["fetch@fashion-mnist"] + [f"{s}@{SCENARIO}" for s in BASE[1:]]
TARGET = f"register@{SCENARIO}"  # the scenario end to end (other scenarios have their own e2e tests)


def for_scenario(section: dict) -> dict:
    """A params override of this scenario's sections."""
    return {"scenarios": {SCENARIO: section}}


TIMINGS: dict[str, float] = {}




def dvc(ws: Path, *args: str, check: bool = True, label: str = "") -> subprocess.CompletedProcess:
    t0 = time.perf_counter()
    res = subprocess.run([str(DVC), *args], cwd=ws, env=os.environ.copy(), capture_output=True, text=True,
                         timeout=600)
    TIMINGS[f"dvc {' '.join(args)} {label}".strip()] = round(time.perf_counter() - t0, 1)
    if check and res.returncode != 0:
        pytest.fail(f"dvc {' '.join(args)} failed (exit {res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}")
    return res


def ran(res: subprocess.CompletedProcess) -> list[str]:
    return [s for s in STAGES if f"Running stage '{s}'" in res.stdout]


def read_json(ws: Path, name: str) -> dict:
    return json.loads((ws / METRICS / name).read_text())


def set_params(ws: Path, updates: dict) -> None:
    from atpatch.ops.workspace import deep_merge, write_params

    write_params(ws, deep_merge(yaml.safe_load((ws / "params.yaml").read_text()), updates))


def client(ws: Path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{ws / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def versions(ws: Path) -> list[int]:
    return sorted(int(v.version) for v in client(ws).search_model_versions(f"name='{MODEL}'"))


def alias(ws: Path, name: str) -> int:
    return int(client(ws).get_model_version_by_alias(MODEL, name).version)


def tree_hashes(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """The small workspace after its first `dvc repro` (environment pointed into it)."""
    from atpatch.scenarios.data.fetch import fetch_fashion_mnist
    from atpatch.ops.workspace import make_workspace

    fetch_fashion_mnist(REPO / "data" / "raw" / "fashion-mnist")  # the shared raw cache, once
    path = tmp_path_factory.mktemp("small")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env_for(path).items():
            mp.setenv(key, value)
        t0 = time.perf_counter()
        make_workspace(path, "small")  # the profile as users run it: its gate passes
        TIMINGS["make_workspace"] = round(time.perf_counter() - t0, 1)
        started = time.time()
        first = dvc(path, "repro", TARGET, label="(first, all stages)")
        yield {"path": path, "first": first, "started": started}
    print("\ne2e timings (s):", json.dumps(TIMINGS, indent=1))


@pytest.fixture(scope="module")
def harness(ws):
    """A Prefect test server (after `ws` set PREFECT_HOME and the server settings)."""
    from prefect.testing.utilities import prefect_test_harness

    sys.path.insert(0, str(REPO / "flows"))
    t0 = time.perf_counter()
    with prefect_test_harness(server_startup_timeout=90):
        TIMINGS["prefect_test_harness start"] = round(time.perf_counter() - t0, 1)
        yield
    sys.path.remove(str(REPO / "flows"))


# ---------------------------------------------------------------- (a) DVC


def test_repro_runs_every_stage(ws):
    res, path = ws["first"], ws["path"]
    # fetch is up to date from the start: the workspace committed the copied raw files.
    assert "Stage 'fetch@fashion-mnist' didn't change" in res.stdout
    assert ran(res) == STAGES[1:]
    for name in ("detector.json", "evaluate.json", "gate.json", "register.json"):
        assert (path / METRICS / name).is_file(), name
    # Each validating stage rendered its Data Docs into the workspace, not the repository (which may hold
    # its own from a `make run` before the tests).
    from atpatch.conventions import VALIDATED_STAGES, data_docs_index

    for stage in VALIDATED_STAGES:
        assert (path / data_docs_index(SCENARIO, stage)).is_file(), stage
        in_repo = REPO / data_docs_index(SCENARIO, stage)
        assert not in_repo.exists() or in_repo.stat().st_mtime < ws["started"], stage
    report = read_json(path, "evaluate.json")
    print("\nsmall profile:", json.dumps({"unpatched": report["unpatched"],
                                          "two-pass": {k: report["patched"]["two-pass"][k] for k in
                                                       ("CA", "ASR", "DER", "input_flag_rate_clean",
                                                        "column_auroc")}}))
    # The profile's purpose: the victim learned the backdoor, so there is something to patch; and the
    # patch removes it, by the gate's own thresholds (params.yaml's, which the profile keeps).
    assert report["unpatched"]["ASR"] > report["unpatched"]["ASR_floor"] + 0.3
    params = yaml.safe_load((path / "params.yaml").read_text())
    assert_the_patch_works(report, scenario_params(params, SCENARIO)["train_detector"]["calibration_fpr"])
    gate = read_json(path, "gate.json")
    assert gate["passed"] is True
    # The attention-mediation check ran on the debugging set: with the known trigger tokens patched the
    # backdoor falls to near the clean rate, and the gate judged exactly that gap as a named check.
    mediation = report["mediation"]
    assert mediation["fault_present"] and mediation["n_faulty"] == 200
    assert mediation["fault_rate_known_patched"] < mediation["fault_rate_unpatched"] - 0.5
    assert mediation["gap"] < 0.1  # most of the way to the clean rate (the value-borne victim: test_mediation_small)
    check = next(c for c in gate["checks"] if c["name"] == "attention_mediation")
    limit = scenario_params(params, SCENARIO)["gate"].get("max_mediation_gap") or MAX_GAP
    assert check["value"] == pytest.approx(mediation["gap"]) and check["limit"] == limit and check["passed"]


def test_second_repro_runs_nothing(ws):
    res = dvc(ws["path"], "repro", TARGET, label="(second, nothing to do)")
    assert ran(res) == []
    assert "Data and pipelines are up to date" in res.stdout


def test_metrics_show_is_one_readable_row_per_scenario_that_ran(ws):
    res = dvc(ws["path"], "metrics", "show")
    assert "failed to load" not in res.stdout + res.stderr  # other scenarios have not run here
    header, *rows = [line.split() for line in res.stdout.strip().splitlines()]
    assert [r[0] for r in rows] == [f"metrics/headline/{SCENARIO}.json"]
    assert {"CA_before", "CA_after", "ASR_before", "ASR_after", "ASR_floor", "flagged_clean"} <= set(header)
    assert len(header) <= 12, header  # the headline, not every breakdown and definition
    after = float(rows[0][header.index("ASR_after")])
    assert after == pytest.approx(read_json(ws["path"], "evaluate.json")["patched"]["two-pass"]["ASR"], abs=1e-4)


def test_plots_show_draws_the_roc_and_the_figures(ws, tmp_path):
    res = dvc(ws["path"], "plots", "show", "-o", str(tmp_path / "plots"))
    assert "failed to load" not in res.stdout + res.stderr
    page = (tmp_path / "plots" / "index.html").read_text()
    assert f"plots_{SCENARIO}_roc_csv" in page and '"fpr"' in page  # the ROC drawn from its CSV
    for png in ("before_after.png", "attention_maps.png"):
        assert (tmp_path / "plots" / "static" / f"workspace_plots_{SCENARIO}_{png}").is_file(), png


def test_experiment_runs_and_diffs_against_the_committed_baseline(ws):
    """`dvc exp run -S` in the small workspace (its own git), then params and metrics diffs against the
    run `atpatch run` committed; the workspace is put back afterwards."""
    from atpatch.ops.workspace import commit_workspace

    path = ws["path"]
    commit_workspace(path, "baseline")  # what `atpatch run --profile small` does after a run
    key = f"scenarios.{SCENARIO}.patch.benign_value"
    try:
        res = dvc(path, "exp", "run", "-S", f"{key}=zero", f"evaluate@{SCENARIO}", label="(experiment)")
        assert f"Running stage 'evaluate@{SCENARIO}'" in res.stdout
        exps = json.loads(dvc(path, "exp", "show", "--json").stdout)
        values = [e["data"]["params"]["params.yaml"]["data"]["scenarios"][SCENARIO]["patch"]["benign_value"]
                  for b in exps for e in [b, *[x for x in (b.get("experiments") or [])
                                                 for x in x.get("revs", [])]] if e.get("data")]
        assert "zero" in values and "unified" in values, values
        params = dvc(path, "params", "diff", "--json").stdout
        assert json.loads(params)["params.yaml"][key] == {"old": "unified", "new": "zero"}
        metrics = json.loads(dvc(path, "metrics", "diff", "--all", "--json").stdout)
        row = metrics[f"metrics/headline/{SCENARIO}.json"]
        assert {"CA_after", "ASR_after", "flagged_faulty"} <= set(row)
        new = json.loads((path / "metrics" / "headline" / f"{SCENARIO}.json").read_text())
        assert row["ASR_after"]["new"] == new["ASR_after"]
    finally:
        subprocess.run(["git", "checkout", "--", "."], cwd=path, check=True)
    assert ran(dvc(path, "repro", TARGET, label="(after the experiment)")) == []


def test_registered_champion(ws):
    path = ws["path"]
    reg = read_json(path, "register.json")
    assert reg["promoted"] is True and reg["version"] == "1"
    assert versions(path) == [1]
    assert alias(path, "champion") == 1 and alias(path, "challenger") == 1


def test_stage_runs_carry_params_seed_versions_and_commit(ws):
    runs = client(ws["path"]).search_runs(
        [e.experiment_id for e in client(ws["path"]).search_experiments()], filter_string="tags.stage = 'train_victim'")
    assert runs, "no MLflow run for stage train_victim"
    run = runs[0]
    assert run.data.params["epochs"] == "4" and run.data.params["seed"] == "0"
    assert run.data.tags["seed"] == "0" and run.data.tags["scenario"] == "vision-backdoor"
    assert run.data.tags["version.torch"].startswith("2.13.0") and run.data.tags["version.transformers"] == "5.24.0"
    assert len(run.data.tags["git_commit"]) == 40
    assert "train_acc" in run.data.metrics


# ---------------------------------------------------------------- (b) Prefect


def test_prefect_flow_forces_gate_and_register(ws, harness):
    import pipeline

    path = ws["path"]
    t0 = time.perf_counter()
    with pipeline.no_heartbeats():
        results = pipeline.atpatch_pipeline(workdir=str(path), stages=["register", "gate"], force=True)
    TIMINGS["flow gate+register forced"] = round(time.perf_counter() - t0, 1)
    assert [(r["stage"], r["ran"]) for r in results] == [(STAGES[-2], True), (STAGES[-1], True)]
    assert versions(path) == [1, 2] and alias(path, "champion") == 2

    t0 = time.perf_counter()
    with pipeline.no_heartbeats():
        results = pipeline.atpatch_pipeline(workdir=str(path), scenario=SCENARIO)
    TIMINGS["flow all stages, up to date"] = round(time.perf_counter() - t0, 1)
    assert [(r["stage"], r["ran"]) for r in results] == [(s, False) for s in STAGES]


def test_prefect_flow_reports_failing_stage(ws, harness, tmp_path):
    """A stage that fails: the flow raises naming the stage and DVC's last stderr lines."""
    import pipeline

    (tmp_path / "dvc.yaml").write_text("stages:\n  boom:\n    cmd: python -c \"raise SystemExit('kaputt 42')\"\n")
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text("[core]\n    no_scm = True\n    analytics = false\n")
    with pytest.raises(RuntimeError, match=r"(?s)stage 'boom' failed.*kaputt 42"):
        pipeline.run_dvc_stage("boom", tmp_path)  # the task body (the flow would retry it twice)


# ---------------------------------------------------------------- (c) gate failure


def test_forced_gate_failure_keeps_champion(ws):
    path = ws["path"]
    set_params(path, for_scenario({"gate": {"force_fail": True}}))
    res = dvc(path, "repro", TARGET, label="(gate.force_fail)")
    assert ran(res) == STAGES[-2:]  # only the stages that read the changed param or its output
    gate, reg = read_json(path, "gate.json"), read_json(path, "register.json")
    assert gate["passed"] is False and gate["reasons"] == ["forced"]
    assert reg["promoted"] is False and reg["version"] == "3"
    assert versions(path) == [1, 2, 3]
    assert alias(path, "challenger") == 3 and alias(path, "champion") == 2


def test_nightly_flow_skips_registration_on_failed_gate(ws, harness):
    import nightly

    path = ws["path"]
    t0 = time.perf_counter()
    result = nightly.run_nightly(str(path))
    TIMINGS["nightly flow (evaluate+gate forced)"] = round(time.perf_counter() - t0, 1)
    assert result["passed"] is False and result["registered"] is False
    assert result["stages"] == [f"evaluate@{SCENARIO}", f"gate@{SCENARIO}"]
    assert versions(path) == [1, 2, 3] and alias(path, "champion") == 2


def test_scheduled_deployment_runs_on_a_worker(ws, tmp_path):
    """docs/schedules.md's commands against a real Prefect server: the deployment (cron 03:00) is applied by
    flows/deploy.py, a run is queued, and a process worker started OUTSIDE the repository runs it: the code
    arrives by the deployment's pull step. The nightly flow rewrites gate.json (deleted first, so only the
    run can bring it back) and leaves the metrics-and-gate artifact on the server."""
    from atpatch.conventions import NIGHTLY_CRON, NIGHTLY_FLOW, WORK_POOL, artifact_key

    path = ws["path"]
    (path / METRICS / "gate.json").unlink()
    before = versions(path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    t0 = time.perf_counter()
    with prefect_server(tmp_path / "prefect", dict(os.environ)) as env:
        TIMINGS["prefect server start"] = round(time.perf_counter() - t0, 1)
        run_cli(env, REPO, "prefect", "work-pool", "create", WORK_POOL, "--type", "process")
        run_cli(env, REPO, "python", "flows/deploy.py", "--workdir", str(path))
        queued = run_cli(env, REPO, "prefect", "deployment", "run", f"{NIGHTLY_FLOW}/{SCENARIO}")
        run_id = re.search(r"UUID: ([0-9a-f-]{36})", queued).group(1)
        t1 = time.perf_counter()
        worker = run_cli(env, outside, "prefect", "worker", "start", "--pool", WORK_POOL, "--run-once", timeout=900)
        TIMINGS["worker --run-once (nightly: evaluate + gate forced)"] = round(time.perf_counter() - t1, 1)
        run = api_get(env, f"flow_runs/{run_id}")
        deployment = api_get(env, f"deployments/{run['deployment_id']}")
        artifacts = api_post(env, "artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}})
    TIMINGS["real server: start to teardown"] = round(time.perf_counter() - t0, 1)

    assert run["state"]["type"] == "COMPLETED", worker[-3000:]
    assert [s["schedule"]["cron"] for s in deployment["schedules"]] == [NIGHTLY_CRON]
    assert deployment["parameters"] == {"scenario": SCENARIO, "workdir": str(path)}
    assert deployment["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
    gate = read_json(path, "gate.json")  # written again, by the run
    assert versions(path) == (before + [max(before) + 1] if gate["passed"] else before)
    [artifact] = [a for a in artifacts if a["key"] == artifact_key(SCENARIO)]
    evaluate = read_json(path, "evaluate.json")
    assert f"| CA | {evaluate['unpatched']['CA']:.4f} | {evaluate['patched']['two-pass']['CA']:.4f} |" in artifact["data"]
    assert f"**gate: {'PASSED' if gate['passed'] else 'FAILED: ' + '; '.join(gate['reasons'])}**" in artifact["data"]


# ---------------------------------------------------------------- (d) invalid split


def test_registry_and_dvc_agree_after_a_params_round_trip(ws):
    """Change a param, repro, put it back, repro: gate and register run both times (their effect lives in
    the registry, which DVC's run cache cannot restore), so register.json, the aliases and dvc.lock agree."""
    path = ws["path"]
    from atpatch.ops.workspace import deep_merge, write_params

    original = yaml.safe_load((path / "params.yaml").read_text())
    value = scenario_params(original, SCENARIO)["gate"]["regression_tolerance"] / 2
    for params, label in ((deep_merge(original, for_scenario({"gate": {"regression_tolerance": value}})), value),
                          (original, "put back")):
        write_params(path, params)
        res = dvc(path, "repro", TARGET, label=f"(gate.regression_tolerance {label})")
        assert ran(res) == STAGES[-2:] and "cached - skipping" not in res.stdout, res.stdout[-1500:]
        reg = read_json(path, "register.json")
        assert alias(path, "challenger") == int(reg["version"]) == max(versions(path))
    assert ran(dvc(path, "repro", TARGET)) == []  # and DVC calls it up to date


def test_invalid_split_fails_generate_and_keeps_previous_data(ws):
    path = ws["path"]
    generated = path / "data" / SCENARIO / "generated"
    before = tree_hashes(generated)
    lock_before = (path / "dvc.lock").read_text()
    # A target label outside 0..9: the poisoned training rows get it, so the train split fails
    # its label expectation (Great Expectations) after everything was built, before the swap.
    set_params(path, for_scenario({"generate": {"target_label": 99}}))
    res = dvc(path, "repro", TARGET, check=False, label="(target_label 99)")
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert ran(res) == [f"generate@{SCENARIO}"]
    assert f"failed to reproduce 'generate@{SCENARIO}'" in out
    assert f"data/{SCENARIO}/generated/train: " in out and "expectation(s) failed" in out
    assert "expect_column_values_to_be_in_set(column='label')" in out
    assert tree_hashes(generated) == before
    assert sorted(p.name for p in generated.parent.iterdir() if p.name.startswith(".generated")) == []
    assert (path / "dvc.lock").read_text() == lock_before
