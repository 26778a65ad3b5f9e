"""Counterfactuals, flip rate, debugging labels and group metrics on hand-made data."""

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atpatch.core.errors import AtPatchError, ShapeError
from atpatch.eval.fairness import (DEFINITIONS, SEX_SWAP, counterfactual, counterfactual_flip_rate,
                              counterfactuals_all_values, fault_token_labels, group_metrics, swap_mapping)

RACES = ["White", "Black", "Asian-Pac-Islander", "Amer-Indian-Eskimo", "Other"]

rows = st.fixed_dictionaries({
    "age": st.integers(17, 90),
    "sex": st.sampled_from(["Male", "Female"]),
    "race": st.sampled_from(RACES),
    "occupation": st.sampled_from(["Sales", "Tech-support", "Female", "Male"]),  # same strings, other column
})


@settings(max_examples=50, deadline=None)
@given(st.lists(rows, min_size=1, max_size=30))
def test_counterfactual_changes_only_the_protected_column(records):
    frame = pd.DataFrame(records)
    cf = counterfactual(frame, "sex", SEX_SWAP)
    assert list(cf.columns) == list(frame.columns) and cf.index.equals(frame.index)
    others = [c for c in frame.columns if c != "sex"]
    pd.testing.assert_frame_equal(cf[others], frame[others])
    assert (cf["sex"] != frame["sex"]).all()  # every row is swapped
    assert cf["sex"].map(SEX_SWAP).tolist() == frame["sex"].tolist()  # an involution
    pd.testing.assert_frame_equal(counterfactual(cf, "sex", SEX_SWAP), frame)
    assert frame["sex"].isin(["Male", "Female"]).all()  # the input was not modified in place


@settings(max_examples=50, deadline=None)
@given(st.lists(rows, min_size=1, max_size=30))
def test_race_swap_leaves_unmapped_values_and_other_columns(records):
    frame = pd.DataFrame(records)
    cf = counterfactual(frame, "race", swap_mapping("White", "Black"))
    pd.testing.assert_frame_equal(cf.drop(columns="race"), frame.drop(columns="race"))
    swapped = frame["race"].isin(["White", "Black"])
    assert (cf.loc[swapped, "race"] != frame.loc[swapped, "race"]).all()
    assert (cf.loc[~swapped, "race"] == frame.loc[~swapped, "race"]).all()
    for value, out in zip(RACES, counterfactuals_all_values(frame, "race", RACES)):
        assert (out["race"] == value).all()
        pd.testing.assert_frame_equal(out.drop(columns="race"), frame.drop(columns="race"))


def test_counterfactual_errors_name_the_attribute():
    frame = pd.DataFrame({"sex": ["Male"]})
    with pytest.raises(AtPatchError, match="'gender' not in the frame"):
        counterfactual(frame, "gender", SEX_SWAP)
    with pytest.raises(AtPatchError, match="empty mapping"):
        counterfactual(frame, "sex", {})


def test_flip_rate():
    pred = np.array([0, 1, 1, 0])
    assert counterfactual_flip_rate(pred, np.array([0, 0, 1, 1])) == 0.5
    assert counterfactual_flip_rate(pred, pred.copy()) == 0.0
    several = np.array([[0, 1, 1, 0], [0, 1, 0, 0]])  # input 2 flips in the second counterfactual only
    assert counterfactual_flip_rate(pred, several) == 0.25
    with pytest.raises(ShapeError):
        counterfactual_flip_rate(pred, np.array([0, 1]))


def test_fault_token_labels_hand_made():
    pred = np.array([1, 0, 1])
    pred_cf = np.array([0, 0, 1])  # only input 0 is discriminated
    labels = fault_token_labels(pred, pred_cf, position=7, n_tokens=9)
    assert labels.dtype == np.int8 and labels.shape == (3, 9)
    expected = np.zeros((3, 9), dtype=np.int8)
    expected[0, 7] = 1
    np.testing.assert_array_equal(labels, expected)
    both = fault_token_labels(pred, np.array([[1, 0, 1], [1, 1, 1]]), position=[6, 7], n_tokens=9)
    assert both.sum() == 2 and both[1, 6] == both[1, 7] == 1
    with pytest.raises(ShapeError, match="0 is CLS"):
        fault_token_labels(pred, pred_cf, position=0, n_tokens=9)


def test_group_metrics_match_a_hand_computation():
    y_true = np.array([1, 1, 0, 0, 1, 0, 0, 0])
    y_pred = np.array([1, 0, 1, 0, 1, 0, 0, 1])
    group = np.array(["M", "M", "M", "M", "F", "F", "F", "F"])
    # M: selection 2/4, accuracy 2/4, TPR 1/2, FPR 1/2.  F: selection 2/4, accuracy 3/4, TPR 1/1, FPR 1/3.
    got = group_metrics(y_true, y_pred, group)
    assert got["accuracy"] == pytest.approx(5 / 8)
    assert got["demographic_parity_difference"] == pytest.approx(0.0)
    assert got["equalized_odds_difference"] == pytest.approx(max(1 - 1 / 2, 1 / 2 - 1 / 3))
    assert got["by_group"]["M"] == pytest.approx({"count": 4, "selection_rate": 0.5, "accuracy": 0.5, "TPR": 0.5, "FPR": 0.5})
    assert got["by_group"]["F"] == pytest.approx({"count": 4, "selection_rate": 0.5, "accuracy": 0.75, "TPR": 1.0, "FPR": 1 / 3})
    assert json.loads(json.dumps(got, allow_nan=False)) == got  # plain, strict JSON


def test_group_metrics_undefined_rate_is_none_and_shapes_checked():
    got = group_metrics(np.array([0, 0, 1]), np.array([0, 1, 1]), np.array(["a", "a", "b"]))
    assert got["by_group"]["a"]["TPR"] is None  # no positives in group a
    json.dumps(got, allow_nan=False)
    with pytest.raises(ShapeError):
        group_metrics(np.array([0, 1]), np.array([0]), np.array(["a", "b"]))


def test_every_fairness_metric_has_a_definition():
    for key in ("accuracy", "counterfactual_flip_rate", "demographic_parity_difference", "equalized_odds_difference"):
        assert DEFINITIONS[key]
