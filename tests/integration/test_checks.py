"""The stored suites at the boundaries after generate: raw tables, extracted features, metrics. Each
bad input fails with one line naming the file, the expectation and its column, expected and got."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from atpatch.core.errors import DataValidationError
from atpatch.scenarios import checks

REPO = Path(__file__).resolve().parents[2]


def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


# ---------------------------------------------------------------- raw tables


def _adult_like(n=12):
    from atpatch.scenarios.data import adult

    rng = np.random.default_rng(0)
    frame = {c: rng.integers(1, 90, n) for c in adult.NUMERIC}
    frame.update({c: np.array(["a", "b"] * (n // 2), dtype=object) for c in adult.CATEGORICAL})
    import pandas as pd

    return pd.DataFrame({**frame, "label": np.arange(n) % 2})


def test_raw_table_passes_and_a_missing_column_fails():
    checks.raw_table("adult.csv", _adult_like(), "adult", None)
    with pytest.raises(DataValidationError) as err:
        checks.raw_table("adult.csv", _adult_like().drop(columns=["hours-per-week"]), "adult", None)
    msg = _one_line(err)
    assert msg.startswith("adult.csv: ") and "expect_table_columns_to_match_set" in msg and "'hours-per-week'" in msg


def test_raw_table_suites_hold_the_data_sets_columns():
    """The stored schema of each raw table is the data set's feature columns plus the label."""
    from atpatch.scenarios.data.tabular import LABEL, get_dataset
    from atpatch.scenarios.validation import load_suite

    for name, suite in checks.RAW_TABLE_SUITES.items():
        ds = get_dataset(name, where="test")
        (schema,) = [e for e in load_suite(suite)["expectations"] if e["type"] == "expect_table_columns_to_match_set"]
        assert set(ds.features) | {LABEL} <= set(schema["kwargs"]["column_set"]), name


# ---------------------------------------------------------------- features


def _features(n=6, k=5, layers=2, f=8):
    token_labels = torch.zeros(n, k, dtype=torch.int8)
    token_labels[: n // 2, 1] = 1
    return {"features": torch.rand(n, k, layers, f), "token_labels": token_labels, "candidate": torch.ones(n, k, dtype=torch.bool)}


def test_good_features_pass():
    checks.features("features.safetensors", _features(), 2, 8, None)


def test_a_nan_feature_fails_naming_the_file_and_column():
    tensors = _features()
    tensors["features"][4, 2, 1, 3] = float("nan")
    with pytest.raises(DataValidationError) as err:
        checks.features("data/x/features.safetensors", tensors, 2, 8, None)
    msg = _one_line(err)
    assert msg.startswith("data/x/features.safetensors: 1 expectation(s) failed")
    assert "column='finite'" in msg and "[False]" in msg and "[4]" in msg


def test_a_single_class_fails():
    tensors = _features()
    tensors["token_labels"].zero_()
    with pytest.raises(DataValidationError) as err:
        checks.features("features.safetensors", tensors, 2, 8, None)
    assert "expect_column_mean_to_be_between(column='has_fault')" in _one_line(err) and "got 0.0" in str(err.value)


def test_a_wrong_feature_shape_fails():
    with pytest.raises(DataValidationError, match="column='n_layers'"):
        checks.features("features.safetensors", _features(), 3, 8, None)


# ---------------------------------------------------------------- metrics


def test_the_committed_metrics_pass():
    checks.metrics("evaluate.json", json.loads((REPO / "metrics" / "vision-backdoor" / "evaluate.json").read_text()), None)


def test_a_rate_above_one_fails_naming_the_metric():
    report = {"unpatched": {"CA": 0.9, "ASR": 1.0}, "patched": {"two-pass": {"ASR": 1.3, "DER": -0.2}},
              "latency": {"clean_default_s": 0.01}}
    with pytest.raises(DataValidationError) as err:
        checks.metrics("metrics/s/evaluate.json", report, None)
    msg = _one_line(err)
    assert msg.startswith("metrics/s/evaluate.json: 1 expectation(s) failed")
    assert "column='rate'" in msg and "'max_value': 1.0" in msg and "patched.two-pass.ASR" in msg and "1.3" in msg


def test_the_placements_flip_rates_are_checked_as_rates():
    report = {"unpatched": {"CA": 0.9}, "oracle_flips": 0.0,
              "placements": {"start": {"control_flips": 0.01, "oracle_flips": 1.5}}}
    with pytest.raises(DataValidationError) as err:
        checks.metrics("evaluate.json", report, None)
    assert "placements.start.oracle_flips" in _one_line(err) and "control_flips" not in _one_line(err)


def test_a_negative_latency_fails():
    with pytest.raises(DataValidationError, match="column='seconds'"):
        checks.metrics("evaluate.json", {"unpatched": {"CA": 0.5}, "latency": {"clean_default_s": -1.0}}, None)


# ---------------------------------------------------------------- stored suites


def test_every_suite_a_boundary_runs_is_stored():
    """Deleting a suite's JSON turns this red (the stage would fail on it too)."""
    from atpatch.scenarios.validation import load_suite

    names = [name for suites in checks.STAGE_SUITES.values() for name in suites]
    stored = sorted(p.stem for p in (REPO / "gx" / "expectations").glob("*.json"))
    assert sorted(names) == stored
    for name in names:
        assert load_suite(name)["expectations"], name
