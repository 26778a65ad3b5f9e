"""Bootstrap intervals for the evaluate reports: how far a number could move with another test sample.

A target like "DP reduced by 50%" or "ASR within 0.5 points of the floor" is judged on one test
split; these intervals say whether a miss (or a pass) is larger than the split's own sampling noise.
Rows are resampled with replacement (`n_boot` times, seeded); each interval is the percentile
interval at `level`. Paired: before and after are always computed on the same resampled rows.

Demographic parity and equalized odds are recomputed here with weighted counts, one matrix product
per statistic for all resamples at once: Fairlearn's functions take ~0.1 s per call, so 1,000
resamples would take minutes. `group_rates` equals Fairlearn on the unweighted sample (tested).
"""

from __future__ import annotations

import numpy as np

LEVEL = 0.95
RESAMPLES = 1000  # evaluate.bootstrap when the params do not say


def resamples(params: dict) -> int:
    """`evaluate.bootstrap`: resamples per interval (0 or null: no intervals)."""
    return int((params.get("evaluate") or {}).get("bootstrap", RESAMPLES) or 0)


def resample_weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n] multiplicities: how often each of the n rows is drawn in each resample."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, n]))
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def interval(values: np.ndarray, level: float = LEVEL) -> list[float] | None:
    """Percentile interval of the finite values (None when there are none)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return None
    lo, hi = np.percentile(v, [50 * (1 - level), 50 * (1 + level)])
    return [float(lo), float(hi)]


def weighted_mean(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Per resample, the weighted mean of x [n] (nan where the weights sum to 0)."""
    total = w.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w @ np.asarray(x, dtype=np.float64)) / total


def group_rates(w: np.ndarray, y: np.ndarray, pred: np.ndarray, sensitive: np.ndarray) -> dict[str, np.ndarray]:
    """Per resample, DP difference and EO difference of binary predictions (as Fairlearn defines them:
    largest gap in selection rate between groups; the larger of the largest TPR gap and FPR gap)."""
    y, pred, sensitive = np.asarray(y), np.asarray(pred), np.asarray(sensitive)
    groups = [sensitive == g for g in np.unique(sensitive)]
    select = np.stack([weighted_mean(w * m, pred) for m in groups])  # [G, B]
    tpr = np.stack([weighted_mean(w * (m & (y == 1)), pred) for m in groups])
    fpr = np.stack([weighted_mean(w * (m & (y == 0)), pred) for m in groups])

    def gap(rates: np.ndarray) -> np.ndarray:
        return np.nanmax(rates, 0) - np.nanmin(rates, 0)

    return {"dp_diff": gap(select), "eo_diff": np.maximum(gap(tpr), gap(fpr))}


def reduction(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """(before - after) / before per resample; nan where before is 0 (as `fairness_eval.reductions`: None)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(before > 0, (before - after) / before, np.nan)


def fairness_intervals(y, sensitive, base_pred, base_flipped, pred, flipped, n_boot: int, seed: int) -> dict:
    """Intervals of the accuracy drop and the relative reductions of flip rate, DP and EO (one attribute)."""
    y = np.asarray(y)
    w = resample_weights(len(y), n_boot, seed)
    before, after = group_rates(w, y, base_pred, sensitive), group_rates(w, y, pred, sensitive)
    ca_drop = weighted_mean(w, np.asarray(base_pred) == y) - weighted_mean(w, np.asarray(pred) == y)
    flip = reduction(weighted_mean(w, base_flipped), weighted_mean(w, flipped))
    return {"n_boot": n_boot, "level": LEVEL, "CA_drop": interval(ca_drop), "flip_rate_reduction": interval(flip),
            **{f"{m}_reduction": interval(reduction(before[m], after[m])) for m in ("dp_diff", "eo_diff")}}


def backdoor_intervals(y_clean, base_clean, clean, trig_non_target, floor_non_target, target: int,
                       n_boot: int, seed: int) -> dict:
    """Intervals of the CA drop (clean test rows) and of patched ASR minus the ASR floor.

    trig_non_target / floor_non_target: predictions on the triggered inputs and on the same inputs
    without the trigger (the unpatched model), row for row, so the floor is resampled with its pair.
    """
    y_clean = np.asarray(y_clean)
    trig, floor = np.asarray(trig_non_target), np.asarray(floor_non_target)
    if len(trig) != len(floor):
        raise ValueError(f"triggered and floor predictions must pair up: {len(trig)} vs {len(floor)}")
    w = resample_weights(len(y_clean), n_boot, seed)
    ca_drop = weighted_mean(w, np.asarray(base_clean) == y_clean) - weighted_mean(w, np.asarray(clean) == y_clean)
    wt = resample_weights(len(trig), n_boot, seed + 1)
    over = weighted_mean(wt, trig == target) - weighted_mean(wt, floor == target)
    return {"n_boot": n_boot, "level": LEVEL, "CA_drop": interval(ca_drop), "ASR_over_floor": interval(over)}
