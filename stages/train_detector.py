"""Stage `train_detector`: fit the contrastive detector, estimate u[l, h], calibrate per input.

Reads the extract features; fits on the "fit" part (triggered + clean inputs), estimates the
unified benign attention from benign tokens of clean fit inputs, sets the threshold on the
held-out clean "calib" part, and writes detector.safetensors + detector.json atomically.
"""

from __future__ import annotations

import json

import mlflow
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from atpatch.detector import Detector, DetectorConfig
from atpatch.features import TokenLayout, select_kind
from atpatch.io import atomic_dir, write_json_atomic
from atpatch.metrics import detection_metrics, input_flag_rate
from atpatch.patch import benign_attention
from atpatch.scenarios import stage_params
from atpatch.tracking import stage_run


def fit_detector(data: dict, p: dict, model_type: str, heads: int, layout: TokenLayout, seed: int) -> tuple[Detector, dict]:
    """Fit, estimate u and calibrate; return the detector and its training-side metrics."""
    feats, cand, labels = data["features"], data["candidate"], data["token_labels"].long()
    fit = ~data["calib"]
    n_layers = feats.shape[2]
    layers = list(range(n_layers)) if p["layers"] is None else list(p["layers"])
    config = DetectorConfig(layers=layers, heads=heads, kinds=list(p["kinds"]), model_type=model_type,
                            layout=layout.to_dict(), seed=seed, **p["network"])
    det = Detector(config)
    x = feats[:, :, layers]  # [N, K, L', F]
    mask = cand & fit[:, None]
    losses = det.fit(x[mask], labels[mask])
    clean_fit = fit & ~data["triggered"]
    mass = select_kind(feats[clean_fit], heads, tuple(p["kinds"]), "mean")  # [N, K, L, H]
    det.benign = benign_attention(mass, cand[clean_fit], labels[clean_fit])
    calib = data["calib"]
    det.calibrate(x[calib], cand[calib], fpr=p["calibration_fpr"], min_threshold=p["min_threshold"])
    scores = det.score(x[fit])
    metrics = {**losses, "threshold": det.config.threshold,
               "calib_input_flag_rate": det.config.calibration["flagged_rate"],
               **{f"fit_{k}": v for k, v in detection_metrics(
                   scores[cand[fit]].numpy(), labels[fit][cand[fit]].numpy(),
                   (scores > det.config.threshold)[cand[fit]].numpy()).items()},
               "fit_input_flag_rate_triggered": input_flag_rate(
                   ((scores > det.config.threshold) & cand[fit])[data["triggered"][fit]].numpy())}
    return det, metrics


def main(params: dict) -> None:
    p, seed = params["train_detector"], params["seed"]
    path = params["extract"]["out"]
    data = load_file(path)
    with safe_open(path, "pt") as fh:
        meta = fh.metadata()
    layout = TokenLayout.from_dict(json.loads(meta["layout"]))
    with stage_run("train_detector", params["scenario"], p, seed):
        det, metrics = fit_detector(data, p, meta["model_type"], int(meta["heads"]), layout, seed)
        mlflow.log_metrics(metrics)
        with atomic_dir(p["out"]) as tmp:
            det.save(tmp)
        write_json_atomic(p["metrics"], metrics)
    print({k: round(v, 4) for k, v in metrics.items()})


if __name__ == "__main__":
    main(stage_params(__doc__))
