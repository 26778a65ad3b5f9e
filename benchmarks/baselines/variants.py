"""AtPatch variants: the shipped detector recalibrated or refit, patched classifiers built on it, and the cost
of AtPatch's one-off setup. Refits reuse the workspace's features of the debugging set."""

from __future__ import annotations

import copy
import time

import numpy as np
import torch

from .bench import Bench


def patcher(bench: Bench, det, mode: str | None = None, patch_layers="shipped", benign_value: str | None = None):
    """The victim patched with `det`; every setting not given is the shipped one (the register stage's)."""
    from atpatch.core.patched import PatchedClassifier

    s = bench.shipped
    layers = s["patch_layers"] if patch_layers == "shipped" else patch_layers
    return PatchedClassifier(bench.model, det, mode=mode or s["mode"], patch_layers=layers,
                             benign_value=benign_value or s["benign_value"])


def recalibrated(bench: Bench, fpr: float, min_threshold: float):
    """A copy of the shipped detector with its threshold set for `fpr` on the calibration part (no refit)."""
    det = copy.deepcopy(bench.det)
    feats = bench.features
    calib = feats["calib"].bool()
    x = feats["features"][:, :, det.config.layers]
    det.calibrate(x[calib], feats["candidate"][calib].bool(), fpr=fpr, min_threshold=min_threshold)
    return det


def detector_params(bench: Bench, **network) -> dict:
    """The workspace's train_detector params with `network` settings overridden."""
    p = copy.deepcopy(bench.flat["train_detector"])
    p["network"] = {**p["network"], **network}
    return p


def refit(bench: Bench, data: dict, p: dict):
    """A detector fit and calibrated on `data` (features) with params `p`: (detector, fit metrics, seconds)."""
    from atpatch.ops.patching import fit_detector

    t0 = time.perf_counter()
    det, metrics = fit_detector(data, p, bench.meta["model_type"], int(bench.meta["heads"]), bench.seed, bench.layout,
                                progress=False)
    return det, metrics, time.perf_counter() - t0


def subsample_fit(features: dict, n: int, seed: int) -> dict:
    """The features with the fit part cut to n inputs (stratified by triggered/faulty, seeded); calib kept."""
    calib, trig = features["calib"].bool().numpy(), features["triggered"].bool().numpy()
    fit = np.flatnonzero(~calib)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 5]))
    fit_t, fit_c = fit[trig[fit]], fit[~trig[fit]]
    n_t = min(len(fit_t), max(1, round(n * len(fit_t) / len(fit))))
    n_c = min(len(fit_c), n - n_t)
    keep = np.sort(np.concatenate([rng.choice(fit_t, n_t, replace=False), rng.choice(fit_c, n_c, replace=False),
                                   np.flatnonzero(calib)]))
    idx = torch.as_tensor(keep)
    return {k: v[idx] for k, v in features.items()}


def setup_cost(bench: Bench) -> dict:
    """AtPatch's one-off cost: extract the debugging set's features and fit + calibrate the detector, timed."""
    from atpatch.ops.patching import extract_features

    out = {}
    debug = bench.kind.debug_set(bench.flat, bench.model)
    t0 = time.perf_counter()
    feats, _ = extract_features(bench.model, debug["inputs"], bench.layout, int(bench.flat["extract"]["batch_size"]),
                                tuple(bench.flat["extract"]["kinds"]), progress=False)
    out["extract_seconds"] = time.perf_counter() - t0
    out["features_match_workspace"] = bool(torch.allclose(feats, bench.features["features"], atol=1e-4))
    det, metrics, seconds = refit(bench, bench.features, detector_params(bench))
    out["fit_seconds"] = seconds
    out["seconds"] = out["extract_seconds"] + seconds
    with torch.no_grad():
        x = bench.features["features"][:, :, det.config.layers]
        out["refit_max_score_diff_vs_shipped"] = float((det.score(x) - bench.det.score(x)).abs().max())
    out["refit_threshold"], out["shipped_threshold"] = det.config.threshold, bench.det.config.threshold
    return out
