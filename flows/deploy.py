"""Deploy the nightly re-evaluation flow (flows/nightly.py) on a cron schedule, 03:00 daily.

A scheduled deployment needs a Prefect server and a worker that polls a work pool. From the
repository root, with the environment of scripts/env.sh (`. scripts/env.sh`):

    prefect server start --host 127.0.0.1 --port 4200 &
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    prefect work-pool create atpatch --type process
    python flows/deploy.py                      # --pool NAME, --workdir DIR, --cron "..."
    prefect worker start --pool atpatch         # from the repository root

The deployment's entrypoint is `flows/nightly.py:nightly_reevaluate`, relative to the repository
root, and the process worker runs it from its own working directory: start the worker from the
repository root. `prefect deployment run atpatch-nightly-reevaluate/nightly-reevaluate` queues a
run now; `prefect worker start --pool atpatch --run-once` executes one queued run and exits.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))  # flows/ is not a package

DEPLOYMENT = "nightly-reevaluate"
CRON = "0 3 * * *"


def build(pool: str = "atpatch", workdir: str | Path = REPO, cron: str = CRON, name: str = DEPLOYMENT):
    """The RunnerDeployment of the nightly flow (not yet applied). Entrypoint relative to the repo."""
    from nightly import nightly_reevaluate

    cwd = os.getcwd()
    os.chdir(REPO)  # to_deployment records the entrypoint relative to the working directory
    try:
        return nightly_reevaluate.to_deployment(
            name=name, cron=cron, work_pool_name=pool,
            parameters={"workdir": str(Path(workdir).resolve()), "register_when_failed": False},
            description="Nightly: force DVC stages evaluate + gate; register and promote only on a pass.",
            tags=["atpatch", "nightly"])
    finally:
        os.chdir(cwd)


def main(argv: list[str] | None = None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool", default="atpatch", help="work pool name (type process)")
    ap.add_argument("--workdir", default=str(REPO), help="pipeline directory the flow runs in")
    ap.add_argument("--cron", default=CRON)
    ap.add_argument("--name", default=DEPLOYMENT)
    a = ap.parse_args(argv)
    deployment = build(a.pool, a.workdir, a.cron, a.name)
    deployment_id = deployment.apply()
    print(f"deployment {deployment.flow_name}/{deployment.name} ({deployment_id}): cron '{a.cron}', "
          f"pool '{a.pool}', workdir {Path(a.workdir).resolve()}")
    return deployment_id


if __name__ == "__main__":
    main()
