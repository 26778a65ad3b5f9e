"""A profile workspace has its own git history, so DVC's experiment commands work where users run small.

Without it (`dvc init --no-scm`) `dvc params diff`, `dvc metrics diff` and `dvc exp` fail with "Only
supported for Git repositories". `dvc exp run` itself is run on a real small pipeline in
tests/e2e/test_pipeline_small.py.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from atpatch.ops.workspace import REPO, commit_workspace, make_workspace


def git(ws, *args) -> str:
    return subprocess.run(["git", *args], cwd=ws, capture_output=True, text=True, check=True).stdout


def dvc(ws, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=ws, capture_output=True, text=True)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("ws"), "small")


def test_workspace_is_committed_with_its_params_and_pipeline(ws):
    tracked = git(ws, "ls-files").split()
    assert {"params.yaml", "dvc.yaml", "src", ".dvc/config", "dvc.lock"} <= set(tracked)
    assert not [f for f in tracked if f.startswith("data/") and not f.endswith(".gitignore")], \
        "DVC-tracked data must stay out of git"
    assert git(ws, "status", "--porcelain") == ""
    assert git(ws, "rev-parse", "--show-toplevel").strip() == str(ws), "its own repository, not the project's"


def test_params_diff_shows_an_edit_against_the_baseline(ws):
    params = yaml.safe_load((ws / "params.yaml").read_text())
    before = params["scenarios"]["vision-backdoor"]["gate"]["max_ca_drop"]
    params["scenarios"]["vision-backdoor"]["gate"]["max_ca_drop"] = before + 0.01
    original = (ws / "params.yaml").read_text()
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        res = dvc(ws, "params", "diff")
        assert res.returncode == 0, res.stderr
        line = next(l for l in res.stdout.splitlines() if "vision-backdoor.gate.max_ca_drop" in l)
        assert str(before) in line and str(round(before + 0.01, 6)) in line
    finally:
        (ws / "params.yaml").write_text(original)


def test_commit_records_changes_once(ws):
    (ws / "notes.txt").write_text("x")
    try:
        assert commit_workspace(ws, "a note") is True
        assert commit_workspace(ws, "again") is False
        assert git(ws, "log", "-1", "--format=%s").strip() == "a note"
    finally:
        (ws / "notes.txt").unlink()
        commit_workspace(ws, "drop the note")


def test_a_workspace_without_git_becomes_git_backed(tmp_path):
    ws = make_workspace(tmp_path / "old", "small")
    subprocess.run(["rm", "-rf", str(ws / ".git")], check=True)
    (ws / ".dvc" / "config").write_text("[core]\n    no_scm = True\n")
    assert dvc(ws, "params", "diff").returncode != 0  # what users met before: not a git repository
    make_workspace(ws, "small", repo=REPO)
    assert dvc(ws, "params", "diff").returncode == 0
    assert "params.yaml" in git(ws, "ls-files").split()


def test_python_bytecode_does_not_make_a_stage_stale(ws):
    """Importing a touched source rewrites its bytecode in __pycache__; with the bytecode hashed, every stage
    whose dependencies hold Python went stale and `dvc repro` reran the whole pipeline for nothing."""
    stage = next(iter(yaml.safe_load((ws / "dvc.lock").read_text())["stages"]))
    assert "up to date" in dvc(ws, "status", stage).stdout
    probe = ws / "src" / "atpatch" / "core" / "__pycache__" / "dvcignore_probe.cpython-311.pyc"
    probe.parent.mkdir(exist_ok=True)
    probe.write_bytes(b"bytecode written after the stage ran")
    try:
        res = dvc(ws, "status", stage)
    finally:
        probe.unlink()
    assert res.returncode == 0 and "up to date" in res.stdout, res.stdout
