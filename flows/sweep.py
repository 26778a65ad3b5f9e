"""Prefect flow: a benchmark sweep, scenario x seed x variant, each cell a concurrent task on Dask.

Each cell is atpatch.ops.sweep.run_cell (the pipeline from scratch in a workspace of its own), the
same function the serial benchmark (benchmarks/scenarios.py) calls in a loop; here it is a Prefect
task (retried twice, 10 s apart) on atpatch.ops.cluster.task_runner: a local cluster of --workers
one-thread processes, or the scheduler at --address. Dask hands a task whose worker died to another
worker. The flow collects the cells' results and writes them once, at the end, as the serial run does
(benchmarks/results/<scenario>.json merged by cell, atomically; RESULTS.md; an MLflow run per scenario);
a cell that still fails is named in the flow's error, after the others' results are written.

    python flows/sweep.py --scenarios tabular-fairness tabular-fairness-compas --seeds 0 1 --profile small --workers 2
    python flows/sweep.py --address tcp://HOST:8786 --scenarios text-backdoor --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]  # flows/ is not a package; the benchmarks package

import cloudpickle  # noqa: E402
from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from atpatch.conventions import SWEEP_FLOW  # noqa: E402
from atpatch.ops.cluster import task_runner  # noqa: E402
from atpatch.ops.sweep import CELL_THREADS, Cell, cells_root, run_cell  # noqa: E402
from benchmarks.scenarios import OUT, grid_arguments, grid_cells, summary  # noqa: E402
from pipeline import no_heartbeats, one_line_errors, one_prefect_api  # noqa: E402

# Dask ships a task's function (and, in the task's run context, this flow) to the scheduler and its
# workers by pickling; they cannot import this file by name (flows/ is on no path of theirs), so its
# functions travel by value. What they call is the library's (atpatch.ops.sweep.run_cell), imported
# there by name.
if __name__ != "__main__":
    cloudpickle.register_pickle_by_value(sys.modules[__name__])

CELL_RETRIES = 2
CELL_RETRY_DELAY_S = 10


@task(name="sweep-cell", task_run_name="{cell.scenario} {cell.label}", retries=CELL_RETRIES,
      retry_delay_seconds=CELL_RETRY_DELAY_S, cache_policy=NO_CACHE)  # a benchmark cell always runs
def sweep_cell(cell: Cell, profile: str, root: str, threads: int, reuse: bool) -> dict:
    """One cell (atpatch.ops.sweep.run_cell) as a Prefect task."""
    result = run_cell(cell, profile, Path(root), threads, reuse)
    get_run_logger().info("%s %s: %.0f s on %s", cell.scenario, cell.label, result["repro_seconds"],
                          result["ran_on"]["worker"] or result["ran_on"]["host"])
    return result


def failure_summary(failed: list[tuple[Cell, BaseException]], total: int) -> str:
    """One line naming each cell that failed and the first line of its error."""
    def line(cell: Cell, error: BaseException) -> str:
        name = f"{cell.scenario} {cell.label}: "
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        return name + first.removeprefix(name)  # run_cell's own errors name their cell already

    named = "; ".join(line(c, e) for c, e in failed)
    return (f"{len(failed)} of {total} cells failed after {CELL_RETRIES} retries (the other cells' results are "
            f"written): {named}")


@flow(name=SWEEP_FLOW)
def sweep(cells: list[Cell], profile: str, workdir: str, threads: int | None = CELL_THREADS, reuse: bool = False,
          command: str = "flows/sweep.py", out: str = str(OUT)) -> list[dict]:
    """Every cell as a concurrent task; the results published once all have ended, and returned.
    RuntimeError naming the failed cells, raised after the others' results are written."""
    root = str(cells_root(workdir, profile))
    futures = [sweep_cell.submit(c, profile, root, threads, reuse) for c in cells]
    rows, failed = [], []
    for cell, future in zip(cells, futures):
        result = future.result(raise_on_failure=False)
        if isinstance(result, BaseException):
            failed.append((cell, result))
        else:
            rows.append(result)
    if rows:
        # Imported here, not by name at the top: Prefect sends the flow along with every task (in its run
        # context), and a reference to benchmarks/ would make the scheduler and workers import it.
        from benchmarks.scenarios import publish

        publish(rows, command, out)
    if failed:
        raise RuntimeError(failure_summary(failed, len(cells)))
    return rows


def run_sweep(cells: list[Cell], profile: str, workdir: str, threads: int | None = None, reuse: bool = False,
              command: str = "flows/sweep.py", out: str = str(OUT), address: str | None = None,
              workers: int | None = None) -> list[dict]:
    """`sweep` on Dask: the scheduler at `address`, else a local cluster of `workers`; heartbeats off;
    `threads` per cell (None: CELL_THREADS).
    A remote cluster's workers report to PREFECT_API_URL, which must then name a server they reach."""
    runner = task_runner(address, workers)  # a bad choice is an error before Prefect starts
    threads = CELL_THREADS if threads is None else threads  # one-thread workers: one thread per cell
    local = contextlib.nullcontext() if address else one_prefect_api()
    with no_heartbeats(), local:
        return sweep.with_options(task_runner=runner)(cells, profile, str(workdir), threads, reuse, command,
                                                      str(out))


def main(argv: list[str] | None = None) -> None:
    ap = grid_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    args = ap.parse_args(argv)
    cells = grid_cells(args)
    command = " ".join(["flows/sweep.py", *(sys.argv[1:] if argv is None else argv)])
    rows = run_sweep(cells, args.profile, args.workdir, args.threads, args.reuse, command, args.out, args.address,
                     args.workers)
    print(summary(rows, args.out))


if __name__ == "__main__":
    one_line_errors(main)
