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


@pytest.mark.parametrize("script", ["pipeline.py", "nightly.py"])
def test_unknown_scenario_and_missing_workspace_are_one_line(script, tmp_path):
    for args, needle in ((["--workdir", str(REPO), "--scenario", "nope"], "unknown scenario 'nope'"),
                         (["--workdir", str(tmp_path / "none")], ".yaml: not found")):
        res = _run(script, *args, cwd=tmp_path)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
        assert lines[-1].startswith("error: ") and needle in lines[-1], lines
