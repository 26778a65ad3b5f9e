"""MLflow tracking on embedded defaults: a SQLite store and an artifact folder inside the project.

Every stage run records its params, the seed, library versions and the git commit.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Iterator

from atpatch.core.errors import AtPatchError

EXPERIMENT = "atpatch"
LIBRARIES = ("torch", "transformers", "datasets", "mlflow", "prefect", "dvc", "great_expectations", "atpatch")


def project_root() -> Path:
    """The directory holding params.yaml (the working directory of every stage)."""
    return Path(os.environ.get("ATPATCH_ROOT", Path.cwd())).resolve()


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else sqlite:///<project>/mlflow.db."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def configure() -> None:
    """Point MLflow at the project's store and make sure the experiment exists."""
    import mlflow

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_registry_uri(tracking_uri())
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        # An embedded store keeps its artifacts in the project; a tracking server keeps them where it was
        # told to (`mlflow server --artifacts-destination`), where every client of the server finds them.
        served = tracking_uri().startswith(("http://", "https://"))
        artifacts = None if served else (project_root() / "mlartifacts").as_uri()
        mlflow.create_experiment(EXPERIMENT, artifact_location=artifacts)
    mlflow.set_experiment(EXPERIMENT)


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    """{'a': {'b': 1}} -> {'a.b': '1'} (MLflow params are flat strings)."""
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        out.update(flatten(value, f"{name}.") if isinstance(value, dict) else {name: str(value)})
    return out


def environment_tags() -> dict[str, str]:
    """Library versions and the git commit of the project."""
    from importlib.metadata import PackageNotFoundError, version

    tags = {}
    for lib in LIBRARIES:
        try:
            tags[f"version.{lib}"] = version(lib.replace("_", "-"))
        except PackageNotFoundError:
            tags[f"version.{lib}"] = "missing"
    try:
        # The commit of the code that runs (the package's checkout), not of the working directory,
        # which may be a pipeline workspace outside git.
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                                cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    tags["git_commit"] = commit
    return tags


@contextlib.contextmanager
def stage_run(stage: str, scenario: str, params: dict, seed: int) -> Iterator:
    """An MLflow run for one stage: params (flattened), seed, torch threads, versions and commit as tags."""
    import mlflow
    import torch

    configure()
    with mlflow.start_run(run_name=f"{scenario}:{stage}") as run:
        # The thread count in force: results depend on it (params.yaml `threads`).
        mlflow.set_tags({"stage": stage, "scenario": scenario, "seed": str(seed),
                         "torch_threads": str(torch.get_num_threads()), **environment_tags()})
        mlflow.log_params({**flatten(params), "seed": str(seed)})
        yield run


def log_report(path: str | Path, scenario: str, run_id: str | None = None) -> str:
    """Log the report file as an MLflow artifact (`reports/`) of `run_id`, or of a new run `<scenario>:report`.
    Returns the run id."""
    import mlflow

    path = Path(path)
    if not path.is_file():
        raise AtPatchError(f"{path}: report not found; build it first (atpatch report --scenario {scenario} --html)")
    configure()
    if run_id is not None:
        mlflow.MlflowClient().log_artifact(run_id, str(path), artifact_path="reports")
        return run_id
    with mlflow.start_run(run_name=f"{scenario}:report") as run:
        mlflow.set_tags({"stage": "report", "scenario": scenario})
        mlflow.log_artifact(str(path), artifact_path="reports")
        return run.info.run_id
