"""Atomic writes and params loading."""

import pytest

from atpatch.core.errors import AtPatchError
from atpatch.io import atomic_dir, load_params, write_json_atomic


def test_atomic_dir_replaces_on_success_and_keeps_old_on_error(tmp_path):
    final = tmp_path / "out"
    with atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("1")
    assert (final / "a.txt").read_text() == "1"
    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("2")
        raise RuntimeError("boom")
    assert (final / "a.txt").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_write_json_atomic_is_stable(tmp_path):
    write_json_atomic(tmp_path / "m.json", {"b": 1, "a": [1, 2]})
    assert (tmp_path / "m.json").read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'


def test_load_params_missing_section_names_file_and_section(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("seed: 0\nfetch: {dest: x}\n")
    assert load_params("fetch", p) == {"dest": "x"}
    with pytest.raises(AtPatchError, match=r"params\.yaml: section 'train' is missing"):
        load_params("train", p)
    with pytest.raises(AtPatchError, match="not found"):
        load_params(path=tmp_path / "nope.yaml")


def test_atomic_dir_removes_temps_of_dead_writers_only(tmp_path):
    import os
    import subprocess

    from atpatch.io import atomic_dir

    proc = subprocess.Popen(["true"])  # a writer that has exited (reaped)
    proc.wait()
    stale = tmp_path / f".out.tmp-{proc.pid}-abc"
    stale.mkdir()
    (stale / "half").write_text("x")
    live = tmp_path / f".out.tmp-{os.getpid()}-zzz"  # this process: alive, kept
    live.mkdir()
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "f").write_text("new")
    assert not stale.exists() and live.is_dir()
    assert (tmp_path / "out" / "f").read_text() == "new"


def test_safetensors_bytes_are_the_same_whatever_order_safetensors_writes_the_metadata_in():
    import json
    import struct

    import torch
    from safetensors.torch import load, save

    from atpatch.io import safetensors_bytes

    tensors = {"features": torch.arange(6.0).reshape(2, 3), "mask": torch.tensor([True, False])}
    meta = {"kinds": "mean,max", "heads": "2", "model_type": "vit", "layout": json.dumps({"prefix": 1}), "é": "ü"}
    raw = {save(tensors, metadata=meta)[8:200] for _ in range(30)}
    stable = {safetensors_bytes(tensors, meta) for _ in range(30)}
    assert len(stable) == 1
    data = stable.pop()
    header = json.loads(data[8:8 + struct.unpack("<Q", data[:8])[0]])
    assert list(header["__metadata__"]) == sorted(meta) and header["__metadata__"] == meta
    loaded = load(data)
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())
    # The control: safetensors itself writes the keys in an order that varies (within a process too). Should a
    # safetensors release sort them, this fails, and atpatch.io.safetensors_bytes can go.
    assert len(raw) > 1, "safetensors now writes metadata in a stable order"
