"""Nightly re-evaluation: rerun evaluate and the regression gate; register/promote on a pass.

Forces stages `evaluate` and `gate` (through DVC, as flows/pipeline.py does), then reads the
gate's decision (gate.json): when the gate passed, forces stage `register`, which registers a new
version and moves the `champion` alias to it. When it failed, registration is skipped (unless
`register_when_failed`, which registers the version as `challenger` only) and the reasons are
logged as a warning; the flow still completes, with `passed: False` in its result.

    python flows/nightly.py [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # flows/ is not a package

from prefect import flow, get_run_logger  # noqa: E402

from pipeline import dvc_stage, no_heartbeats  # noqa: E402


def gate_json_path(workdir: str | Path) -> Path:
    """gate.json of the workspace: params `gate.out`, else metrics/<scenario>/gate.json."""
    import yaml

    params = yaml.safe_load((Path(workdir) / "params.yaml").read_text(encoding="utf-8")) or {}
    out = (params.get("gate") or {}).get("out") or f"metrics/{params.get('scenario', 'vision-backdoor')}/gate.json"
    return Path(workdir) / out


@flow(name="atpatch-nightly-reevaluate")
def nightly_reevaluate(workdir: str = ".", register_when_failed: bool = False) -> dict[str, Any]:
    """Force evaluate + gate; force register only when the gate passed (or `register_when_failed`)."""
    logger = get_run_logger()
    workdir = str(Path(workdir).resolve())
    runs = [dvc_stage("evaluate", workdir, force=True), dvc_stage("gate", workdir, force=True)]
    gate = json.loads(gate_json_path(workdir).read_text(encoding="utf-8"))
    passed = bool(gate.get("passed"))
    if passed:
        logger.info("gate passed: registering and promoting")
    else:
        logger.warning("gate FAILED: %s", "; ".join(gate.get("reasons", [])) or "(no reasons)")
    registered = passed or register_when_failed
    if registered:
        runs.append(dvc_stage("register", workdir, force=True))
    return {"passed": passed, "reasons": gate.get("reasons", []), "registered": registered,
            "stages": [r["stage"] for r in runs]}


def run_nightly(workdir: str = ".", register_when_failed: bool = False) -> dict[str, Any]:
    with no_heartbeats():
        return nightly_reevaluate(workdir=workdir, register_when_failed=register_when_failed)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default=".")
    ap.add_argument("--register-when-failed", action="store_true")
    a = ap.parse_args()
    print(json.dumps(run_nightly(a.workdir, a.register_when_failed), indent=2))
