"""Sharded passes (atpatch.ops.sharding) on the tiny patch, shards run in this process: every pass a stage
shards gives the serial result bit for bit, each model is loaded once, and a model a worker could not
rebuild exactly is refused. The same on a real Dask cluster through Prefect: test_sharded_flow.py."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch
from tiny_patch import tiny_images, tiny_patch

from atpatch.core.detector import Detector
from atpatch.core.errors import AtPatchError
from atpatch.core.patched import PatchedClassifier
from atpatch.eval import rowwise
from atpatch.eval.evaluation import predict_oracle, predict_patched, predict_plain
from atpatch.ops import model_cache
from atpatch.ops.patching import extract_features, layout_for
from atpatch.ops.sharding import ShardRunner, run_shard
from atpatch.scenarios.models.loading import load_classifier
from atpatch.scenarios.models.vit import to_pixel_values

pytestmark = pytest.mark.usefixtures("one_thread")
BATCH, SHARD = 8, 16  # 70 rows: shards of 16, 16, 16, 16 and 6


class Done:
    """A future that is already done: the shard ran when it was submitted."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


def in_process(call, shard, rows):
    return Done(run_shard(call, shard, rows))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharding")
    parts = tiny_patch(root / "tiny", steps=150)
    model = load_classifier(parts["victim"], attn_implementation="sdpa")
    patched = PatchedClassifier(model, Detector.load(parts["detector"]), mode="two-pass")
    trig, trig_labels = tiny_images(40, 5, triggered=True)
    clean, clean_labels = tiny_images(30, 6)
    inputs = {"pixel_values": to_pixel_values(np.concatenate([trig, clean]))}
    flags = torch.as_tensor(np.concatenate([trig_labels, clean_labels])).bool()
    return {"root": root, "parts": parts, "model": model, "patched": patched, "inputs": inputs, "flags": flags}


def passes(t: dict, batch: int = BATCH) -> dict:
    """Every pass a stage shards, on the tiny patch."""
    model, patched = t["model"], t["patched"]
    return {"plain": predict_plain(model, t["inputs"], batch, "plain"),
            "patched": predict_patched(patched, t["inputs"], batch, "patched"),
            "oracle": predict_oracle(model, t["inputs"], t["flags"], patched.benign, patched.patch_layers, batch),
            "features": extract_features(model, t["inputs"], layout_for(model), batch, progress=False)}


def same(a, b) -> bool:
    """Equal bit for bit, through tuples and dataclasses (None equal to None only)."""
    if dataclasses.is_dataclass(a):
        return all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, tuple):
        return all(same(x, y) for x, y in zip(a, b, strict=True))
    if a is None or b is None:
        return a is b
    return np.asarray(a).tobytes() == np.asarray(b).tobytes() and np.asarray(a).shape == np.asarray(b).shape


def test_every_sharded_pass_is_the_serial_pass_bit_for_bit_and_loads_each_model_once(tiny):
    serial = passes(tiny)
    assert serial["patched"].flagged.any(1).sum() > 0  # the second pass of two-pass ran on some rows
    runner = ShardRunner(in_process, threads=1, shard_size=SHARD)
    with rowwise.sharded(runner):
        sharded = passes(tiny)
    assert {name: same(serial[name], sharded[name]) for name in serial} == {name: True for name in serial}
    assert [(p.label, p.rows, p.shards) for p in runner.passes] == [
        (name, 70, 5) for name in ("predict_plain", "predict_patched", "predict_oracle", "extract_features")]
    [worker] = runner.workers().values()
    assert worker["shards"] == 20
    victim, detector = tiny["parts"]["victim"].resolve(), tiny["parts"]["detector"].resolve()
    assert worker["loads"] == {f"model {victim} (sdpa)": 1, f"detector {detector}": 1}


def test_a_shard_boundary_inside_a_batch_would_change_the_numbers(tiny):
    """Why shards are whole batches: the same rows batched otherwise give other detector scores, so a
    shard that cut a batch would not reproduce the serial run."""
    eight, five = passes(tiny, 8)["patched"], passes(tiny, 5)["patched"]
    assert not same(eight.scores, five.scores)


def test_a_pass_over_no_rows_runs_here():
    runner = ShardRunner(lambda *a: pytest.fail("nothing to submit"), threads=1)
    with rowwise.sharded(runner):
        assert rowwise.run(lambda inputs, batch: "ran here", {"inputs": torch.zeros(0, 3)}, batch=4) == "ran here"


def test_models_a_worker_could_not_rebuild_exactly_are_refused(tiny, tmp_path):
    from atpatch.scenarios.models.vit import build_vit

    with pytest.raises(AtPatchError, match="not loaded from a directory"):
        model_cache.spec_of(build_vit(num_labels=10, image_size=28, patch_size=4, seed=0, hidden_size=16, layers=1,
                                      heads=2, intermediate_size=32))
    copy = tmp_path / "victim"
    shutil.copytree(tiny["parts"]["victim"], copy)
    model = load_classifier(copy)
    with torch.no_grad():
        model.classifier.bias += 1.0  # changed in memory: the files no longer hold the driver's model
    runner = ShardRunner(in_process, threads=1, shard_size=SHARD)
    with rowwise.sharded(runner), pytest.raises(AtPatchError, match="differ from the driver's"):
        predict_plain(model, tiny["inputs"], BATCH, "plain")


@pytest.mark.parametrize("threads", [0, 1.5, True])
def test_a_runner_needs_a_thread_count(threads):
    with pytest.raises(ValueError, match="threads: expected a positive integer"):
        ShardRunner(in_process, threads=threads)
