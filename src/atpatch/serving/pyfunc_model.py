"""MLflow "model from code" for a registered AtPatch patch (victim + detector + patch.json).

MLflow executes this file when the model is loaded (`mlflow.pyfunc.load_model("models:/NAME@champion")`)
and takes the model object given to `mlflow.models.set_model` at the end. Artifacts:

- `victim`: a save_pretrained classifier directory (safetensors weights only);
- `detector`: a directory written by `Detector.save`;
- `patch`: patch.json, `{"mode", "patch_layers", "benign_value", "input"}` (input kind: "image").

Input: a pandas DataFrame with one column `image`; each row a list/array of 784 integers in
0..255 (a flattened 28x28 grayscale image, row-major). Output: a DataFrame with `label` (int),
`probabilities` (list of floats, softmax over classes) and `flagged` (list of flagged token
positions; position 0 is the CLS token, position 1 + r * (28 / patch) + c is patch (r, c)).
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

IMAGE_SIDE = 28
IMAGE_COLUMN = "image"
INPUT_KINDS = ("image",)
PREDICT_BATCH = 256


def read_patch_config(path: str | Path) -> dict:
    """Read and check patch.json; raise ValueError naming the file and field on a problem."""
    path = Path(path)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ValueError(f"{path}: patch config not found") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(config).__name__}")
    for key in ("mode", "benign_value", "input"):
        if key not in config:
            raise ValueError(f"{path}: field {key!r} is missing (fields present: {sorted(config)})")
    if config["input"] not in INPUT_KINDS:
        raise ValueError(f"{path}: field 'input': expected one of {INPUT_KINDS}, got {config['input']!r}")
    config.setdefault("patch_layers", None)
    return config


def image_rows(frame: pd.DataFrame) -> np.ndarray:
    """The `image` column as uint8 [N, 28, 28]; ValueError naming the row and problem otherwise."""
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"input: expected a pandas DataFrame with column {IMAGE_COLUMN!r}, got {type(frame).__name__}")
    if IMAGE_COLUMN not in frame.columns:
        raise ValueError(f"input: expected a column {IMAGE_COLUMN!r}, got columns {list(frame.columns)}")
    n_pixels = IMAGE_SIDE * IMAGE_SIDE
    out = np.empty((len(frame), n_pixels), dtype=np.uint8)
    for i, value in enumerate(frame[IMAGE_COLUMN].tolist()):
        where = f"input column {IMAGE_COLUMN!r}, row {i}"
        if value is None or np.isscalar(value):
            raise ValueError(f"{where}: expected a list of {n_pixels} integers 0..255, got {value!r}")
        try:
            pixels = np.asarray(value, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: expected {n_pixels} numbers 0..255, got non-numeric values ({exc})") from exc
        if pixels.size != n_pixels:
            raise ValueError(f"{where}: expected {n_pixels} values (a flattened {IMAGE_SIDE}x{IMAGE_SIDE} image), "
                             f"got {pixels.size}")
        if np.isnan(pixels).any():
            raise ValueError(f"{where}: NaN at pixel {int(np.flatnonzero(np.isnan(pixels))[0])}")
        bad = np.flatnonzero((pixels < 0) | (pixels > 255) | (pixels != np.round(pixels)))
        if bad.size:
            raise ValueError(f"{where}: expected integers in 0..255, got {pixels[bad[0]]:g} at pixel {int(bad[0])}")
        out[i] = pixels.astype(np.uint8)
    return out.reshape(len(frame), IMAGE_SIDE, IMAGE_SIDE)


def to_model_inputs(kind: str, frame: pd.DataFrame) -> dict:
    """Validated DataFrame -> keyword inputs of the patched model, by input kind (only "image" so far)."""
    if kind == "image":
        from atpatch.models.vit import to_pixel_values

        return {"pixel_values": to_pixel_values(image_rows(frame))}
    raise ValueError(f"input kind: expected one of {INPUT_KINDS}, got {kind!r}")


def build_patched(victim_dir: str | Path, detector_dir: str | Path, config: dict):
    """A PatchedClassifier from a victim directory, a detector directory and a patch config."""
    from atpatch.detector import Detector
    from atpatch.models.loading import load_classifier
    from atpatch.patched import PatchedClassifier

    model = load_classifier(victim_dir)
    detector = Detector.load(detector_dir)
    return PatchedClassifier(model, detector, mode=config["mode"], patch_layers=config.get("patch_layers"),
                             benign_value=config["benign_value"])


def _slice(inputs: dict, start: int, stop: int) -> dict:
    return {k: v[start:stop] for k, v in inputs.items()}


def predict_frame(patched, kind: str, frame: pd.DataFrame, batch: int = PREDICT_BATCH) -> pd.DataFrame:
    """Run `patched` on a validated input frame; return label / probabilities / flagged columns."""
    import torch

    inputs = to_model_inputs(kind, frame)
    n = len(frame)
    labels, probs, flagged = [], [], []
    with torch.no_grad():
        for start in range(0, n, batch):
            out = patched(**_slice(inputs, start, start + batch))
            p = torch.softmax(out.logits.float(), dim=-1)
            labels.extend(int(v) for v in p.argmax(-1).tolist())
            probs.extend(row for row in p.tolist())
            flagged.extend([int(k) for k in torch.nonzero(row).flatten().tolist()] for row in out.flagged)
    return pd.DataFrame({"label": pd.Series(labels, dtype="int64"), "probabilities": probs, "flagged": flagged})


class AtPatchModel(mlflow.pyfunc.PythonModel):
    """The patched classifier as an MLflow pyfunc model."""

    def load_context(self, context) -> None:
        """Load the victim, the detector and patch.json from the model's artifacts."""
        self.config = read_patch_config(context.artifacts["patch"])
        self.patched = build_patched(context.artifacts["victim"], context.artifacts["detector"], self.config)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """DataFrame with column `image` -> DataFrame with `label`, `probabilities`, `flagged`."""
        return predict_frame(self.patched, self.config["input"], model_input)


mlflow.models.set_model(AtPatchModel())
