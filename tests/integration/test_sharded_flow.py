"""flows/sharded.py on a local Dask cluster of 2 one-thread workers, on a tiny vision workspace (real data,
the tiny patch as victim and detector): stages extract and evaluate sharded give the serial stages' outputs
bit for bit (but evaluate's timings), each worker loads each model once, a worker killed mid-shard changes
nothing, and dvc.lock records the outputs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _tiny_workspace import REPO, SCENARIO, install_patch, run_stage, tiny_workspace
from distributed.diagnostics.plugin import WorkerPlugin
from tiny_patch import tiny_patch

pytestmark = pytest.mark.usefixtures("one_thread")
STAGES = [f"extract@{SCENARIO}", f"evaluate@{SCENARIO}"]
OUTPUTS = [f"data/{SCENARIO}/features.safetensors", f"metrics/{SCENARIO}/evaluate.json",
           f"metrics/headline/{SCENARIO}.json", f"plots/{SCENARIO}"]
SHARD = 64  # 2 batches of 32: 300 clean test images make shards of 64, 64, 64, 64 and 44


@pytest.fixture(scope="module")
def sharded():
    sys.path.insert(0, str(REPO / "flows"))
    import sharded as module

    return module


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """The tiny workspace after serial extract and evaluate; their outputs copied to <root>/serial."""
    root = tmp_path_factory.mktemp("sharded-flow")
    ws = tiny_workspace(root / "ws", dvc=True)
    parts = tiny_patch(root / "tiny", steps=150)
    install_patch(ws, parts["victim"], parts["detector"])
    for stage in ("extract", "evaluate"):
        run_stage(ws, stage)
    for rel in OUTPUTS:
        copy = shutil.copytree if (ws / rel).is_dir() else shutil.copyfile
        (root / "serial" / rel).parent.mkdir(parents=True, exist_ok=True)
        copy(ws / rel, root / "serial" / rel)
    return ws


@pytest.fixture(scope="module", autouse=True)
def prefect_api():
    """The temporary Prefect server the flows start (flows/sharded.py one_prefect_api), stopped with the module
    rather than at exit, when pytest has closed the stream its last log line goes to."""
    yield
    from prefect.server.api.server import SubprocessASGIServer

    SubprocessASGIServer().stop()


@pytest.fixture(scope="module")
def cluster():
    """2 worker processes of one thread each, kept for the module (the flows reach it by its address)."""
    from distributed import LocalCluster

    os.environ.setdefault("TQDM_DISABLE", "1")  # before the workers start: they inherit the environment
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        yield c


def without_timings(report: dict) -> dict:
    """evaluate.json or a headline without what is measured in seconds (differs between any two runs)."""
    out = {k: v for k, v in report.items() if k not in ("latency", "latency_x")}
    if "patched" in out:
        out["patched"] = {m: {k: v for k, v in block.items() if not k.startswith("latency_")}
                          for m, block in out["patched"].items()}
    return out


def assert_outputs_equal_the_serial_run(ws: Path) -> None:
    serial = ws.parent / "serial"
    for rel in OUTPUTS:
        if rel.endswith(".json"):
            got, want = (json.loads((base / rel).read_text()) for base in (ws, serial))
            assert without_timings(got) == without_timings(want), rel
        else:
            files = sorted(p.relative_to(serial) for p in (serial / rel).rglob("*") if p.is_file()) \
                if (serial / rel).is_dir() else [Path(rel)]
            assert files and all((ws / f).read_bytes() == (serial / f).read_bytes() for f in files), rel


def dvc_status(ws: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "dvc", "status", "--json", *STAGES], cwd=ws, capture_output=True,
                          text=True, check=True)
    return json.loads(proc.stdout or "{}")


def assert_each_worker_loaded_each_model_once(summary: dict, min_workers: int = 2) -> None:
    workers = summary["workers"]
    assert len(workers) >= min_workers and all(w["shards"] for w in workers.values()), workers
    for w in workers.values():
        assert w["loads"] and set(w["loads"].values()) == {1}, workers
    assert sum(w["shards"] for w in workers.values()) == sum(p["shards"] for p in summary["passes"]) > len(workers)


def test_sharded_stages_give_the_serial_outputs_and_load_each_model_once_per_worker(sharded, workspace, cluster):
    assert dvc_status(workspace)  # nothing recorded for the two stages yet
    summary = sharded.run_sharded(str(workspace), ["extract", "evaluate"], SCENARIO,
                                  address=cluster.scheduler_address, shard_size=SHARD)
    assert [(s["stage"], s["committed"]) for s in summary["stages"]] == [("extract", True), ("evaluate", True)]
    assert summary["threads"] == 1
    test_passes = [p for p in summary["passes"] if p["rows"] == 300]  # the clean test set: 5 shards each
    assert test_passes and all(p["shards"] == 5 for p in test_passes)
    assert_outputs_equal_the_serial_run(workspace)
    assert_each_worker_loaded_each_model_once(summary)
    assert dvc_status(workspace) == {}  # dvc.lock now holds the outputs: `dvc repro` would skip both stages


class KillOnce(WorkerPlugin):
    """A Dask worker plugin: the first worker to start executing a task after it is registered dies on
    the spot (os._exit), once in the whole cluster (an exclusive marker file)."""

    def __init__(self, marker: str):
        self.marker = marker

    def transition(self, key, start, finish, **kwargs):
        if finish != "executing":
            return
        with contextlib.suppress(FileExistsError):
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            os._exit(1)


def test_a_worker_killed_mid_shard_changes_nothing(sharded, workspace, cluster, tmp_path):
    from distributed import Client

    marker = tmp_path / "killed"
    for rel in OUTPUTS[1:]:  # evaluate's outputs, so that the rerun must write them again
        path = workspace / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    with Client(cluster.scheduler_address) as client:
        client.register_plugin(KillOnce(str(marker)), name="kill-once")
        try:
            summary = sharded.run_sharded(str(workspace), ["evaluate"], SCENARIO, address=cluster.scheduler_address,
                                          shard_size=SHARD)
        finally:
            client.unregister_worker_plugin("kill-once")
    assert marker.exists()  # a worker died while executing a shard; Dask ran that shard again elsewhere
    assert_outputs_equal_the_serial_run(workspace)
    # The survivor, and the replacement if it started in time: each loaded each model once.
    assert_each_worker_loaded_each_model_once(summary, min_workers=1)
