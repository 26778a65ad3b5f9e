"""MLflow "model from code" for a registered AtPatch patch (victim + detector + patch.json).

MLflow executes this file when the model is loaded (`mlflow.pyfunc.load_model("models:/NAME@champion")`)
and takes the model object given to `mlflow.models.set_model` at the end. Artifacts:

- `victim`: a save_pretrained classifier directory (safetensors weights only);
- `detector`: a directory written by `Detector.save`;
- `patch`: patch.json, `{"mode", "patch_layers", "benign_value", "input", "max_batch", "enabled"}`
  (input kind: "image"; max_batch: most rows per request, default 1024; enabled: false serves the
  victim unpatched, as its user runs it, with no flags - the baseline of the load benchmark).

Input (by the patch's input kind): "image", a pandas DataFrame with one column `image`, each row a
list/array of 784 integers in 0..255 (a flattened 28x28 grayscale image, row-major); "text", one
column `text` of strings; "tabular", one column per feature of the victim (categorical values as
strings among the training categories, numeric ones as numbers within the training range; the
victim's config holds both). Output: a DataFrame with `label` (int),
`probabilities` (list of floats, softmax over classes) and `flagged` (list of flagged token
positions; position 0 is the CLS token, position 1 + r * (28 / patch) + c is patch (r, c)).

Over REST (`mlflow models serve`), POST /invocations with
`{"dataframe_split": {"columns": ["image"], "data": [[[...784 ints...]], ...]}}` (or
`dataframe_records` / `inputs`) answers `{"predictions": [{"label", "probabilities", "flagged"}, ...]}`.

Bad input: every problem found here raises `InvalidInput`, an `MlflowException` with error code
INVALID_PARAMETER_VALUE, which MLflow's scoring server answers with HTTP 400 and the message (any
other exception would become a 400 with a generic "unexpected error" message, or a 500). All
request checks live in `validate_frame`: the frame-level ones (type, empty, batch size, columns),
then the input kind's row decoder from `INPUT_KINDS`. A new input kind (text: a `text` column of
strings; tabular: one column per feature) adds a decoder + model-input builder there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

IMAGE_SIDE = 28
IMAGE_COLUMN = "image"
TEXT_COLUMN = "text"
MAX_TEXT_CHARS = 20_000  # longer texts are refused (the victim reads at most max_length tokens anyway)
PREDICT_BATCH = 256
MAX_BATCH = 1024  # default of patch.json's max_batch: rows per request


class InvalidInput(MlflowException, ValueError):
    """A request the model cannot answer, with a message naming the problem (HTTP 400 when served)."""

    def __init__(self, message: str):
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


# -- input kinds ------------------------------------------------------------------------------------
def image_rows(frame: pd.DataFrame) -> np.ndarray:
    """The `image` column as uint8 [N, 28, 28]; InvalidInput (a ValueError) naming the row and problem."""
    if not isinstance(frame, pd.DataFrame):
        raise InvalidInput(f"input: expected a pandas DataFrame with column {IMAGE_COLUMN!r}, got {type(frame).__name__}")
    if IMAGE_COLUMN not in frame.columns:
        raise InvalidInput(f"input: expected a column {IMAGE_COLUMN!r}, got columns {list(frame.columns)}")
    n_pixels = IMAGE_SIDE * IMAGE_SIDE
    out = np.empty((len(frame), n_pixels), dtype=np.uint8)
    for i, value in enumerate(frame[IMAGE_COLUMN].tolist()):
        where = f"input column {IMAGE_COLUMN!r}, row {i}"
        if value is None or np.isscalar(value) or isinstance(value, dict):
            raise InvalidInput(f"{where}: expected a list of {n_pixels} integers 0..255, got {_show(value)}")
        if np.asarray(value).dtype.kind == "b" or (isinstance(value, (list, tuple))
                                                    and any(isinstance(v, bool) for v in value)):
            raise InvalidInput(f"{where}: expected integers 0..255, got booleans")
        try:
            pixels = np.asarray(value, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidInput(f"{where}: expected {n_pixels} numbers 0..255, got non-numeric or ragged values "
                               f"({_show(exc)})") from None
        if pixels.size != n_pixels:
            raise InvalidInput(f"{where}: expected {n_pixels} values (a flattened {IMAGE_SIDE}x{IMAGE_SIDE} image), "
                               f"got {pixels.size}")
        if np.isnan(pixels).any():
            raise InvalidInput(f"{where}: NaN at pixel {int(np.flatnonzero(np.isnan(pixels))[0])}")
        if np.isinf(pixels).any():
            raise InvalidInput(f"{where}: infinite value at pixel {int(np.flatnonzero(np.isinf(pixels))[0])}")
        bad = np.flatnonzero((pixels < 0) | (pixels > 255) | (pixels != np.round(pixels)))
        if bad.size:
            raise InvalidInput(f"{where}: expected integers in 0..255, got {pixels[bad[0]]:g} at pixel {int(bad[0])}")
        out[i] = pixels.astype(np.uint8)
    return out.reshape(len(frame), IMAGE_SIDE, IMAGE_SIDE)


def image_inputs(images: np.ndarray, model=None) -> dict:
    """Decoded images [N, 28, 28] uint8 -> the victim's keyword inputs."""
    from atpatch.scenarios.models.vit import to_pixel_values

    return {"pixel_values": to_pixel_values(images, getattr(model, "config", None))}


def text_rows(frame: pd.DataFrame, model=None) -> list[str]:
    """The `text` column as strings of 1..MAX_TEXT_CHARS characters; InvalidInput naming the row otherwise.
    Longer token sequences than the victim's max_length are truncated, as in training."""
    out = []
    for i, value in enumerate(frame[TEXT_COLUMN].tolist()):
        where = f"input column {TEXT_COLUMN!r}, row {i}"
        if not isinstance(value, str):
            raise InvalidInput(f"{where}: expected a string, got {type(value).__name__} {_show(value)}")
        if not value.strip():
            raise InvalidInput(f"{where}: empty text")
        if len(value) > MAX_TEXT_CHARS:
            raise InvalidInput(f"{where}: {len(value)} characters, more than the limit of {MAX_TEXT_CHARS}")
        out.append(value)
    return out


def text_inputs(texts: list[str], model) -> dict:
    """Texts -> input_ids / attention_mask with the victim's own tokenizer and max_length."""
    from atpatch.scenarios.models.text import encode

    return encode(model.atpatch_tokenizer, texts, model.config.atpatch_max_length)


def tabular_columns(model) -> tuple[str, ...]:
    return (*model.config.categorical, *model.config.numeric)


def tabular_rows(frame: pd.DataFrame, model) -> pd.DataFrame:
    """Feature columns checked against what the victim saw in training (its config's encoding):
    categorical values among the column's training categories, numeric values finite numbers within
    the column's training range. InvalidInput naming the column, row, value and what is allowed."""
    config = model.config
    for c in config.categorical:
        allowed = config.vocab[c][1:]  # index 0 is the unknown token, never a valid input
        bad = [i for i, v in enumerate(frame[c].tolist()) if not isinstance(v, str) or v not in allowed]
        if bad:
            raise InvalidInput(f"input column {c!r}, row {bad[0]}: got {_show(frame[c].iloc[bad[0]])}, expected one "
                               f"of the categories the model was trained on: {_show(allowed, 400)}")
    for j, c in enumerate(config.numeric):
        values = pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        low, high = _training_range(config, j)
        bad = np.flatnonzero(~np.isfinite(values) | (values < low) | (values > high))
        if bad.size:
            value = frame[c].iloc[int(bad[0])]
            raise InvalidInput(f"input column {c!r}, row {int(bad[0])}: got "
                               f"{_show(value.item() if isinstance(value, np.generic) else value)}, "
                               f"expected a number in the training range [{low:g}, {high:g}]")
    return frame


def _training_range(config, j: int) -> tuple[float, float]:
    """Numeric column j's training range; any finite number for a victim that did not record it."""
    if config.num_min is None or config.num_max is None:
        return -np.inf, np.inf
    return config.num_min[j], config.num_max[j]


def tabular_inputs(frame: pd.DataFrame, model) -> dict:
    from atpatch.scenarios.models.tabular import encode_frame

    return encode_frame(frame, model.config)


@dataclass(frozen=True)
class InputKind:
    """How requests of one input kind are checked and turned into model inputs."""

    columns: Callable[[object], tuple[str, ...]]  # model -> the frame's columns, exactly
    decode: Callable[[pd.DataFrame, object], object]  # (frame, model) -> decoded rows; InvalidInput otherwise
    to_inputs: Callable[[object, object], dict]  # (decoded rows, model) -> keyword inputs of the model


INPUT_KINDS: dict[str, InputKind] = {
    "image": InputKind(columns=lambda model: (IMAGE_COLUMN,), decode=lambda f, model: image_rows(f),
                       to_inputs=image_inputs),
    "text": InputKind(columns=lambda model: (TEXT_COLUMN,), decode=text_rows, to_inputs=text_inputs),
    "tabular": InputKind(columns=tabular_columns, decode=tabular_rows, to_inputs=tabular_inputs),
}


def _show(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def validate_frame(frame, kind: str, max_batch: int = MAX_BATCH, model=None):
    """Every request check, in one place: the decoded rows of `frame` for input kind `kind`.

    Raises InvalidInput naming the problem: not a table, no rows, more than `max_batch` rows, missing
    or unexpected columns, then the kind's row checks (shape, dtype, range, NaN/inf).
    """
    if kind not in INPUT_KINDS:
        raise InvalidInput(f"input kind: expected one of {tuple(INPUT_KINDS)}, got {kind!r}")
    spec = INPUT_KINDS[kind]
    columns_expected = spec.columns(model)
    if isinstance(frame, dict):  # `{"inputs": {"image": [...]}}` reaches predict as a dict of columns
        try:
            frame = pd.DataFrame({k: list(v) if isinstance(v, (list, tuple, np.ndarray)) else [v]
                                  for k, v in frame.items()})
        except ValueError as exc:
            raise InvalidInput(f"input: columns of different lengths ({exc})") from None
    if not isinstance(frame, pd.DataFrame):
        raise InvalidInput(f"input: expected a table with columns {list(columns_expected)} (e.g. "
                           f"{{\"dataframe_split\": {{\"columns\": {list(columns_expected)}, \"data\": [...]}}}}), "
                           f"got {type(frame).__name__}")
    if len(frame) == 0:
        raise InvalidInput(f"input: empty, expected at least one row with columns {list(columns_expected)}")
    if len(frame) > max_batch:
        raise InvalidInput(f"input: {len(frame)} rows, more than this model's max_batch of {max_batch} per request; "
                           "split the batch")
    columns = [str(c) for c in frame.columns]
    if len(set(columns)) != len(columns):
        raise InvalidInput(f"input: duplicate column names {columns}")
    missing = [c for c in columns_expected if c not in columns]
    extra = [c for c in columns if c not in columns_expected]
    if missing or extra:
        raise InvalidInput(f"input: expected columns {list(columns_expected)}, got {columns}"
                           + (f" (missing {missing})" if missing else "") + (f" (unexpected {extra})" if extra else ""))
    frame = frame.copy()
    frame.columns = columns
    return spec.decode(frame, model)


# -- config and model -------------------------------------------------------------------------------
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
        raise ValueError(f"{path}: field 'input': expected one of {tuple(INPUT_KINDS)}, got {config['input']!r}")
    config.setdefault("patch_layers", None)
    config.setdefault("max_batch", MAX_BATCH)
    config.setdefault("enabled", True)
    if not (isinstance(config["max_batch"], int) and config["max_batch"] >= 1):
        raise ValueError(f"{path}: field 'max_batch': expected a positive integer, got {config['max_batch']!r}")
    if not isinstance(config["enabled"], bool):
        raise ValueError(f"{path}: field 'enabled': expected true or false, got {config['enabled']!r}")
    return config


def with_input_tools(model, victim_dir: str | Path, config: dict):
    """`model` with what its input kind needs to encode requests: a text victim's own tokenizer (its
    directory carries it)."""
    if config.get("input") == "text":
        from atpatch.scenarios.models.text import load_tokenizer

        model.atpatch_tokenizer = load_tokenizer(victim_dir)
    return model


def build_patched(victim_dir: str | Path, detector_dir: str | Path, config: dict):
    """A PatchedClassifier from a victim directory, a detector directory and a patch config."""
    from atpatch.core.detector import Detector
    from atpatch.scenarios.models.loading import load_classifier
    from atpatch.core.patched import PatchedClassifier

    model = with_input_tools(load_classifier(victim_dir), victim_dir, config)
    detector = Detector.load(detector_dir)
    return PatchedClassifier(model, detector, mode=config["mode"], patch_layers=config.get("patch_layers"),
                             benign_value=config["benign_value"])


class Unpatched:
    """The victim as its user runs it (default attention implementation), answering like a patch that
    never flags: the baseline served when patch.json says `"enabled": false`."""

    def __init__(self, victim_dir: str | Path):
        import torch
        from atpatch.core.features import model_output
        from atpatch.scenarios.models.loading import load_classifier

        self.model = load_classifier(victim_dir, attn_implementation="sdpa")
        self._output, self._torch = model_output, torch

    def __call__(self, **inputs):
        from types import SimpleNamespace

        logits = self._output(self.model(**inputs))
        flagged = self._torch.zeros(logits.shape[0], 0, dtype=self._torch.bool)
        return SimpleNamespace(logits=logits, flagged=flagged)


def _slice(inputs: dict, start: int, stop: int) -> dict:
    return {k: v[start:stop] for k, v in inputs.items()}


def predict_frame(patched, kind: str, frame: pd.DataFrame, batch: int = PREDICT_BATCH,
                  max_batch: int = MAX_BATCH) -> pd.DataFrame:
    """Check `frame` (validate_frame), run `patched` on it; return label / probabilities / flagged columns."""
    import torch

    model = getattr(patched, "model", None)
    rows = validate_frame(frame, kind, max_batch, model)
    inputs = INPUT_KINDS[kind].to_inputs(rows, model)
    n = len(next(iter(inputs.values())))
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
        victim = context.artifacts["victim"]
        if self.config["enabled"]:
            self.patched = build_patched(victim, context.artifacts["detector"], self.config)
        else:
            self.patched = Unpatched(victim)
        with_input_tools(self.patched.model, victim, self.config)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """DataFrame with column `image` -> DataFrame with `label`, `probabilities`, `flagged`."""
        return predict_frame(self.patched, self.config["input"], model_input, max_batch=self.config["max_batch"])


mlflow.models.set_model(AtPatchModel())
