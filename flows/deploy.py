"""Deploy the nightly re-evaluation flow (flows/nightly.py) on a cron schedule: one deployment per scenario.

    python flows/deploy.py [--scenario S ...] [--profile P | --workdir DIR] [--pool NAME] [--cron "0 3 * * *"]

Each deployment is named after its scenario (`<scenario>`, or `<scenario>-<profile>` for another
profile) and passes the scenario and the profile (or workdir) to the flow as parameters; with a
profile the flow makes or refreshes the workspace .work/<profile> before it runs. The flow's code
reaches the worker through the deployment's pull step: `flow.from_source` with this repository as the
source records `set_working_directory <repository>`, so a process worker started in any directory
runs `flows/nightly.py` from the repository. The commands, as tested: docs/schedules.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))  # flows/ is not a package

from atpatch.conventions import (DEFAULT_PROFILE, DEFAULT_SCENARIO, NIGHTLY_CRON, NIGHTLY_FLOW,  # noqa: E402
                                 WORK_POOL, deployment_name)
from atpatch.ops.workspace import profile_workdir  # noqa: E402
from pipeline import one_line_errors, scenario_of  # noqa: E402

ENTRYPOINT = "flows/nightly.py:nightly_reevaluate"  # relative to the source, REPO


def flow_parameters(scenario: str, profile: str | None, workdir: str | None) -> dict:
    """The run's parameters; a bad scenario, profile or workdir is a ValueError/AtPatchError now, not at 03:00."""
    if workdir and profile:
        raise ValueError(f"give --workdir or --profile, not both (workdir {workdir!r}, profile {profile!r})")
    if workdir:
        workdir = str(Path(workdir).resolve())
        scenario_of(workdir, scenario)
        return {"scenario": scenario, "workdir": workdir}
    profile = profile or DEFAULT_PROFILE
    profile_workdir(profile, REPO, create=False)  # the profile exists; the flow makes its workspace
    scenario_of(REPO, scenario)
    return {"scenario": scenario, "profile": profile}


def build(scenarios: list[str], profile: str | None = None, workdir: str | None = None, pool: str = WORK_POOL,
          cron: str = NIGHTLY_CRON) -> list:
    """The RunnerDeployments of the nightly flow, one per scenario (not yet applied)."""
    from prefect import flow

    runs = {scenario: flow_parameters(scenario, profile, workdir) for scenario in scenarios}
    nightly = flow.from_source(source=str(REPO), entrypoint=ENTRYPOINT)
    return [nightly.to_deployment(
        name=deployment_name(scenario, parameters.get("profile", DEFAULT_PROFILE)), cron=cron, work_pool_name=pool,
        parameters=parameters, tags=["atpatch", "nightly", scenario],
        description=f"Nightly {scenario}: force DVC stages evaluate + gate; register and promote only on a pass.")
        for scenario, parameters in runs.items()]


def main(argv: list[str] | None = None) -> list:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", nargs="+", default=[DEFAULT_SCENARIO], help="one deployment each (default: %(default)s)")
    ap.add_argument("--profile", default=None, help="default (the repository) or a profile's workspace, e.g. small")
    ap.add_argument("--workdir", default=None, help="a pipeline directory instead of a profile")
    ap.add_argument("--pool", default=WORK_POOL, help="work pool of type process (default: %(default)s)")
    ap.add_argument("--cron", default=NIGHTLY_CRON, help="schedule (default: '%(default)s')")
    a = ap.parse_args(argv)
    deployments = build(a.scenario, a.profile, a.workdir, a.pool, a.cron)
    ids = []
    for deployment in deployments:
        ids.append(deployment.apply())
        print(f"deployment {NIGHTLY_FLOW}/{deployment.name}: cron '{a.cron}', pool '{a.pool}', "
              f"parameters {deployment.parameters}; run it now: "
              f"prefect deployment run {NIGHTLY_FLOW}/{deployment.name}")
    return ids


if __name__ == "__main__":
    one_line_errors(main)
