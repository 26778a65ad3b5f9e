"""A real Dask cluster on loopback, started the way docs/cluster.md starts one: `dask scheduler` and
`dask worker tcp://...:N --nthreads 1` processes, each in its own process group, stopped on exit."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

from processes import free_port, stop

DASK = Path(sys.executable).parent / "dask"


@contextlib.contextmanager
def dask_cluster(env: dict, cwd: Path, logs: Path, workers: int = 2) -> Iterator[dict]:
    """{"address", "workers": {worker address: the `dask worker` process (its nanny) that started it},
    "logs": the folder of each process's log}."""
    import psutil
    from distributed import Client

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    commands = {"scheduler": [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port)],
                **{f"worker{k}": [str(DASK), "worker", address, "--nthreads", "1"] for k in range(1, workers + 1)}}
    logs.mkdir(parents=True, exist_ok=True)
    procs = {}
    try:
        for name, cmd in commands.items():
            with open(logs / f"{name}.log", "w") as log:
                procs[name] = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                               start_new_session=True)
        with Client(address, timeout=60) as client:
            client.wait_for_workers(workers, timeout=120)
            pids = client.run(os.getpid)  # {worker address: its process id}
        started = {p.pid: p for p in procs.values()}
        yield {"address": address, "workers": {a: started[psutil.Process(pid).ppid()] for a, pid in pids.items()},
               "logs": logs}
    finally:
        for proc in procs.values():
            stop(proc)
