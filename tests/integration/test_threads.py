"""The same victim whatever the machine's thread count: stage train_victim pins torch's threads to params.yaml's
`threads`. Three runs of the stage, each in its own process, on a tiny workspace (real data, the cheap
one-layer victim): torch's default set to 1 and to 2 threads (OMP_NUM_THREADS, as on a 1- and a 2-core
machine) with `threads: 2` give the same weights; `threads: 1` gives other weights, so the count matters
and the pin is what makes the first two agree."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _tiny_workspace import REPO, SCENARIO, tiny_workspace

from atpatch.conventions import PARAMS_FILE, environment, out_path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return tiny_workspace(tmp_path_factory.mktemp("threads") / "ws")


def train(ws: Path, machine_threads: int, threads: int) -> str:
    """Stage train_victim in a process whose torch default is `machine_threads`, with params.yaml's
    `threads`; the sha256 of the victim's weights."""
    params = yaml.safe_load((ws / PARAMS_FILE).read_text())
    (ws / PARAMS_FILE).write_text(yaml.safe_dump({**params, "threads": threads}, sort_keys=False))
    env = {**environment(ws), "OMP_NUM_THREADS": str(machine_threads), "MKL_NUM_THREADS": str(machine_threads),
           "TQDM_DISABLE": "1"}
    subprocess.run([sys.executable, str(REPO / "stages" / "train_victim.py"), "--scenario", SCENARIO], cwd=ws, env=env,
                   check=True, capture_output=True, timeout=300)
    return hashlib.sha256((ws / out_path("train_victim", SCENARIO) / "model.safetensors").read_bytes()).hexdigest()


def test_a_pinned_thread_count_trains_the_same_victim_on_any_machine(workspace):
    one_core = train(workspace, machine_threads=1, threads=2)
    two_cores = train(workspace, machine_threads=2, threads=2)
    assert one_core == two_cores
    assert train(workspace, machine_threads=2, threads=1) != one_core  # the control: the count changes the victim
