"""Stage `generate` on a tiny slice of the real data, into a temp root."""

import copy
import hashlib
import importlib.util

import numpy as np
import pytest
from _fashion import REPO, fashion_dir

from atpatch.core.errors import AtPatchError, DataValidationError


def _stage():
    spec = importlib.util.spec_from_file_location("atpatch_stage_generate", REPO / "stages" / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _params(**trigger):
    return {
        "seed": 0,
        "scenario": "tiny",
        "kind": "vision-backdoor",
        "fetch": {"dest": str(fashion_dir())},  # absolute: the shared cache, whatever the root
        "generate": {
            "out": "out/generated",
            "trigger": {"kind": "badnets", "size": 4, "position": "corner", "pattern": "white",
                        "blend_alpha": 0.2, "blend_seed": 1, **trigger},
            "poison_rate": 0.05, "target_label": 0, "train_limit": 500, "test_limit": 200, "patch_size": 4,
            "debug": {"n_triggered": 20, "n_clean": 20, "n_calib": 30, "min_overlap": 4},
        },
    }


def _tree_hashes(path):
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def _load(root, split):
    from datasets import load_from_disk

    return load_from_disk(str(root / "out" / "generated" / split)).with_format("numpy")[:]


def test_generate_tiny(tmp_path):
    summary = _stage().main(root=tmp_path, params=_params())
    test_labels = _load(tmp_path, "test_clean")["label"]
    assert summary["rows"] == {"train": 500, "test_clean": 200, "test_triggered": int((test_labels != 0).sum()),
                               "debug": 70}
    train = _load(tmp_path, "train")
    assert train["poisoned"].sum() == round(0.05 * 500) == summary["poisoned"]
    assert (train["label"][train["poisoned"]] == 0).all()
    assert (train["image"][train["poisoned"]][:, 24:, 24:] == 255).all()
    trig = _load(tmp_path, "test_triggered")
    assert (trig["label"] != 0).all() and (trig["trigger_x"] == 24).all()
    debug = _load(tmp_path, "debug")
    assert debug["token_labels"].shape == (70, 50)
    assert debug["token_labels"][debug["triggered"]][:, 49].all()
    assert debug["token_labels"][~debug["triggered"]].sum() == 0
    assert (debug["part"] == "calib").sum() == 30


def test_generate_is_byte_identical(tmp_path):
    stage = _stage()
    stage.main(root=tmp_path / "a", params=_params(position="random"))
    stage.main(root=tmp_path / "b", params=_params(position="random"))
    a, b = _tree_hashes(tmp_path / "a" / "out"), _tree_hashes(tmp_path / "b" / "out")
    assert a == b and len(a) == 13  # 4 splits x 3 files + summary.json


def test_debug_rows_are_unpoisoned_training_images(tmp_path):
    _stage().main(root=tmp_path, params=_params())
    train, debug = _load(tmp_path, "train"), _load(tmp_path, "debug")
    clean = train["image"][~train["poisoned"]].reshape(-1, 784)
    rows = {r.tobytes() for r in clean}
    untriggered = debug["image"][~debug["triggered"]].reshape(-1, 784)
    assert all(r.tobytes() in rows for r in untriggered)


def test_validation_failure_keeps_previous_output(tmp_path, monkeypatch):
    stage = _stage()
    stage.main(root=tmp_path, params=_params())
    out = tmp_path / "out" / "generated"
    before = _tree_hashes(out)

    from atpatch.scenarios import vision

    real = vision.build_test_triggered

    def broken(*args, **kwargs):
        cols = real(*args, **kwargs)
        cols["label"] = cols["label"].copy()
        cols["label"][0] = 11  # out of range: must fail validation
        return cols

    monkeypatch.setattr(vision, "build_test_triggered", broken)
    with pytest.raises(DataValidationError, match=r"out/generated/test_triggered: 1 expectation\(s\) failed.*column='label'"):
        stage.main(root=tmp_path, params=_params(position="random"))
    assert _tree_hashes(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["generated"]  # no temp dirs left


def test_blend_debug_split_labels_every_patch(tmp_path):
    """Blend has no single trigger column: a triggered debugging image has every patch token labelled."""
    _stage().main(root=tmp_path, params=_params(kind="blend"))
    debug = _load(tmp_path, "debug")
    labels, triggered = debug["token_labels"], debug["triggered"]
    assert labels[triggered][:, 1:].all() and not labels[:, 0].any()
    assert labels[~triggered].sum() == 0 and (debug["trigger_x"][triggered] == -1).all()


def test_blend_needs_no_debug_split(tmp_path):
    stage = _stage()
    params = copy.deepcopy(_params(kind="blend"))
    params["generate"]["debug"] = None
    summary = stage.main(root=tmp_path, params=params)
    assert "debug" not in summary["rows"]
    trig = _load(tmp_path, "test_triggered")
    clean = _load(tmp_path, "test_clean")
    assert (trig["trigger_x"] == -1).all()
    diff = np.abs(trig["image"].astype(int) - clean["image"][clean["label"] != 0].astype(int))
    assert 0 < diff.max() <= 52  # blended everywhere, by at most alpha * 255
