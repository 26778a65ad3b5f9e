"""Where a flow's tasks run: a Dask cluster through Prefect's DaskTaskRunner.

One place decides the runner so sweeps and sharded stages agree: an existing scheduler when the
user names one (`tcp://HOST:8786`), else a local cluster of `workers` processes. Each Dask worker
runs one task at a time (one thread): the tasks are torch processes or torch code that sets its own
thread count, and two torch tasks sharing a worker's cores slow each other by 10x or more.
"""

from __future__ import annotations

import ctypes
import functools

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
    workers = local_workers(workers)
    if workers < 1:
        raise ValueError(f"workers: expected at least 1, got {workers}")
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": THREADS_PER_WORKER,
                                          "processes": True, "dashboard_address": None})


def local_workers(workers: int | None) -> int:
    """A local cluster's size: `workers`, or DEFAULT_LOCAL_WORKERS."""
    return DEFAULT_LOCAL_WORKERS if workers is None else workers


def cluster_size(address: str | None = None, workers: int | None = None) -> int:
    """How many workers the tasks will share: the scheduler's at `address` now, or the local cluster's."""
    if not address:
        return local_workers(workers)
    from distributed import Client

    with Client(address, timeout=60) as client:
        return max(1, len(client.scheduler_info()["workers"]))


# Dask's nanny starts every worker with MALLOC_TRIM_THRESHOLD_=65536 (its default pre-spawn environment, to
# hand freed memory back to the system). Setting it switches off glibc's adaptive mmap threshold: every
# allocation over 128 KiB is then mapped and unmapped again, page faults each time. Measured on the
# vision victim, 1,024 triggered images, one thread: the two-pass patch 1.47 s without it, 2.43 s with it
# (online 1.12 s vs 1.88 s; the unpatched pass 0.35 s either way).
DASK_MALLOC_VAR = "MALLOC_TRIM_THRESHOLD_"
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
MMAP_THRESHOLD_BYTES = 32 << 20   # glibc's own ceiling for the adaptive threshold on 64-bit
TRIM_THRESHOLD_BYTES = 64 << 20


@functools.cache
def undo_dask_malloc_trim() -> bool:
    """In a process started with DASK_MALLOC_VAR (a Dask worker): set glibc's thresholds back to where its
    adaptive mode would take them, so torch's tensors reuse heap memory. Once per process; False where
    nothing was changed (the variable unset, or no glibc)."""
    import os

    if DASK_MALLOC_VAR not in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: the variable means nothing there either
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


def without_dask_malloc_trim(env: dict[str, str]) -> dict[str, str]:
    """`env` for a subprocess a Dask task starts (a sweep cell's stages), without DASK_MALLOC_VAR."""
    return {k: v for k, v in env.items() if k != DASK_MALLOC_VAR}
