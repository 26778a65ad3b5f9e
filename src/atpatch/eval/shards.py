"""Shards of a row-wise pass: planned on batch boundaries, merged back in input order.

A pass (predictions, features) runs its inputs batch by batch. A shard is a run of whole batches, so
in a sharded run every batch holds exactly the rows it holds in the serial run: kernels whose result
depends on the batch (its shape, its other rows) compute the same numbers. Merging concatenates the
shards' results along the first dimension in shard order, whatever order they finished in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

# Batches per shard when no shard size is given. A shard pays a fixed overhead (about 0.25 s through Prefect
# and Dask on 2 loaded cores) against about 0.6 s of compute per vision batch of 256 on one thread
# (benchmarks/scale.py measures both); 4 batches keep the overhead near a tenth, and cut the 10,000 vision
# test images into 10 shards, which 2 workers share evenly.
DEFAULT_SHARD_BATCHES = 4


@dataclasses.dataclass(frozen=True)
class Shard:
    """Rows start:stop of a pass, the index-th shard of its plan."""

    index: int
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


def shard_size(batch_size: int, size: int | None = None) -> int:
    """Rows per shard: `size`, or DEFAULT_SHARD_BATCHES batches. ValueError when `size` is not a positive
    multiple of the batch size (a shard boundary inside a batch would change that batch's rows)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch size: expected a positive integer, got {batch_size!r}")
    if size is None:
        return DEFAULT_SHARD_BATCHES * batch_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % batch_size:
        raise ValueError(f"shard size: expected a positive multiple of the batch size {batch_size} (each batch "
                         f"must hold the rows it holds in the serial run), got {size!r}")
    return size


def plan(n_rows: int, batch_size: int, size: int | None = None, workers: int = 1) -> list[Shard]:
    """Consecutive shards of whole batches covering rows 0..n_rows, each at most `shard_size(batch_size, size)`
    rows. With `workers` and more shards than workers, their count is a multiple of it (where there are
    batches enough) and their sizes differ by one batch at most, so that at the end of a pass no worker
    waits on another's last shard: 9,000 images in batches of 256 make 9 shards of 4 batches for 1 worker,
    10 of 3 or 4 for 2. Fewer shards than workers already run in one round: more would only add overhead."""
    step = shard_size(batch_size, size)
    if isinstance(n_rows, bool) or not isinstance(n_rows, int) or n_rows < 0:
        raise ValueError(f"rows: expected a count >= 0, got {n_rows!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers: expected a positive integer, got {workers!r}")
    batches = -(-n_rows // batch_size)
    if not batches:
        return []
    count = -(-batches // (step // batch_size))
    if count > workers:  # several rounds: round them up to full ones (fewer shards than workers: one round)
        count = min(batches, -(-count // workers) * workers)
    base, extra = divmod(batches, count)
    bounds, start = [], 0
    for i in range(count):
        stop = min(n_rows, start + (base + (i < extra)) * batch_size)
        bounds.append(Shard(i, start, stop))
        start = stop
    return bounds


def take(value: Any, shard: Shard) -> Any:
    """The shard's rows of a row-aligned value (a tensor, an array, or a dict of them), as a copy:
    pickling a slice of a tensor would send its whole storage."""
    if isinstance(value, torch.Tensor):
        return value[shard.start:shard.stop].clone()
    if isinstance(value, np.ndarray):
        return value[shard.start:shard.stop].copy()
    if isinstance(value, dict):
        return {k: take(v, shard) for k, v in value.items()}
    raise TypeError(f"row-aligned argument: expected a tensor, an array or a dict of them, got {type(value).__name__}")


def n_rows(value: Any) -> int:
    """The first dimension of a pass's inputs or result (a tensor or array, or the first item of a dict,
    tuple or dataclass)."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return len(value)
    if isinstance(value, dict):
        return n_rows(next(iter(value.values())))
    if isinstance(value, (tuple, list)):
        return n_rows(value[0])
    if dataclasses.is_dataclass(value):
        return n_rows(next(v for v in (getattr(value, f.name) for f in dataclasses.fields(value)) if v is not None))
    raise TypeError(f"cannot count the rows of a {type(value).__name__}")


def concat(parts: list[Any]) -> Any:
    """The parts joined along the first dimension, recursively through dicts, tuples and dataclasses
    (a field that is None in every part stays None)."""
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)
    if isinstance(first, np.ndarray):
        return np.concatenate(parts)
    if first is None:
        if any(p is not None for p in parts):
            raise ValueError("shard results: a field is None in some shards only")
        return None
    if isinstance(first, dict):
        return {k: concat([p[k] for p in parts]) for k in first}
    if isinstance(first, (tuple, list)):
        return type(first)(concat(list(column)) for column in zip(*parts))
    if dataclasses.is_dataclass(first):
        return dataclasses.replace(first, **{f.name: concat([getattr(p, f.name) for p in parts])
                                             for f in dataclasses.fields(first)})
    raise TypeError(f"cannot merge shard results of type {type(first).__name__}")


def merge(parts: Iterable[tuple[int, Any]], shards: list[Shard]) -> Any:
    """The results of every shard of `shards`, given as (shard index, result) in any order, joined in
    input order. ValueError when a shard is missing, repeated or unknown, or a result has the wrong
    number of rows."""
    by_index: dict[int, Any] = {}
    for index, value in parts:
        if index in by_index:
            raise ValueError(f"shard results: shard {index} came back twice")
        by_index[index] = value
    expected = [s.index for s in shards]
    missing, unknown = sorted(set(expected) - set(by_index)), sorted(set(by_index) - set(expected))
    if missing or unknown or not shards:
        raise ValueError(f"shard results: expected shards {expected} once each, missing {missing}, unknown {unknown}")
    for s in shards:
        got = n_rows(by_index[s.index])
        if got != len(s):
            raise ValueError(f"shard results: shard {s.index} (rows {s.start}:{s.stop}) expected {len(s)} rows, got {got}")
    return concat([by_index[s.index] for s in shards])
