"""Bootstrap intervals (atpatch.eval.uncertainty): the weighted DP/EO equal Fairlearn's, and the intervals
behave at the edges (no change, a full repair, unpaired inputs) and repeat under the same seed."""

from __future__ import annotations

import numpy as np
import pytest
from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

from atpatch.eval import uncertainty as U

RNG = np.random.default_rng(0)
N = 300
Y, PRED = RNG.integers(0, 2, N), RNG.integers(0, 2, N)
GROUP = RNG.choice(["a", "b", "c"], N)


def test_weighted_group_rates_equal_fairlearn_on_the_sample_itself():
    rates = U.group_rates(np.ones((1, N)), Y, PRED, GROUP)
    assert rates["dp_diff"][0] == pytest.approx(demographic_parity_difference(Y, PRED, sensitive_features=GROUP))
    assert rates["eo_diff"][0] == pytest.approx(equalized_odds_difference(Y, PRED, sensitive_features=GROUP))


def test_resamples_draw_n_rows_each_and_repeat_under_a_seed():
    w = U.resample_weights(N, 50, seed=3)
    assert w.shape == (50, N) and (w.sum(1) == N).all()
    assert np.array_equal(w, U.resample_weights(N, 50, seed=3)) and not np.array_equal(w, U.resample_weights(N, 50, seed=4))


def test_interval_brackets_the_bulk_and_ignores_nan():
    assert U.interval(np.arange(1001.0)) == pytest.approx([25.0, 975.0])
    assert U.interval([np.nan, np.nan]) is None


def test_no_change_gives_zero_width_intervals_and_a_full_repair_a_reduction_of_one():
    flipped = RNG.random(N) < 0.2
    same = U.fairness_intervals(Y, GROUP, PRED, flipped, PRED, flipped, n_boot=200, seed=0)
    assert same["CA_drop"] == [0.0, 0.0] and same["flip_rate_reduction"] == [0.0, 0.0]
    assert same["dp_diff_reduction"] == [0.0, 0.0] and same["eo_diff_reduction"] == [0.0, 0.0]
    fixed = U.fairness_intervals(Y, GROUP, PRED, flipped, PRED, np.zeros(N, bool), n_boot=200, seed=0)
    assert fixed["flip_rate_reduction"] == [1.0, 1.0]


def test_backdoor_interval_pairs_each_triggered_input_with_its_clean_self():
    trig = RNG.integers(0, 2, 100)
    out = U.backdoor_intervals(Y, PRED, PRED, trig, trig, target=1, n_boot=200, seed=0)
    assert out["ASR_over_floor"] == [0.0, 0.0] and out["CA_drop"] == [0.0, 0.0]
    all_target = U.backdoor_intervals(Y, PRED, PRED, np.ones(100, int), np.zeros(100, int), target=1, n_boot=50, seed=0)
    assert all_target["ASR_over_floor"] == [1.0, 1.0]
    with pytest.raises(ValueError, match="pair up: 100 vs 99"):
        U.backdoor_intervals(Y, PRED, PRED, trig, trig[:99], target=1, n_boot=10, seed=0)
