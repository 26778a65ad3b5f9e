"""The flows' command lines answer a user error with one `error: ...` line and exit code 1, as the
`atpatch` command does (no traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(script: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "flows" / script), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("script", ["pipeline.py", "nightly.py", "sharded.py"])
def test_unknown_scenario_and_missing_workspace_are_one_line(script, tmp_path):
    for args, needle in ((["--workdir", str(REPO), "--scenario", "nope"], "unknown scenario 'nope'"),
                         (["--workdir", str(tmp_path / "none")], ".yaml: not found")):
        res = _run(script, *args, cwd=tmp_path)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
        assert lines[-1].startswith("error: ") and needle in lines[-1], lines


def test_deploy_checks_its_arguments_before_prefect(tmp_path):
    for args, needle in ((["--scenario", "nope"], "unknown scenario 'nope'"),
                         (["--profile", "huge"], "--profile huge: "),
                         (["--profile", "small", "--workdir", str(REPO)], "not both")):
        res = _run("deploy.py", *args, cwd=tmp_path)
        assert res.returncode == 1 and res.stderr.strip().splitlines()[-1].startswith("error: "), res.stderr[-2000:]
        assert needle in res.stderr


def test_deployments_name_their_scenario_and_ship_the_code_by_a_pull_step(monkeypatch, tmp_path):
    """One deployment per scenario, the scenario and profile as its parameters, and the repository as the
    code's source: the pull step sets the working directory, so a worker started anywhere finds flows/."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(REPO / "flows"))
    import deploy

    from atpatch.conventions import NIGHTLY_CRON, WORK_POOL

    built = deploy.build(["vision-backdoor", "text-fairness"], profile="small")
    assert [d.name for d in built] == ["vision-backdoor-small", "text-fairness-small"]
    assert [d.parameters for d in built] == [{"scenario": s, "profile": "small"} for s in ("vision-backdoor", "text-fairness")]
    for d in built:
        assert d.entrypoint == "flows/nightly.py:nightly_reevaluate" and d.work_pool_name == WORK_POOL
        assert d.storage.to_pull_step() == {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}
        assert [s.schedule.cron for s in d.schedules] == [NIGHTLY_CRON]
    [repo] = deploy.build(["vision-backdoor"])
    assert repo.name == "vision-backdoor" and repo.parameters == {"scenario": "vision-backdoor", "profile": "default"}


@pytest.mark.parametrize("args, needle", [
    (["--stages", "train_victim"], "--stages: expected some of ['extract', 'evaluate'], got ['train_victim']"),
    (["--shard-size", "1000"], "--shard-size, stage evaluate (batch_size 256): shard size: expected a positive "
                               "multiple of the batch size 256"),
    (["--workers", "2", "--address", "tcp://127.0.0.1:1"], "not both"),
])
def test_sharded_checks_its_arguments_before_prefect(args, needle, tmp_path):
    res = _run("sharded.py", "--workdir", str(REPO), *args, cwd=tmp_path)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert lines[-1].startswith("error: ") and needle in lines[-1], lines


def test_sharded_warns_when_local_workers_would_share_cores(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "flows"))
    import sharded

    monkeypatch.setattr(sharded.os, "cpu_count", lambda: 2)
    assert "2 local workers x 2 torch threads" in sharded.warn_oversubscribed(None, 2, threads=2)
    assert sharded.warn_oversubscribed(None, 2, threads=1) is None
    assert sharded.warn_oversubscribed("tcp://127.0.0.1:8786", None, threads=8) is None  # another machine's cores
