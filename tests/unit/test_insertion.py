"""The unseen-placement row: each flip rate comes from its own predictions, and the oracle patches the
placement's own trigger tokens (atpatch.eval.insertion)."""

from types import SimpleNamespace

import numpy as np
import pytest

from atpatch.eval import insertion
from atpatch.eval.evaluation import Predictions

TARGET = 1
CLEAN = np.array([0, 0, 0, 0, 1])  # the unpatched model without any insertion; the last row is already the target


@pytest.fixture
def moved():
    tokens = np.zeros((5, 4), dtype=bool)
    tokens[:, 0] = True  # this placement's trigger sits at column 0 (the main set's would be elsewhere)
    return {"x_trig": {"input_ids": np.full((5, 4), 7)}, "x_control": {"input_ids": np.full((5, 4), 8)},
            "tokens_trig": tokens}


@pytest.fixture
def fake_model(monkeypatch, moved):
    """Fixed predictions per call: unpatched triggered (all target), patched, control and oracle."""
    seen = {}

    def plain(model, inputs, batch, desc):
        trig = inputs is moved["x_trig"]
        return Predictions(np.array([1, 1, 1, 1, 1]) if trig else np.array([0, 1, 0, 0, 1]))

    def patched(p, inputs, batch, desc):
        return Predictions(np.array([1, 0, 0, 0, 1]), flagged=np.array([[True], [True], [True], [False], [True]]))

    def oracle(model, inputs, flags, benign, layers, batch):
        seen.update(flags=np.asarray(flags), benign=benign, layers=layers)
        return Predictions(np.array([0, 0, 0, 0, 1]))

    monkeypatch.setattr(insertion, "predict_plain", plain)
    monkeypatch.setattr(insertion, "predict_patched", patched)
    monkeypatch.setattr(insertion, "predict_oracle", oracle)
    return seen


def test_each_flip_rate_counts_its_own_predictions(fake_model, moved):
    shipped = SimpleNamespace(benign="benign table", patch_layers=(0, 2))
    row = insertion.placement_row(None, shipped, moved, CLEAN, TARGET, batch=2, n_boot=0, seed=0)
    assert row["flips_before"] == 1.0
    assert row["flips_after"] == pytest.approx(1 / 4)  # row 0: the patch left the trigger's flip
    assert row["control_flips"] == pytest.approx(1 / 4)  # row 1: inserting the neutral word flipped it
    assert row["oracle_flips"] == 0.0
    assert row["flagged_triggered"] == pytest.approx(4 / 5)


def test_the_oracle_patches_this_placements_trigger_tokens_as_the_shipped_patch_does(fake_model, moved):
    shipped = SimpleNamespace(benign="benign table", patch_layers=(0, 2))
    insertion.placement_row(None, shipped, moved, CLEAN, TARGET, batch=2, n_boot=0, seed=0)
    assert np.array_equal(fake_model["flags"], moved["tokens_trig"])
    assert fake_model["benign"] == "benign table" and fake_model["layers"] == (0, 2)


def test_inside_the_control_interval_needs_an_interval():
    assert insertion.inside_control_interval(0.2, {"control_ASR_interval": [0.15, 0.25]})
    assert not insertion.inside_control_interval(0.3, {"control_ASR_interval": [0.15, 0.25]})
    assert not insertion.inside_control_interval(0.2, {})  # no resamples: nothing to be inside
