"""Where a flow's tasks run: a Dask cluster through Prefect's DaskTaskRunner.

One place decides the runner so sweeps and sharded stages agree: an existing scheduler when the
user names one (`tcp://HOST:8786`), else a local cluster of `workers` processes. Each Dask worker
runs one task at a time (one thread): the tasks are torch processes or torch code that sets its own
thread count, and two torch tasks sharing a worker's cores slow each other by 10x or more.
"""

from __future__ import annotations

# Dask's worker threads per process: one task at a time, see the module docstring.
THREADS_PER_WORKER = 1
DEFAULT_LOCAL_WORKERS = 2


def task_runner(address: str | None = None, workers: int | None = None):
    """A prefect_dask.DaskTaskRunner on the scheduler at `address`, or on a local cluster of `workers`
    one-thread processes (default DEFAULT_LOCAL_WORKERS). ValueError when both or a bad count are given."""
    from prefect_dask import DaskTaskRunner

    if address and workers:
        raise ValueError(f"give a scheduler address or a number of local workers, not both "
                         f"(address {address!r}, workers {workers})")
    if address:
        return DaskTaskRunner(address=address)
    workers = DEFAULT_LOCAL_WORKERS if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers: expected at least 1, got {workers}")
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": THREADS_PER_WORKER,
                                          "processes": True, "dashboard_address": None})
