"""Stage `train_detector`: fit the contrastive detector, estimate u[l, h], calibrate per input.

Reads the extract features; fits on the "fit" part (triggered + clean inputs), estimates the
unified benign attention from benign tokens of clean fit inputs, sets the threshold on the
held-out clean "calib" part (and, with `recall_holdout` > 0, bounds it from above with a seeded
held-out share of the triggered inputs: `calibration_recall`), and writes detector.safetensors +
detector.json atomically.
"""

from __future__ import annotations

import json

import mlflow
from safetensors import safe_open
from safetensors.torch import load_file

from atpatch.core.errors import AtPatchError
from atpatch.core.features import TokenLayout
from atpatch.io import atomic_dir, write_json_atomic
from atpatch.ops.patching import fit_detector
from atpatch.scenarios import pin_threads, stage_params
from atpatch.ops.tracking import stage_run


def main(params: dict) -> None:
    p, seed = params["train_detector"], params["seed"]
    pin_threads(params)
    path = params["extract"]["out"]
    data = load_file(path)
    with safe_open(path, "pt") as fh:
        meta = fh.metadata()
    layout = TokenLayout.from_dict(json.loads(meta["layout"]))
    if not bool((data["token_labels"].bool() & data["candidate"].bool()).any()):
        raise AtPatchError(f"{path}: no token of the debugging set is labelled a fault (for a fairness scenario: "
                           "no debugging input's prediction changes under the counterfactual, so the victim "
                           "shows no measurable unfairness there); nothing to train a detector on")
    with stage_run("train_detector", params["scenario"], p, seed):
        det, metrics = fit_detector(data, p, meta["model_type"], int(meta["heads"]), seed, layout)
        mlflow.log_metrics(metrics)
        with atomic_dir(p["out"]) as tmp:
            det.save(tmp)
        write_json_atomic(p["metrics"], metrics)
    print({k: round(v, 4) for k, v in metrics.items()})


if __name__ == "__main__":
    main(stage_params(__doc__))
