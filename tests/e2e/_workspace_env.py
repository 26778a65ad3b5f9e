"""The environment a pipeline workspace runs in, shared by the e2e tests."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def env_for(ws: Path) -> dict[str, str]:
    """scripts/env.sh's values for workspace `ws` (state inside it), plus the repo's venv on PATH."""
    preset = {"ATPATCH_ROOT": str(ws), "DVC_SITE_CACHE_DIR": str(ws / ".dvc" / "site_cache"),
              "PREFECT_HOME": str(ws / ".prefect"), "MLFLOW_TRACKING_URI": f"sqlite:///{ws / 'mlflow.db'}",
              "HF_HOME": str(REPO / ".cache" / "hf"), "TQDM_DISABLE": "1"}
    out = subprocess.run(["bash", "-c", ". scripts/env.sh && env -0"], cwd=REPO, env={**os.environ, **preset},
                         capture_output=True, text=True, check=True).stdout
    env = dict(item.split("=", 1) for item in out.split("\0") if "=" in item)
    env["PATH"] = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env['PATH']}"
    return env
