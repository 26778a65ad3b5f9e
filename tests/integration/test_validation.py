"""Great Expectations suites on small synthetic splits."""

import numpy as np
import pytest

from atpatch.scenarios.data.triggers import token_labels
from atpatch.core.errors import DataValidationError

SPEC = {"size": 4, "patch_size": 4, "image_size": 28, "min_overlap": 4}


def _run(split, cols, **kw):
    from atpatch.scenarios.validation import expectations_for, split_frame, validate_split

    df = split_frame(cols, SPEC if split == "debug" else None)
    validate_split(split, df, expectations_for(split, df.columns, target_label=0, n_rows=len(df), **kw))


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


def test_label_out_of_range_names_split_and_expectation():
    cols = _clean()
    cols["label"][3] = 12
    with pytest.raises(DataValidationError) as err:
        _run("test_clean", cols)
    msg = str(err.value)
    assert "split 'test_clean'" in msg
    assert "expect_column_values_to_be_in_set(column='label'" in msg and "[12]" in msg


def test_nan_pixels_are_caught():
    cols = _clean()
    cols["image"] = cols["image"].astype(np.float32)
    cols["image"][5, 10, 10] = np.nan
    cols["image"][6] = np.nan  # a whole NaN image
    with pytest.raises(DataValidationError) as err:
        _run("test_clean", cols)
    msg = str(err.value)
    assert "split 'test_clean'" in msg
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
    cols["poison_label_ok"] = np.ones(100, bool)
    _run("train", dict(cols), poison_rate=0.1)
    with pytest.raises(DataValidationError, match=r"(?s)split 'train'.*expect_column_mean_to_be_between\(column='poisoned'.*observed"):
        _run("train", cols, poison_rate=0.05)


def test_target_label_in_triggered_split_is_caught():
    cols = _clean()
    cols.update(trigger_x=np.full(20, 24), trigger_y=np.full(20, 24))
    with pytest.raises(DataValidationError, match="(?s)split 'test_triggered'.*not_be_in_set"):
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
