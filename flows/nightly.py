"""Nightly re-evaluation: rerun evaluate and the regression gate; register/promote on a pass.

Forces stages `evaluate` and `gate` (through DVC, as flows/pipeline.py does), then reads the
gate's decision (gate.json): when the gate passed, forces stage `register`, which registers a new
version and moves the `champion` alias to it. When it failed, registration is skipped (unless
`register_when_failed`, which registers the version as `challenger` only) and the reasons are
logged as a warning; the flow still completes, with `passed: False` in its result. Either way the
run ends with the metrics-and-gate artifact (artifacts.py). It re-evaluates a trained pipeline: a
workdir without the scenario's victim and detector is an error that names the command to train them.

    python flows/nightly.py [--workdir DIR | --profile P] [--scenario S]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # flows/ is not a package

from prefect import flow, get_run_logger  # noqa: E402

from artifacts import publish_summary  # noqa: E402
from atpatch.conventions import DEFAULT_PROFILE, NIGHTLY_FLOW, out_path  # noqa: E402
from pipeline import dvc_stage, no_heartbeats, one_line_errors, resolve_workdir, scenario_of  # noqa: E402

TRAINED = ("train_victim", "train_detector")  # what stage evaluate reads and the nightly run does not remake


def gate_json_path(workdir: str | Path, scenario: str) -> Path:
    """gate.json of one scenario in the workspace."""
    return Path(workdir) / out_path("gate", scenario)


def check_trained(workdir: str | Path, scenario: str, profile: str | None = None) -> None:
    """ValueError naming the missing outputs and the command that makes them."""
    missing = [out_path(stage, scenario) for stage in TRAINED if not (Path(workdir) / out_path(stage, scenario)).exists()]
    if missing:
        raise ValueError(f"{workdir} has no {' or '.join(missing)}: train the pipeline first "
                         f"(atpatch run --scenario {scenario} --profile {profile or DEFAULT_PROFILE})")


@flow(name=NIGHTLY_FLOW)
def nightly_reevaluate(workdir: str | None = None, register_when_failed: bool = False,
                       scenario: str | None = None, profile: str | None = None) -> dict[str, Any]:
    """Force evaluate + gate in `workdir` or `profile`'s workspace; force register only when the gate
    passed (or `register_when_failed`); publish the metrics artifact."""
    logger = get_run_logger()
    workdir = resolve_workdir(workdir, profile)
    scenario, _ = scenario_of(workdir, scenario)
    check_trained(workdir, scenario, profile)
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
    publish_summary(workdir, scenario)
    return {"passed": passed, "reasons": gate.get("reasons", []), "registered": registered,
            "stages": [r["stage"] for r in runs]}


def run_nightly(workdir: str | None = None, register_when_failed: bool = False, scenario: str | None = None) -> dict[str, Any]:
    with no_heartbeats():
        return nightly_reevaluate(workdir=workdir, register_when_failed=register_when_failed, scenario=scenario)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default=None, help="directory holding dvc.yaml and params.yaml (default: .)")
    ap.add_argument("--profile", default=None, help="run in this profile's workspace .work/<profile> (made or refreshed)")
    ap.add_argument("--register-when-failed", action="store_true")
    ap.add_argument("--scenario", default=None)
    a = ap.parse_args()
    workdir = resolve_workdir(a.workdir, a.profile)
    check_trained(workdir, scenario_of(workdir, a.scenario)[0], a.profile)  # errors before Prefect starts
    print(json.dumps(run_nightly(workdir, a.register_when_failed, a.scenario), indent=2))


if __name__ == "__main__":
    one_line_errors(main)
