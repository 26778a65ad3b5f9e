"""The stored Great Expectations suites on small synthetic frames: generated image splits, the
runner's one-line errors, Data Docs."""

import json

import numpy as np
import pytest

from atpatch.core.errors import DataValidationError
from atpatch.scenarios.data.triggers import token_labels

SPEC = {"size": 4, "patch_size": 4, "image_size": 28, "min_overlap": 4}
G = {"trigger": {"size": 4, "kind": "badnets"}, "patch_size": 4, "target_label": 0, "debug": {"min_overlap": 4}}


def _run(split, cols, poison_rate=0.05, docs=None):
    from atpatch.scenarios import checks

    checks.image_splits("gen", {split: cols}, {**G, "poison_rate": poison_rate}, 28, docs)


def _clean(n=20):
    rng = np.random.default_rng(0)
    return {"image": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), "label": np.arange(n) % 10}


def _debug():
    xs = np.array([24, 24, -1, -1])
    ys = np.array([24, 24, -1, -1])
    return {"image": np.zeros((4, 28, 28), np.uint8), "label": np.array([1, 2, 3, 4]),
            "token_labels": token_labels(xs, ys, **SPEC), "triggered": np.array([True, True, False, False]),
            "part": np.array(["fit", "fit", "fit", "calib"]), "trigger_x": xs, "trigger_y": ys}


def test_good_split_passes():
    _run("test_clean", _clean())


def test_good_debug_split_passes():
    _run("debug", _debug())


def test_label_out_of_range_is_one_line_naming_split_expectation_and_value():
    cols = _clean()
    cols["label"][3] = 12
    with pytest.raises(DataValidationError) as err:
        _run("test_clean", cols)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("gen/test_clean: 1 expectation(s) failed")
    assert "expect_column_values_to_be_in_set(column='label')" in msg and "[12]" in msg


def test_nan_pixels_are_caught():
    cols = _clean()
    cols["image"] = cols["image"].astype(np.float32)
    cols["image"][5, 10, 10] = np.nan
    cols["image"][6] = np.nan  # a whole NaN image
    with pytest.raises(DataValidationError) as err:
        _run("test_clean", cols)
    msg = str(err.value)
    assert "column='pixel_has_nan'" in msg and "column='pixel_min'" in msg


def test_pixel_out_of_range_is_caught():
    cols = _clean()
    cols["image"] = cols["image"].astype(np.int16)
    cols["image"][0, 0, 0] = 300
    with pytest.raises(DataValidationError, match="column='pixel_max'"):
        _run("test_clean", cols)


def test_poison_rate_mismatch_is_caught():
    cols = _clean(100)
    cols["poisoned"] = np.zeros(100, bool)
    cols["poisoned"][:10] = True
    cols["label"][:10] = 0
    _run("train", dict(cols), poison_rate=0.1)
    with pytest.raises(DataValidationError, match=r"gen/train:.*expect_column_mean_to_be_between\(column='poisoned'\).*got 0.1"):
        _run("train", cols, poison_rate=0.05)


def test_target_label_in_triggered_split_is_caught():
    cols = _clean()
    cols.update(trigger_x=np.full(20, 24), trigger_y=np.full(20, 24))
    with pytest.raises(DataValidationError, match="gen/test_triggered:.*not_be_in_set"):
        _run("test_triggered", cols)


def test_inconsistent_token_labels_are_caught():
    cols = _debug()
    cols["token_labels"][0, 49] = 0
    cols["token_labels"][0, 48] = 1  # wrong patch
    cols["token_labels"][3, 10] = 1  # a clean row with a label
    with pytest.raises(DataValidationError) as err:
        _run("debug", cols)
    msg = str(err.value)
    assert "column='labels_consistent'" in msg and "column='clean_rows_zero'" in msg


def test_data_docs_render_the_failed_validation(tmp_path):
    cols = _clean()
    cols["label"][3] = 12
    with pytest.raises(DataValidationError):
        _run("test_clean", cols, docs=tmp_path / "docs")
    assert "generated.images" in (tmp_path / "docs" / "index.html").read_text()
    pages = sorted((tmp_path / "docs" / "validations" / "generated" / "images").rglob("*gen_test_clean.html"))
    assert pages and "label" in pages[-1].read_text()
    assert (tmp_path / "docs" / "expectations" / "generated" / "images.html").is_file()


def test_stored_suites_are_the_ones_that_run(tmp_path, monkeypatch):
    """The suites come from gx/expectations/*.json: a missing file is an error naming it, and an
    edited expectation changes what passes."""
    from atpatch.scenarios import validation

    monkeypatch.setattr(validation, "REPO", tmp_path)
    monkeypatch.setattr(validation, "_CONTEXT", None)  # a fresh context: no suite loaded yet
    with pytest.raises(DataValidationError, match=r"gx/expectations/generated.images.json: stored expectation suite"):
        _run("test_clean", _clean())
    (tmp_path / "gx" / "expectations").mkdir(parents=True)
    suite = {"name": "generated.images", "expectations": [
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "label", "value_set": [0]}}]}
    (tmp_path / "gx" / "expectations" / "generated.images.json").write_text(json.dumps(suite))
    with pytest.raises(DataValidationError, match="column='label'"):
        _run("test_clean", _clean())
