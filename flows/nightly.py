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

from atpatch.conventions import out_path  # noqa: E402
from pipeline import dvc_stage, no_heartbeats, one_line_errors, scenario_of  # noqa: E402


def gate_json_path(workdir: str | Path, scenario: str) -> Path:
    """gate.json of one scenario in the workspace."""
    return Path(workdir) / out_path("gate", scenario)


@flow(name="atpatch-nightly-reevaluate")
def nightly_reevaluate(workdir: str = ".", register_when_failed: bool = False,
                       scenario: str | None = None) -> dict[str, Any]:
    """Force evaluate + gate; force register only when the gate passed (or `register_when_failed`)."""
    logger = get_run_logger()
    workdir = str(Path(workdir).resolve())
    scenario, _ = scenario_of(workdir, scenario)
    runs = [dvc_stage(f"evaluate@{scenario}", workdir, force=True), dvc_stage(f"gate@{scenario}", workdir, force=True)]
    gate = json.loads(gate_json_path(workdir, scenario).read_text(encoding="utf-8"))
    passed = bool(gate.get("passed"))
    if passed:
        logger.info("gate passed: registering and promoting")
    else:
        logger.warning("gate FAILED: %s", "; ".join(gate.get("reasons", [])) or "(no reasons)")
    registered = passed or register_when_failed
    if registered:
        runs.append(dvc_stage(f"register@{scenario}", workdir, force=True))
    return {"passed": passed, "reasons": gate.get("reasons", []), "registered": registered,
            "stages": [r["stage"] for r in runs]}


def run_nightly(workdir: str = ".", register_when_failed: bool = False, scenario: str | None = None) -> dict[str, Any]:
    with no_heartbeats():
        return nightly_reevaluate(workdir=workdir, register_when_failed=register_when_failed, scenario=scenario)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default=".")
    ap.add_argument("--register-when-failed", action="store_true")
    ap.add_argument("--scenario", default=None)
    a = ap.parse_args()
    scenario_of(a.workdir, a.scenario)  # a bad argument is an error before Prefect starts
    print(json.dumps(run_nightly(a.workdir, a.register_when_failed, a.scenario), indent=2))


if __name__ == "__main__":
    one_line_errors(main)
