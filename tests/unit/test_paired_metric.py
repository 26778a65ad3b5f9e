"""Trigger-caused flips: the paired attack metric (docs/metrics.md)."""

import numpy as np
import pytest

from atpatch.eval.metrics import attack_success_rate, trigger_caused_flips

TARGET = 1


def test_counts_only_inputs_the_trigger_moved_to_the_target():
    clean = np.array([0, 0, 0, 1, 1])  # the last two already land on the target without the trigger
    trig = np.array([1, 0, 0, 1, 1])
    assert trigger_caused_flips(clean, trig, TARGET) == pytest.approx(1 / 3)


def test_zero_when_the_trigger_changes_nothing_even_above_a_nonzero_floor():
    clean = np.array([1, 1, 0, 0])
    assert trigger_caused_flips(clean, clean.copy(), TARGET) == 0.0
    assert attack_success_rate(clean, np.zeros(4), TARGET) == 0.5  # ASR equals the floor


def test_the_floor_can_hide_flips_that_the_paired_metric_shows():
    """Two inputs flip to the target and two flip away: ASR equals the floor, the paired metric does not."""
    clean = np.array([1, 1, 0, 0, 0, 0])
    trig = np.array([0, 0, 1, 1, 0, 0])
    assert attack_success_rate(trig, np.zeros(6), TARGET) == attack_success_rate(clean, np.zeros(6), TARGET)
    assert trigger_caused_flips(clean, trig, TARGET) == 0.5


def test_rows_must_pair_up():
    with pytest.raises(ValueError, match="pair up"):
        trigger_caused_flips(np.zeros(3), np.zeros(4), TARGET)


def test_undefined_without_inputs_off_the_target():
    assert np.isnan(trigger_caused_flips(np.ones(3), np.ones(3), TARGET))
