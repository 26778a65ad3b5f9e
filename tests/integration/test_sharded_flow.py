"""flows/sharded.py as a user runs it (`python flows/sharded.py --address ...`) on a real Dask cluster on
loopback (`dask scheduler`, two `dask worker --nthreads 1`), on a tiny vision workspace (real data, the tiny
patch as victim and detector): stages extract and evaluate sharded give the serial stages' outputs bit for
bit (but evaluate's timings), each worker loads each model once, a worker killed mid-shard changes nothing,
and dvc.lock records the outputs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cloudpickle
import pytest
from _tiny_workspace import REPO, SCENARIO, install_patch, run_stage, tiny_workspace
from dask_cluster import dask_cluster
from distributed.diagnostics.plugin import WorkerPlugin
from tiny_patch import tiny_patch

from atpatch.conventions import environment

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.cluster]
STAGES = [f"extract@{SCENARIO}", f"evaluate@{SCENARIO}"]
OUTPUTS = [f"data/{SCENARIO}/features.safetensors", f"metrics/{SCENARIO}/evaluate.json",
           f"metrics/headline/{SCENARIO}.json", f"plots/{SCENARIO}"]
SHARD = 64  # 2 batches of 32: 300 clean test images make shards of 64, 64, 64, 64 and 44


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


@pytest.fixture(scope="module")
def cluster(workspace):
    """A scheduler and 2 one-thread workers, kept for the module. The workers know nothing of the tests or
    of flows/: what a shard runs reaches them as the flow sends it."""
    env = {**environment(workspace), "TQDM_DISABLE": "1"}
    with dask_cluster(env, workspace.parent, workspace.parent / "dask") as c:
        yield c


def run_flow(ws: Path, address: str, *stages: str) -> list[str]:
    """`python flows/sharded.py` in the workspace; its per-worker lines ("worker ADDR: N shards, S s, loads {...}")."""
    env = {**environment(ws), "TQDM_DISABLE": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "flows" / "sharded.py"), "--stages", *stages, "--address", address,
                           "--shard-size", str(SHARD)], cwd=ws, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [line for line in proc.stdout.splitlines() if line.startswith("worker ")]


def worker_loads(lines: list[str]) -> dict[str, tuple[int, dict]]:
    """{worker: (shards, {model: loads})} from the flow's per-worker lines."""
    import ast

    out = {}
    for line in lines:
        name, rest = line[len("worker "):].split(": ", 1)
        out[name] = (int(rest.split(" shards")[0]), ast.literal_eval(rest.split("loads ", 1)[1]))
    return out


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


def assert_each_worker_loaded_each_model_once(lines: list[str], min_workers: int = 2) -> None:
    workers = worker_loads(lines)
    assert len(workers) >= min_workers and all(shards for shards, _ in workers.values()), lines
    for _, loads in workers.values():
        assert loads and set(loads.values()) == {1}, lines


def test_sharded_stages_give_the_serial_outputs_and_load_each_model_once_per_worker(workspace, cluster):
    assert dvc_status(workspace)  # nothing recorded for the two stages yet
    lines = run_flow(workspace, cluster["address"], "extract", "evaluate")
    assert_outputs_equal_the_serial_run(workspace)
    assert_each_worker_loaded_each_model_once(lines)
    assert sum(shards for shards, _ in worker_loads(lines).values()) > 2 * 5  # extract's and evaluate's passes
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


# The workers cannot import this module: the plugin travels by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def test_a_worker_killed_mid_shard_changes_nothing(workspace, cluster, tmp_path):
    from distributed import Client

    marker = tmp_path / "killed"
    for rel in OUTPUTS[1:]:  # evaluate's outputs, so that the rerun must write them again
        path = workspace / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    with Client(cluster["address"]) as client:
        client.register_plugin(KillOnce(str(marker)), name="kill-once")
        try:
            lines = run_flow(workspace, cluster["address"], "evaluate")
        finally:
            client.unregister_worker_plugin("kill-once")
    assert marker.exists()  # a worker died while executing a shard; Dask ran that shard again elsewhere
    assert_outputs_equal_the_serial_run(workspace)
    # The survivor, and the replacement the nanny started if it came in time: each loaded each model once.
    assert_each_worker_loaded_each_model_once(lines, min_workers=1)
