"""Run a row-wise pass shard by shard wherever `submit` sends a shard, and merge it back in input order.

Driver side, a `ShardRunner` is what atpatch.eval.rowwise hands each pass to (inside `sharded(runner)`):
it plans shards of whole batches (atpatch.eval.shards), turns the models among the pass's arguments
into specs (atpatch.ops.model_cache), submits one `ShardCall` per shard and merges the results.
Worker side, `run_shard` pins the torch thread count, takes the models from the per-process cache and
runs the pass's own function on the shard's rows. Each batch then holds the rows it holds in the serial
run, on the same weights, thread count and code, so the merged result is the serial one, bit for bit
(on workers with the same CPU kind and torch build as the serial run; docs/scale.md).

`submit(call, shard, rows)` returns a future (`.result()`): flows/sharded.py submits a Prefect task to a
Dask cluster; tests submit in process.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from atpatch.eval import shards
from atpatch.ops import cluster, model_cache


@dataclass(frozen=True)
class ShardCall:
    """What a worker needs besides the rows: the pass's function, its other arguments (models as specs)
    and the torch thread count."""

    fn: Callable[..., Any]
    static: dict[str, Any]
    threads: int

    @property
    def label(self) -> str:
        return self.fn.__name__.lstrip("_")


@dataclass
class ShardOutput:
    """A shard's result and where it ran: process, seconds on the worker, the process's model loads so far."""

    index: int
    value: Any
    worker: str
    seconds: float
    loads: dict[str, int] = field(default_factory=dict)


def run_shard(call: ShardCall, shard: shards.Shard, rows: dict[str, Any]) -> ShardOutput:
    """One shard of a pass, on whatever process runs it."""
    start = time.perf_counter()
    cluster.undo_dask_malloc_trim()  # a Dask worker's allocator setting slows the patched passes 1.6x
    # Pinned in every shard: the thread count changes reduction order, so it must be the serial run's.
    torch.set_num_threads(call.threads)
    static = {k: model_cache.materialize(v) for k, v in call.static.items()}
    value = call.fn(**rows, **static)
    return ShardOutput(shard.index, value, f"{socket.gethostname()}:{os.getpid()}", time.perf_counter() - start,
                       model_cache.loads())


@dataclass
class PassRecord:
    """One sharded pass as the driver saw it: its function, rows, shards and wall-clock seconds."""

    label: str
    rows: int
    shards: int
    seconds: float
    shard_seconds: list[float]


class ShardRunner:
    """atpatch.eval.rowwise's runner: shards of at most `shard_size` rows (default: shards.DEFAULT_SHARD_BATCHES
    batches), balanced over `workers` (atpatch.eval.shards.plan), each run by `submit` with `threads` torch
    threads. Keeps a record of every pass and, per worker, its shards, seconds and model loads (`workers()`)."""

    def __init__(self, submit: Callable[[ShardCall, shards.Shard, dict], Any], threads: int,
                 shard_size: int | None = None, workers: int = 1):
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads: expected a positive integer, got {threads!r}")
        self.submit, self.threads, self.shard_size, self.n_workers = submit, threads, shard_size, workers
        self.passes: list[PassRecord] = []
        self._workers: dict[str, dict] = {}

    def __call__(self, fn: Callable[..., Any], rows: dict[str, Any], static: dict[str, Any]) -> Any:
        plan = shards.plan(shards.n_rows(rows), static["batch"], self.shard_size, self.n_workers)
        if not plan:  # no rows: nothing to spread, and the pass says itself what it makes of none
            return fn(**rows, **static)
        start = time.perf_counter()
        call = ShardCall(fn, {k: model_cache.spec_of(v) for k, v in static.items()}, self.threads)
        futures = [self.submit(call, s, shards.take(rows, s)) for s in plan]  # all submitted before any wait
        outputs = [f.result() for f in futures]
        merged = shards.merge(((o.index, o.value) for o in outputs), plan)
        self.passes.append(PassRecord(call.label, plan[-1].stop, len(plan),
                                      time.perf_counter() - start, [o.seconds for o in outputs]))
        for o in outputs:
            self._note(o)
        return merged

    def _note(self, o: ShardOutput) -> None:
        w = self._workers.setdefault(o.worker, {"shards": 0, "seconds": 0.0, "loads": {}})
        w["shards"] += 1
        w["seconds"] += o.seconds
        for label, count in o.loads.items():  # a process's counts only grow: its largest is its total
            w["loads"][label] = max(count, w["loads"].get(label, 0))

    def workers(self) -> dict[str, dict]:
        """Per worker process ("host:pid"): shards run, seconds spent in them, model loads."""
        return {k: {**v, "seconds": round(v["seconds"], 3)} for k, v in self._workers.items()}
