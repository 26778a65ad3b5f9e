"""Register AtPatch patches in the MLflow Model Registry and load them back.

A registered patch is an MLflow pyfunc "model from code" (`atpatch/serving/pyfunc_model.py`) whose
artifacts are the victim (save_pretrained directory), the detector directory and patch.json. The
atpatch package itself travels with the model (`code_paths`), so a serving environment needs only
the pinned pip requirements.

Each model version carries the evaluation metrics it was registered with as tags
`metric.<name>` (e.g. `metric.patched.ASR`); the same values are logged as metrics on its source
run. The regression gate reads them from the current champion (`version_metrics`).

Typical use::

    from atpatch.ops.registry import load_patch
    patched = load_patch("models:/atpatch-vision-backdoor@champion")   # a PatchedClassifier
    out = patched(pixel_values=x)
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version as package_version
from pathlib import Path

from atpatch.core.errors import AtPatchError

PYFUNC_FILE = Path(__file__).parent / "serving" / "pyfunc_model.py"
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # src/atpatch: travels with the model
MODEL_NAME_IN_RUN = "patch"
METRIC_TAG = "metric."
PATCH_FIELDS = ("mode", "patch_layers", "benign_value", "input", "max_batch", "enabled")
MAX_BATCH = 1024  # rows per serving request (patch.json's max_batch default)
REQUIREMENTS = ("torch", "transformers", "safetensors", "numpy", "pandas", "mlflow")


def pip_requirements() -> list[str]:
    """Pinned requirements of a served patch: the installed versions, local suffix dropped (2.13.0+cpu -> 2.13.0)."""
    reqs = []
    for name in REQUIREMENTS:
        try:
            reqs.append(f"{name}=={package_version(name).split('+')[0]}")
        except PackageNotFoundError:
            reqs.append(name)
    return reqs


INPUT_KINDS = ("image", "text", "tabular")  # what serving/pyfunc_model.py decodes


def model_signature(columns=("image",)):
    """Input: the example's columns (`image`; `text`; one per feature), any type. Output: label,
    probabilities, flagged.

    The input columns are typed `Any` on purpose: MLflow's schema enforcement would otherwise answer bad
    pixels with its own conversion messages ("Can not safely convert float64 to int64"), while the
    pyfunc's `validate_frame` names the problem (NaN at pixel 5, 783 values instead of 784, ...) and
    also accepts 28x28 nested lists. MLflow still requires the column to be present.
    """
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, Array, ColSpec, Schema

    inputs = Schema([ColSpec(AnyType(), str(c)) for c in columns])
    outputs = Schema([ColSpec("long", "label"), ColSpec(Array("double"), "probabilities"),
                      ColSpec(Array("long"), "flagged")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def check_patch_config(config: dict) -> dict:
    """patch.json contents with defaults filled in; AtPatchError naming the field otherwise."""
    from atpatch.core.patched import BENIGN_VALUES, MODES

    config = {"patch_layers": None, "benign_value": "unified", "input": "image", "max_batch": MAX_BATCH,
              "enabled": True, **config}
    unknown = set(config) - set(PATCH_FIELDS)
    if unknown:
        raise AtPatchError(f"patch config: unknown fields {sorted(unknown)} (expected {list(PATCH_FIELDS)})")
    if config.get("mode") not in MODES:
        raise AtPatchError(f"patch config field 'mode': expected one of {MODES}, got {config.get('mode')!r}")
    if config["benign_value"] not in BENIGN_VALUES:
        raise AtPatchError(f"patch config field 'benign_value': expected one of {BENIGN_VALUES}, "
                           f"got {config['benign_value']!r}")
    if config["input"] not in INPUT_KINDS:
        raise AtPatchError(f"patch config field 'input': expected one of {INPUT_KINDS}, got {config['input']!r}")
    if not (isinstance(config["max_batch"], int) and not isinstance(config["max_batch"], bool)
            and config["max_batch"] >= 1):
        raise AtPatchError(f"patch config field 'max_batch': expected a positive integer, got {config['max_batch']!r}")
    if not isinstance(config["enabled"], bool):
        raise AtPatchError(f"patch config field 'enabled': expected true or false, got {config['enabled']!r}")
    layers = config["patch_layers"]
    if layers is not None and not (isinstance(layers, list) and all(isinstance(v, int) for v in layers)):
        raise AtPatchError(f"patch config field 'patch_layers': expected null or a list of ints, got {layers!r}")
    return config


def _client():
    from mlflow import MlflowClient

    from atpatch.ops.tracking import configure

    configure()
    return MlflowClient()


def _package_copy(dest: Path) -> Path:
    """A copy of the atpatch package without caches, to ship with the model (`code_paths`)."""
    target = dest / "atpatch"
    shutil.copytree(PACKAGE_DIR, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


def log_patch(victim_dir: str | Path, detector_dir: str | Path, patch_config: dict, model_name: str,
              input_example, metrics: dict | None = None):
    """Log the patch as a pyfunc model (in the active run, or a new one) and register it.

    victim_dir: save_pretrained directory; detector_dir: `Detector.save` directory; patch_config:
    {"mode", "patch_layers", "benign_value", "input", "max_batch" (rows per request, default 1024),
    "enabled" (default true; false serves the victim unpatched)}; input_example: DataFrame with column
    `image`; metrics: flat {name: number} attached to the version as tags `metric.<name>` and
    logged on the run. Returns the new mlflow ModelVersion.
    """
    import mlflow

    from atpatch.ops.tracking import configure

    victim_dir, detector_dir = Path(victim_dir), Path(detector_dir)
    for what, path in (("victim", victim_dir), ("detector", detector_dir)):
        if not path.is_dir():
            raise AtPatchError(f"log_patch: {what} directory {path} not found")
    config = check_patch_config(patch_config)
    configure()
    with tempfile.TemporaryDirectory(prefix="atpatch-register-") as tmp:
        tmp = Path(tmp)
        (tmp / "patch.json").write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
        code = _package_copy(tmp / "code")
        # Real copies: MLflow refuses artifacts reached through symlinks (a DVC link cache, a workspace).
        artifacts = {"patch": str(tmp / "patch.json")}
        for name, source in (("victim", victim_dir), ("detector", detector_dir)):
            artifacts[name] = str(shutil.copytree(source.resolve(), tmp / "artifacts" / name, symlinks=False))
        own_run = mlflow.active_run() is None
        run = mlflow.start_run(run_name=f"register:{model_name}") if own_run else mlflow.active_run()
        try:
            if metrics:
                mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME_IN_RUN, python_model=str(PYFUNC_FILE), artifacts=artifacts,
                code_paths=[str(code)], signature=model_signature(list(input_example.columns)), input_example=input_example,
                pip_requirements=pip_requirements(), registered_model_name=model_name,
            )
        finally:
            if own_run:
                mlflow.end_run()
    version = str(info.registered_model_version)
    tags = {f"{METRIC_TAG}{k}": repr(float(v)) for k, v in (metrics or {}).items()}
    tags.update({"patch.mode": config["mode"], "patch.benign_value": config["benign_value"],
                 "patch.input": config["input"], "source_run_id": run.info.run_id})
    tag_version(model_name, version, tags)
    return _client().get_model_version(model_name, version)


def set_alias(model_name: str, alias: str, version: str | int) -> None:
    """Point `alias` of registered model `model_name` at `version` (moves it if it exists)."""
    _client().set_registered_model_alias(model_name, alias, str(version))


def tag_version(model_name: str, version: str | int, tags: dict[str, str]) -> None:
    """Set tags on one model version (values as strings)."""
    client = _client()
    for key, value in tags.items():
        client.set_model_version_tag(model_name, str(version), key, str(value))


def get_alias_version(model_name: str, alias: str):
    """The ModelVersion that `alias` points at, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def version_metrics(model_version) -> dict[str, float]:
    """Metrics stored with a model version: its `metric.*` tags, else its source run's metrics."""
    tags = model_version.tags or {}
    out = {k[len(METRIC_TAG):]: float(v) for k, v in tags.items() if k.startswith(METRIC_TAG)}
    if out or not model_version.run_id:
        return out
    run = _client().get_run(model_version.run_id)
    return {k: float(v) for k, v in run.data.metrics.items() if not math.isnan(float(v))}


def _download(uri: str, dst: Path) -> Path:
    """Download the model at `uri` (models:/NAME/1, models:/NAME@alias, runs:/..., a path) into `dst`."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from atpatch.ops.tracking import configure

    configure()
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
    except MlflowException as exc:
        raise AtPatchError(f"{uri}: cannot download the model ({exc.message})") from exc


def _artifact_path(model_dir: Path, name: str) -> Path:
    """Local path of pyfunc artifact `name` inside a downloaded model directory (from its MLmodel)."""
    from mlflow.models import Model

    try:
        conf = Model.load(str(model_dir)).flavors["python_function"]
        rel = conf["artifacts"][name]["path"]
    except (KeyError, TypeError, OSError) as exc:
        raise AtPatchError(f"{model_dir}: not an AtPatch model (MLmodel has no pyfunc artifact {name!r})") from exc
    return model_dir / rel


def download_patch(uri: str, dst: Path) -> dict:
    """Download the registered patch at `uri` into `dst`: {"victim", "detector" (local directories),
    "config" (patch.json, checked)}."""
    from atpatch.ops.serving.pyfunc_model import read_patch_config

    model_dir = _download(uri, Path(dst))
    return {"victim": _artifact_path(model_dir, "victim"), "detector": _artifact_path(model_dir, "detector"),
            "config": read_patch_config(_artifact_path(model_dir, "patch"))}


def load_patch(uri: str):
    """The atpatch API: load a registered patch from `uri` and return a PatchedClassifier for in-process use.

    Unlike `mlflow.pyfunc.load_model`, this gives the torch module itself (logits, flags, scores).
    """
    from atpatch.ops.serving.pyfunc_model import build_patched

    with tempfile.TemporaryDirectory(prefix="atpatch-load-") as tmp:
        parts = download_patch(uri, Path(tmp))
        return build_patched(parts["victim"], parts["detector"], parts["config"])


def load_detector(uri: str):
    """The Detector of the registered patch at `uri`."""
    from atpatch.core.detector import Detector

    with tempfile.TemporaryDirectory(prefix="atpatch-load-") as tmp:
        model_dir = _download(uri, Path(tmp))
        return Detector.load(_artifact_path(model_dir, "detector"))
