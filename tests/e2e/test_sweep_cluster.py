"""A sweep on a real Dask cluster on loopback, started as docs/cluster.md starts one: `dask scheduler`, two
`dask worker tcp://...:N --nthreads 1`, a Prefect server, then `atpatch sweep --address`.

The cells are two seeds of a cheap tabular-fairness recipe (_recipes.CHEAP_TABULAR over the small
profile, a profile file of its own). One serial run (`benchmarks/scenarios.py`, no Dask) is the
reference of both tests: every number a cell reports is seeded, so the sweep's must equal it exactly,
timings aside. The two cells start on the two workers at once; then one worker is killed (its whole
process group) in the middle of a stage, Dask hands its cell to the other worker, and both cells land
in the results file, RESULTS.md and MLflow as the serial run's do. One sweep shows both: a second
would cost two more cells of CI time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from _prefect_server import api_post, prefect_server, stop
from _recipes import CHEAP_TABULAR
from _workspace_env import env_for
from dask_cluster import dask_cluster

from atpatch.conventions import SWEEP_FLOW
from atpatch.io import deep_merge
from atpatch.ops.sweep import CELL_THREADS, seeded_part

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]

REPO = Path(__file__).resolve().parents[2]
SCENARIO = "tabular-fairness"
GRID = ["--scenarios", SCENARIO, "--variants", "sex", "--profile"]  # + the profile file
TIMING = re.compile(r"latency|seconds")  # MLflow metrics that are measured times, not seeded numbers


def results(out: Path) -> dict:
    """The cells of a run's results file, by seed."""
    rows = json.loads((out / "results" / f"{SCENARIO}.json").read_text())["results"]
    return {r["seed"]: r for r in rows}


def mlflow_metrics(env: dict) -> dict:
    from mlflow import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    [run] = client.search_runs([client.get_experiment_by_name("atpatch").experiment_id])
    return {k: v for k, v in run.data.metrics.items() if not TIMING.search(k)}


def run(env: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args} exit {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    """The cheap profile file and the environment of every command (a Prefect server of its own)."""
    tmp = tmp_path_factory.mktemp("sweep")
    profile = tmp / "cheap.yaml"
    small = yaml.safe_load((REPO / "profiles" / "small.yaml").read_text())
    profile.write_text(yaml.safe_dump(deep_merge(small, {"scenarios": {SCENARIO: CHEAP_TABULAR}})))
    with prefect_server(tmp / "prefect", env_for(tmp / "state")) as env:
        yield {"tmp": tmp, "profile": str(profile), "env": env}


@pytest.fixture(scope="module")
def serial(setting):
    """The serial benchmark of both cells: its results by seed and its MLflow metrics."""
    out, env = setting["tmp"] / "serial", {**setting["env"]}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{setting['tmp'] / 'serial.db'}"
    t0 = time.perf_counter()
    run(env, "benchmarks/scenarios.py", *GRID, setting["profile"], "--seeds", "0", "1", "--workdir", str(out),
        "--out", str(out), "--threads", str(CELL_THREADS))  # the sweep's count: the same seed, the same numbers
    print(f"\nserial run of 2 cells: {time.perf_counter() - t0:.0f} s")
    return {"rows": results(out), "mlflow": mlflow_metrics(env)}


@pytest.fixture(scope="module")
def cluster(setting):
    """`dask scheduler` and two `dask worker --nthreads 1` on loopback, as docs/cluster.md starts them:
    without PREFECT_API_URL (the flow's settings travel with each task)."""
    env = {k: v for k, v in setting["env"].items() if k != "PREFECT_API_URL"}
    with dask_cluster(env, setting["tmp"], setting["tmp"] / "dask") as cluster:
        yield cluster


def sweep_command(setting, out: Path, seeds: str, address: str) -> list[str]:
    return ["-m", "atpatch.cli", "sweep", "--root", str(REPO), *GRID, setting["profile"], "--seeds", seeds,
            "--address", address, "--workdir", str(out), "--out", str(out)]


def running_a_stage(proc: subprocess.Popen) -> bool:
    import psutil

    try:
        return any("stages/" in " ".join(p.cmdline()) for p in psutil.Process(proc.pid).children(recursive=True))
    except psutil.Error:  # a process ended while being read
        return False


def busy_workers(cluster: dict) -> set[str]:
    return {addr for addr, proc in cluster["workers"].items() if running_a_stage(proc)}


def test_a_sweep_on_two_workers_equals_the_serial_run_also_when_a_worker_is_killed(setting, serial, cluster):
    """Both cells start at once, one on each worker; then one worker is killed (its whole process group)
    in the middle of a stage. Its cell reruns on the other worker, and every number equals the serial run's."""
    out, env = setting["tmp"] / "parallel", {**setting["env"]}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{setting['tmp'] / 'parallel.db'}"
    t0 = time.perf_counter()
    sweep = subprocess.Popen([sys.executable, *sweep_command(setting, out, "0,1", cluster["address"])], cwd=REPO,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    try:
        deadline, busy = time.monotonic() + 300, set()
        while len(busy) < 2 and sweep.poll() is None and time.monotonic() < deadline:
            busy = busy_workers(cluster)
            time.sleep(0.5)
        assert busy == set(cluster["workers"]), f"the two cells did not run at once: busy {busy}"
        victim = sorted(busy)[0]
        os.killpg(cluster["workers"][victim].pid, signal.SIGKILL)  # the worker, its nanny and the stage
        output, _ = sweep.communicate(timeout=600)
    finally:
        stop(sweep)
    print(f"\nsweep of 2 cells on 2 workers, one killed: {time.perf_counter() - t0:.0f} s")
    assert sweep.returncode == 0, output[-3000:]

    rows = results(out)
    assert sorted(rows) == [0, 1]
    for seed, row in rows.items():
        assert seeded_part(row) == seeded_part(serial["rows"][seed]), seed
        assert row["threads"] == CELL_THREADS and row["command"].startswith("flows/sweep.py ")
    survivor = set(cluster["workers"]) - {victim}
    assert {r["ran_on"]["worker"] for r in rows.values()} == survivor  # the killed worker's cell moved there
    assert mlflow_metrics(env) == serial["mlflow"]
    assert "| sex-seed1 | unpatched |" in (out / "RESULTS.md").read_text()
    # The flow ran against the Prefect server, and the workers' tasks reported there too: started without
    # PREFECT_API_URL, a worker that did not get the flow's would have started a temporary server of its own.
    [flow_run] = api_post(env, "flow_runs/filter", {"flows": {"name": {"any_": [SWEEP_FLOW]}}})
    assert flow_run["state_type"] == "COMPLETED"
    assert not any("temporary server" in log.read_text() for log in cluster["logs"].glob("worker*.log"))
