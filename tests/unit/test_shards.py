"""Shard planning on batch boundaries and merging in input order (atpatch.eval.shards)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atpatch.eval.evaluation import Predictions
from atpatch.eval.shards import DEFAULT_SHARD_BATCHES, Shard, merge, plan, shard_size, take


def test_shards_cover_every_row_once_in_order_with_an_uneven_last_shard():
    shards = plan(1000, batch_size=64, size=256)
    assert [(s.index, s.start, s.stop) for s in shards] == [(0, 0, 256), (1, 256, 512), (2, 512, 768), (3, 768, 1000)]
    assert [len(s) for s in shards] == [256, 256, 256, 232]


def test_every_shard_boundary_is_a_batch_boundary():
    for n in (1, 63, 64, 65, 1000, 4096):
        shards = plan(n, batch_size=64, size=192)
        assert all(s.start % 64 == 0 for s in shards) and shards[-1].stop == n


def test_the_default_size_is_a_number_of_batches():
    assert shard_size(256) == DEFAULT_SHARD_BATCHES * 256
    assert [len(s) for s in plan(3 * DEFAULT_SHARD_BATCHES * 10, batch_size=10)] == [DEFAULT_SHARD_BATCHES * 10] * 3


def test_shards_for_several_workers_come_in_a_multiple_of_them_and_differ_by_one_batch_at_most():
    one = plan(9000, batch_size=256, size=1024)
    assert [len(s) // 256 for s in one] == [4] * 8 + [3]   # 8 full shards and the rest: 5 rounds for 2 workers
    two = plan(9000, batch_size=256, size=1024, workers=2)
    assert len(two) == 10 and two[-1].stop == 9000 and all(s.start % 256 == 0 for s in two)
    assert {-(-len(s) // 256) for s in two} == {3, 4} and max(len(s) for s in two) <= 1024
    assert len(plan(3 * 64, batch_size=64, size=64, workers=8)) == 3  # fewer batches than workers: one each
    assert len(plan(9000, batch_size=256, size=1024, workers=64)) == 9  # one round already: no extra shards


def test_no_rows_is_no_shards():
    assert plan(0, batch_size=8) == []


@pytest.mark.parametrize("batch, size, needle", [
    (64, 100, "shard size: expected a positive multiple of the batch size 64"),
    (64, 0, "got 0"), (64, -64, "got -64"), (64, 64.0, "got 64.0"), (0, None, "batch size: expected a positive"),
])
def test_bad_sizes_are_one_line_errors(batch, size, needle):
    with pytest.raises(ValueError, match=needle) as err:
        shard_size(batch, size)
    assert "\n" not in str(err.value)


def test_bad_row_counts_are_errors():
    with pytest.raises(ValueError, match="rows: expected a count >= 0, got -1"):
        plan(-1, batch_size=8)
    with pytest.raises(ValueError, match="workers: expected a positive integer, got 0"):
        plan(8, batch_size=8, workers=0)


def test_take_copies_the_rows_of_tensors_arrays_and_dicts():
    x = torch.arange(20).reshape(10, 2)
    part = take({"a": x, "b": np.arange(10)}, Shard(1, 4, 8))
    assert part["a"].tolist() == x[4:8].tolist() and part["b"].tolist() == [4, 5, 6, 7]
    assert part["a"].untyped_storage().nbytes() == 4 * 2 * x.element_size()  # a copy, not a view of all 10 rows
    with pytest.raises(TypeError, match="expected a tensor, an array or a dict of them, got list"):
        take([1, 2], Shard(0, 0, 1))


def _parts(shards, values):
    return [(s.index, values[s.start:s.stop]) for s in shards]


def test_merge_puts_results_back_in_input_order_whatever_order_they_came_in():
    shards = plan(10, batch_size=2, size=4)
    values = torch.arange(10)
    parts = _parts(shards, values)
    assert merge(reversed(parts), shards).tolist() == list(range(10))
    assert merge([parts[1], parts[2], parts[0]], shards).tolist() == list(range(10))


def test_merge_joins_tuples_dicts_and_dataclasses_field_by_field():
    shards = plan(5, batch_size=1, size=2)
    labels, scores = np.arange(5), torch.arange(10.0).reshape(5, 2)
    preds = [(s.index, Predictions(labels[s.start:s.stop], None, scores[s.start:s.stop].numpy(), None)) for s in shards]
    merged = merge(reversed(preds), shards)
    assert merged.labels.tolist() == list(range(5)) and merged.flagged is None and merged.logits is None
    assert np.array_equal(merged.scores, scores.numpy())
    tuples = [(s.index, (scores[s.start:s.stop], {"m": labels[s.start:s.stop]})) for s in shards]
    feats, extra = merge(tuples[::-1], shards)
    assert torch.equal(feats, scores) and extra["m"].tolist() == list(range(5))


@pytest.mark.parametrize("mangle, needle", [
    (lambda p: p[:-1], r"missing \[2\]"),
    (lambda p: p + [p[0]], "shard 0 came back twice"),
    (lambda p: p + [(7, torch.zeros(1))], r"unknown \[7\]"),
    (lambda p: [(0, p[0][1][:1])] + p[1:], r"shard 0 \(rows 0:4\) expected 4 rows, got 1"),
])
def test_merge_refuses_missing_repeated_unknown_or_short_results(mangle, needle):
    shards = plan(10, batch_size=2, size=4)
    with pytest.raises(ValueError, match=needle):
        merge(mangle(_parts(shards, torch.arange(10))), shards)
