"""Where a row-wise pass runs: here on all rows, or shard by shard through the active shard runner.

The passes (`predict_plain`, `predict_patched`, `predict_oracle` in atpatch.eval.evaluation and
`extract_features` in atpatch.ops.patching) call `run`. With no runner active, the pass runs in this
process on all its rows, as it always has. Inside `sharded(runner)` the runner gets the pass instead:
it runs the same function on shards of the rows (atpatch.ops.sharding: on Dask workers) and merges the
results in input order. So a stage runs sharded without a line of it changing: flows/sharded.py calls
the stage's `main` inside `sharded(...)`.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Any, Callable, Iterator, Protocol


class ShardRunner(Protocol):
    def __call__(self, fn: Callable[..., Any], rows: dict[str, Any], static: dict[str, Any]) -> Any:
        """fn(**rows, **static) with `rows` (first dimension: the inputs) split into shards of whole
        batches of static["batch"] rows, results merged in input order."""


_ACTIVE: ContextVar[ShardRunner | None] = ContextVar("atpatch_shard_runner", default=None)


@contextlib.contextmanager
def sharded(runner: ShardRunner) -> Iterator[ShardRunner]:
    """Row-wise passes inside the block go through `runner`."""
    token = _ACTIVE.set(runner)
    try:
        yield runner
    finally:
        _ACTIVE.reset(token)


def run(fn: Callable[..., Any], rows: dict[str, Any], **static: Any) -> Any:
    """fn(**rows, **static): here, or through the active shard runner.

    fn must be a module-level function (a worker imports it by name) that runs its rows in consecutive
    batches of its argument `batch`; rows: its arguments whose first dimension is the inputs (a tensor,
    an array or a dict of them); static: the others (`batch` among them), passed to every shard whole.
    """
    runner = _ACTIVE.get()
    if runner is None:
        return fn(**rows, **static)
    return runner(fn, rows, static)
