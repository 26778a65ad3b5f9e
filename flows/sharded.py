"""Prefect flow: stage extract or evaluate with its passes over the inputs sharded over a Dask cluster.

The stage's own code runs in this process (`main` of the workdir's stages/<stage>.py): it reads the
scenario's params and writes its outputs where dvc.yaml declares them, atomically, as `dvc repro` does.
Each pass over the inputs (victim predictions, patched predictions, features) goes to the cluster as one
Prefect task per shard of whole batches (atpatch.ops.sharding), each worker loading the victim and the
detector once, and comes back merged in input order: the outputs are the serial stage's, bit for bit,
except evaluate.json's latency block, which is a timing (docs/scale.md). Then `dvc commit` records the
outputs in the workdir's dvc.lock, so the next `dvc repro` finds the stage up to date.

    python flows/sharded.py --stages evaluate --workers 2                     # a local cluster of 2 workers
    python flows/sharded.py --stages extract evaluate --address tcp://HOST:8786 --shard-size 2048
    python flows/sharded.py --stages evaluate --profile small --scenario vision-backdoor --no-commit
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # flows/ is not a package

import cloudpickle  # noqa: E402
from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from atpatch.conventions import PARAMS_FILE, SHARDED_FLOW  # noqa: E402
from atpatch.eval import rowwise  # noqa: E402
from atpatch.eval.shards import shard_size  # noqa: E402
from atpatch.io import load_params  # noqa: E402
from atpatch.ops.cluster import cluster_size, task_runner  # noqa: E402
from atpatch.ops.sharding import ShardCall, ShardRunner, run_shard  # noqa: E402
from atpatch.scenarios import scenario_params  # noqa: E402
from pipeline import no_heartbeats, one_line_errors, one_prefect_api, resolve_workdir, scenario_of  # noqa: E402

# Dask ships each task with its run context, this flow in it, to the scheduler and the workers, which
# cannot import flows/ by name (it is on no path of theirs): this module and flows/pipeline.py travel by
# value. What the shards run is the library's (atpatch.ops.sharding.run_shard), imported there by name.
for _module in (sys.modules[__name__], sys.modules["pipeline"]):
    if _module.__name__ != "__main__":
        cloudpickle.register_pickle_by_value(_module)

SHARDABLE = ("extract", "evaluate")  # the stages whose work is passes over their inputs
TAIL_CHARS = 2000


# Inputs are tensors of megabytes: Prefect's default cache policy would hash them all for nothing.
@task(name="shard", task_run_name="{call.label}-{shard.index}", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def shard_task(call: ShardCall, shard, rows: dict) -> Any:
    """One shard of a pass on a Dask worker. A worker that dies mid-shard is replaced by Dask, which runs the
    shard again elsewhere; an exception is retried twice."""
    return run_shard(call, shard, rows)


def check_stages(stages: list[str]) -> list[str]:
    unknown = [s for s in stages if s not in SHARDABLE]
    if unknown or not stages:
        raise ValueError(f"--stages: expected some of {list(SHARDABLE)}, got {stages}")
    return [s for s in SHARDABLE if s in stages]  # dvc.yaml's order


def load_stage(workdir: Path, stage: str):
    """The module of <workdir>/stages/<stage>.py: the code `dvc repro` would run there."""
    path = workdir / "stages" / f"{stage}.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (workdir must be the repository or a workspace)")
    spec = importlib.util.spec_from_file_location(f"atpatch_stage_{stage}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dvc_commit(workdir: Path, stage: str) -> bool:
    """`dvc commit --force <stage>` in `workdir` when it is a DVC project; False when it is not.
    RuntimeError with DVC's last words when the commit fails."""
    if not (workdir / "dvc.yaml").is_file():
        return False
    proc = subprocess.run([sys.executable, "-m", "dvc", "commit", "--force", "-q", stage], cwd=workdir,
                          capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"dvc commit {stage} in {workdir} failed (exit {proc.returncode}): "
                           f"{(proc.stderr or proc.stdout)[-TAIL_CHARS:]}")
    return True


@flow(name=SHARDED_FLOW)
def sharded_stages(workdir: str, stages: list[str], scenario: str | None = None, shard_size: int | None = None,
                   commit: bool = True, workers: int = 1) -> dict:
    """Run `stages` (of SHARDABLE) for `scenario` in `workdir`, their passes sharded on the flow's task
    runner; then `dvc commit` each (unless `commit` is False). Returns per stage its seconds and whether it
    was committed, the thread count, and per worker its shards, seconds and model loads."""
    logger = get_run_logger()
    root = Path(workdir).resolve()
    scenario, _ = scenario_of(root, scenario)
    params = scenario_params(load_params(path=root / PARAMS_FILE), scenario, root / PARAMS_FILE)
    import torch

    threads = params["threads"] or torch.get_num_threads()  # unpinned: the count this process runs with
    runner = ShardRunner(shard_task.submit, threads, shard_size, workers)  # shards balanced over the workers
    done = []
    for stage in check_stages(stages):
        start = time.perf_counter()
        with contextlib.chdir(root), rowwise.sharded(runner):
            load_stage(root, stage).main(params)
        seconds = time.perf_counter() - start
        committed = commit and dvc_commit(root, f"{stage}@{scenario}")
        done.append({"stage": stage, "seconds": round(seconds, 2), "committed": committed})
        logger.info("%s@%s: %.1f s, %d shards so far%s", stage, scenario, seconds, sum(p.shards for p in runner.passes),
                    ", committed to dvc.lock" if committed else "")
    return {"scenario": scenario, "stages": done, "threads": threads, "workers": runner.workers(),
            "passes": [vars(p) for p in runner.passes]}


def warn_oversubscribed(address: str | None, workers: int | None, threads: int) -> str | None:
    """A warning when a local cluster would run more torch threads than the machine has cores."""
    from atpatch.ops.cluster import local_workers

    n = local_workers(workers)
    cores = os.cpu_count() or 1
    if address or n * threads <= cores:
        return None
    return (f"warning: {n} local workers x {threads} torch threads (params.yaml `threads`) on {cores} cores: "
            "the workers will slow each other down; fewer workers, or a params.yaml with fewer threads")


def run_sharded(workdir: str, stages: list[str], scenario: str | None = None, address: str | None = None,
                workers: int | None = None, shard_size: int | None = None, commit: bool = True) -> dict:
    """`sharded_stages` on `task_runner(address, workers)`, heartbeats off, one Prefect API for driver and
    workers, progress bars off in the workers' logs."""
    os.environ.setdefault("TQDM_DISABLE", "1")  # local workers inherit the environment
    runner = task_runner(address, workers)
    with no_heartbeats(), one_prefect_api():
        return sharded_stages.with_options(task_runner=runner)(workdir=workdir, stages=stages, scenario=scenario,
                                                               shard_size=shard_size, commit=commit,
                                                               workers=cluster_size(address, workers))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n")[-1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stages", nargs="+", default=["evaluate"], help=f"some of {list(SHARDABLE)} (default: evaluate)")
    ap.add_argument("--workdir", default=None, help="directory holding dvc.yaml and params.yaml (default: .)")
    ap.add_argument("--profile", default=None, help="run in this profile's workspace .work/<profile> (made or refreshed)")
    ap.add_argument("--scenario", default=None, help="a scenario of params.yaml (default: its `scenario`)")
    ap.add_argument("--address", default=None, help="a Dask scheduler, tcp://HOST:PORT (default: a local cluster)")
    ap.add_argument("--workers", type=int, default=None, help="local cluster size (default: 2)")
    ap.add_argument("--shard-size", type=int, default=None,
                    help="rows per shard, a multiple of the stage's batch_size (default: 4 batches)")
    ap.add_argument("--no-commit", action="store_true", help="leave dvc.lock alone (the next dvc repro reruns the stage)")
    a = ap.parse_args(argv)
    stages = check_stages(a.stages)
    workdir = resolve_workdir(a.workdir, a.profile)
    scenario, _ = scenario_of(workdir, a.scenario)  # a bad argument is an error before Prefect starts
    task_runner(a.address, a.workers)
    params = scenario_params(load_params(path=Path(workdir) / PARAMS_FILE), scenario, Path(workdir) / PARAMS_FILE)
    for stage in stages:
        try:
            shard_size(params[stage]["batch_size"], a.shard_size)
        except ValueError as exc:
            raise ValueError(f"--shard-size, stage {stage} (batch_size {params[stage]['batch_size']}): {exc}") from None
    if warning := warn_oversubscribed(a.address, a.workers, params["threads"] or 1):
        print(warning, file=sys.stderr)
    summary = run_sharded(workdir, stages, scenario, a.address, a.workers, a.shard_size, not a.no_commit)
    for s in summary["stages"]:
        print(f"{s['stage']}@{summary['scenario']}: {s['seconds']:.1f} s"
              f"{', committed to dvc.lock' if s['committed'] else ''}")
    for name, w in summary["workers"].items():
        print(f"worker {name}: {w['shards']} shards, {w['seconds']:.1f} s, loads {w['loads']}")
    return summary


if __name__ == "__main__":
    one_line_errors(main)
