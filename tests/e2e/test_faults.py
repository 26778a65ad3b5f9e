"""Faults: a stage killed at the worst moment, a Prefect task that fails, pickle files.

(1) `dvc repro train_victim@vision-backdoor` SIGKILLed (whole process group) after the new victim
    is fully written into atomic_dir's temp dir and before the swap: the old victim stays
    byte-identical, dvc.lock keeps the old state, and the next `dvc repro` completes. A small
    import hook (sitecustomize on PYTHONPATH, only for the killed run) holds the stage at that
    point, so the kill lands there every time.
(2) The Prefect pipeline flow retries a stage that fails once (2 attempts, 5 s apart, the flow
    succeeds) and gives up on one that always fails (3 attempts, the error names the stage).
(3) Pickle weights are refused: a model directory with only pytorch_model.bin, a pickle next to
    safetensors weights (never unpickled), a detector whose weights are a torch pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from _recipes import cheap_vision
from _workspace_env import env_for

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DVC = REPO / ".venv" / "bin" / "dvc"
SCENARIO = "vision-backdoor"
STAGE = f"train_victim@{SCENARIO}"
MARKER = "ATPATCH-FAULT outputs written, swap pending"
# Smaller than the small profile: generate + train_victim in well under a minute on 2 cores.
TINY = cheap_vision(SCENARIO, {
    "generate": {"train_limit": 1500, "test_limit": 300, "debug": {"n_triggered": 50, "n_clean": 50, "n_calib": 100}},
    "train_victim": {"epochs": 1}})

# Holds train_victim inside atomic_dir after the body wrote the model, before the swap (Python runs
# sitecustomize at start-up; the hook wraps atpatch.io.atomic_dir when the stage imports it).
HOOK = f'''
import contextlib, importlib.machinery, sys, time

def _wrap(module):
    real = module.atomic_dir

    @contextlib.contextmanager
    def paused(final):
        with real(final) as tmp:
            yield tmp
            print("{MARKER}", tmp, flush=True)
            time.sleep(600)

    module.atomic_dir = paused

class _Hook:
    def find_spec(self, name, path, target=None):
        if name != "atpatch.io":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            _wrap(module)
        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, _Hook())
'''




def dvc(ws: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([str(DVC), *args], cwd=ws, env=os.environ.copy(), capture_output=True, text=True,
                         timeout=600)
    if check and res.returncode != 0:
        pytest.fail(f"dvc {' '.join(args)} failed (exit {res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}")
    return res


def tree_hashes(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def lock_entry(ws: Path, stage: str) -> dict:
    return yaml.safe_load((ws / "dvc.lock").read_text())["stages"][stage]


def set_epochs(ws: Path, epochs: int) -> None:
    from atpatch.ops.workspace import deep_merge, write_params

    params = yaml.safe_load((ws / "params.yaml").read_text())
    write_params(ws, deep_merge(params, {"scenarios": {SCENARIO: {"train_victim": {"epochs": epochs}}}}))


# ---------------------------------------------------------------- (1) SIGKILL mid-stage


def test_sigkill_mid_stage_keeps_last_good_output(tmp_path, monkeypatch):
    from atpatch.scenarios.data.fetch import fetch_fashion_mnist
    from atpatch.ops.workspace import make_workspace

    fetch_fashion_mnist(REPO / "data" / "raw" / "fashion-mnist")  # the shared raw cache
    ws = tmp_path / "ws"
    for key, value in env_for(ws).items():
        monkeypatch.setenv(key, value)
    make_workspace(ws, "small", TINY)
    t0 = time.perf_counter()
    dvc(ws, "repro", STAGE)  # generate + train_victim, 1 epoch
    timings = {"first repro": time.perf_counter() - t0}
    victim = ws / "data" / SCENARIO / "victim"
    before, lock_before = tree_hashes(victim), (ws / "dvc.lock").read_text()
    assert "model.safetensors" in before

    set_epochs(ws, 2)  # train_victim is stale now
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))}
    t1 = time.perf_counter()
    proc = subprocess.Popen([str(DVC), "repro", STAGE], cwd=ws, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    try:
        while not any(MARKER in line for line in lines):
            assert proc.poll() is None, f"stage ended before the kill (exit {proc.returncode}):\n{''.join(lines)}"
            assert time.monotonic() < deadline, f"no {MARKER!r} within 300 s:\n{''.join(lines)}"
            time.sleep(0.2)
        timings["until the kill"] = time.perf_counter() - t1
        os.killpg(proc.pid, signal.SIGKILL)  # dvc, its shell and the stage's python
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        # Reap it: a zombie's pid still "exists" for DVC's stale-lock check (psutil.pid_exists).
        proc.wait(timeout=30)
        reader.join(timeout=10)
    out = "".join(lines)
    assert proc.returncode == -signal.SIGKILL
    assert "epoch 2:" in out  # it trained the new victim and wrote it...
    tmp_dir = ws / next(line for line in lines if MARKER in line).split()[-1]  # relative to the stage's cwd

    # ...but the old one stays, byte for byte; the new files sit only in atomic_dir's temp dir,
    # which SIGKILL leaves behind (no cleanup code runs). DVC tracks victim/, not its siblings.
    assert tree_hashes(victim) == before
    leftovers = sorted(p.name for p in victim.parent.iterdir() if p.name.startswith(".victim."))
    assert leftovers == [tmp_dir.name] and tmp_dir.name.startswith(".victim.tmp-")
    assert "model.safetensors" in tree_hashes(tmp_dir) and tree_hashes(tmp_dir) != before
    assert (ws / "dvc.lock").read_text() == lock_before
    # DVC left the killed process's write lock on the output in .dvc/tmp/rwlock (no cleanup ran).
    rwlock = json.loads((ws / ".dvc" / "tmp" / "rwlock").read_text())
    assert [info["pid"] for info in rwlock.get("write", {}).values()] == [proc.pid]
    status = dvc(ws, "status", STAGE, "--json")
    assert STAGE in json.loads(status.stdout)  # still stale (params changed), not "fixed" by the crash

    # The next repro runs (DVC drops the dead pid from rwlock with a warning) and swaps a new victim in.
    t1 = time.perf_counter()
    res = dvc(ws, "repro", STAGE)
    timings["repro after the kill"] = time.perf_counter() - t1
    assert f"Running stage '{STAGE}'" in res.stdout
    assert "had been killed. Auto removed it from the lock file" in res.stdout + res.stderr
    after = tree_hashes(victim)
    assert set(after) == set(before) and after != before
    assert lock_entry(ws, STAGE)["params"]["params.yaml"][f"scenarios.{SCENARIO}.train_victim"]["epochs"] == 2
    assert lock_entry(ws, STAGE) != yaml.safe_load(lock_before)["stages"][STAGE]
    assert json.loads(dvc(ws, "status", STAGE, "--json").stdout) == {}
    # rwlock still holds the dead run's read locks on train_victim's source deps: DVC drops a dead
    # pid's entry only where a new run wants to write (here victim/, and generated/ when the
    # repro checked generate). Harmless: no stage writes those paths, and a writer would drop them.
    stale = json.loads((ws / ".dvc" / "tmp" / "rwlock").read_text())
    assert not stale.get("write")
    assert {info["pid"] for infos in stale.get("read", {}).values() for info in infos} <= {proc.pid}
    assert not [p for p in stale.get("read", {}) if Path(p).is_relative_to(ws / "data")]
    print("\nSIGKILL test timings (s):", {k: round(v, 1) for k, v in timings.items()})
    # The dead run's temp dir is gone: atomic_dir removes temp dirs whose writer pid is dead.
    assert not tmp_dir.exists()
    assert not [p.name for p in victim.parent.iterdir() if p.name.startswith(".victim.tmp-")]


# ---------------------------------------------------------------- (2) Prefect retries


FLAKY = """import sys, time
from pathlib import Path

counter, fail_until = Path(sys.argv[1]), int(sys.argv[2])
with counter.open("a") as fh:
    fh.write(f"{time.time()}\\n")
attempt = len(counter.read_text().splitlines())
if attempt <= fail_until:
    raise SystemExit(f"transient failure, attempt {attempt}")
Path("out.txt").write_text(f"ok after {attempt} attempts\\n")
"""


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    """A Prefect test server with its own home, and flows/ importable."""
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env_for(home).items():
            mp.setenv(key, value)
        sys.path.insert(0, str(REPO / "flows"))
        with prefect_test_harness(server_startup_timeout=90):
            yield
        sys.path.remove(str(REPO / "flows"))


def tiny_project(path: Path, fail_until: int) -> Path:
    """A DVC project whose one stage `flaky@s` fails on its first `fail_until` runs; the attempts are
    counted (one timestamp a line) in a file outside the project."""
    proj = path / "proj"
    (proj / ".dvc").mkdir(parents=True)
    (proj / ".dvc" / "config").write_text("[core]\n    no_scm = True\n    analytics = false\n")
    (proj / "flaky.py").write_text(FLAKY)
    (proj / "params.yaml").write_text("scenario: s\nscenarios:\n  s:\n    source: none\n")
    (proj / "dvc.yaml").write_text(
        "stages:\n  flaky:\n    foreach: ${scenarios}\n    do:\n"
        f"      cmd: python flaky.py {path / 'attempts'} {fail_until}\n"
        "      deps: [flaky.py]\n      outs: [out.txt]\n")
    return proj


def attempts(path: Path) -> list[float]:
    return [float(t) for t in (path / "attempts").read_text().split()]


def run_pipeline(proj: Path):
    """The flow's final state and what the Prefect server recorded of its task runs: the task
    run ids and their log messages (the test harness runs no task-run recorder, so the server has
    no task run rows; the task engine's retry decisions are in the run's logs)."""
    import asyncio

    import pipeline
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with pipeline.no_heartbeats():
        state = pipeline.atpatch_pipeline(workdir=str(proj), return_state=True)

    async def read(flow_run_id):
        async with get_client() as client:
            return await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))

    deadline = time.monotonic() + 30
    while True:  # the log worker ships in batches: wait for the flow run's last line
        logs = asyncio.run(read(state.state_details.flow_run_id))
        if any(log.task_run_id is None and "Finished in state" in log.message for log in logs):
            break
        assert time.monotonic() < deadline, [log.message for log in logs]
        time.sleep(0.5)
    task_logs = [log for log in logs if log.task_run_id is not None]
    return state, {log.task_run_id for log in task_logs}, [log.message for log in task_logs]


def retry_lines(messages: list[str]) -> list[str]:
    """The task engine's verdict after each failed attempt (first line; the last one carries a traceback)."""
    return [m.splitlines()[0].rsplit(" - ", 1)[-1] for m in messages if m.startswith("Task run failed with exception")]


def test_transient_stage_failure_is_retried(harness, tmp_path):
    proj = tiny_project(tmp_path, fail_until=1)
    state, task_runs, messages = run_pipeline(proj)
    assert state.is_completed(), state.message
    assert [(r["stage"], r["ran"]) for r in state.result()] == [("flaky@s", True)]
    times = attempts(tmp_path)
    assert len(times) == 2 and times[1] - times[0] >= 5.0  # retries=2, retry_delay_seconds=5
    assert (proj / "out.txt").read_text() == "ok after 2 attempts\n"
    assert "flaky@s" in yaml.safe_load((proj / "dvc.lock").read_text())["stages"]
    # Prefect's record: one task run, failed once, retried in place, then completed.
    assert len(task_runs) == 1
    assert retry_lines(messages) == ["Retry 1/2 will start 5 second(s) from now"]
    failure = next(m for m in messages if m.startswith("Task run failed"))
    assert "stage 'flaky@s' failed" in failure and "transient failure, attempt 1" in failure
    assert messages[-1] == "Finished in state Completed()"


def test_permanent_stage_failure_fails_the_flow_after_three_attempts(harness, tmp_path):
    proj = tiny_project(tmp_path, fail_until=99)
    state, task_runs, messages = run_pipeline(proj)
    assert state.is_failed()
    with pytest.raises(RuntimeError, match=r"(?s)stage 'flaky@s' failed \(dvc repro exit \d+.*attempt 3"):
        state.result()
    assert len(attempts(tmp_path)) == 3  # the first run + retries=2
    assert len(task_runs) == 1
    assert retry_lines(messages) == ["Retry 1/2 will start 5 second(s) from now",
                                     "Retry 2/2 will start 5 second(s) from now", "Retries are exhausted"]
    assert not (proj / "out.txt").exists() and not (proj / "dvc.lock").exists()


# ---------------------------------------------------------------- (3) no pickle


class Trap:
    """Unpickling this creates `path` (what a malicious weights file would do, harmlessly)."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def tiny_vit_dir(path: Path, safetensors: bool) -> Path:
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=8, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=8, num_labels=3)
    model = ViTForImageClassification(config)
    if safetensors:
        model.save_pretrained(path, safe_serialization=True)
    else:
        config.save_pretrained(path)
    return path


def test_model_dir_with_only_pickle_weights_is_refused(tmp_path):
    import torch

    from atpatch import AtPatchError
    from atpatch.scenarios.models.loading import load_classifier

    model_dir = tiny_vit_dir(tmp_path / "model", safetensors=False)
    torch.save({"trap": Trap(tmp_path / "pwned")}, model_dir / "pytorch_model.bin")
    with pytest.raises(AtPatchError, match=r"no \.safetensors weights \(found \['pytorch_model.bin'\]\); AtPatch "
                                           r"refuses pickle-based weights"):
        load_classifier(model_dir)
    assert not (tmp_path / "pwned").exists()


def test_pickle_next_to_safetensors_is_never_unpickled(tmp_path, monkeypatch):
    import pickle

    import torch

    from atpatch.scenarios.models.loading import load_classifier

    model_dir = tiny_vit_dir(tmp_path / "model", safetensors=True)
    torch.save({"trap": Trap(tmp_path / "pwned")}, model_dir / "pytorch_model.bin")

    def refuse(*args, **kwargs):
        raise AssertionError("something unpickled")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    model = load_classifier(model_dir)
    assert model.config.model_type == "vit"
    assert not (tmp_path / "pwned").exists()


def test_detector_with_pickle_weights_is_refused(tmp_path):
    import torch

    from atpatch import Detector, DetectorConfig, DetectorFileError

    det = Detector(DetectorConfig(layers=[0], heads=2, kinds=["mean"], model_type="vit"))
    det.save(tmp_path)
    weights = tmp_path / "detector.safetensors"
    torch.save({**det.state_dict(), "trap": Trap(tmp_path / "pwned")}, weights)  # a pickle under the expected name
    with pytest.raises(DetectorFileError, match="detector.safetensors: not a readable safetensors file"):
        Detector.load(tmp_path)
    weights.rename(tmp_path / "detector.pt")  # a pickle under its usual name is not looked at
    with pytest.raises(DetectorFileError, match="detector.safetensors: file not found"):
        Detector.load(tmp_path)
    assert not (tmp_path / "pwned").exists()
