"""Project conventions, written once: scenario and profile names, where each stage writes, the
registered model's name and aliases, and the environment every AtPatch command runs in.

Everything else (stages, the CLI, reports, the registry, flows, scripts/env.sh, the Makefile through
the CLI) imports these names instead of spelling them again. Standard library only: scripts/env.sh
runs this file with the system Python before the project's venv exists (`conventions.py shell`).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

PARAMS_FILE = "params.yaml"
DEFAULT_SCENARIO = "vision-backdoor"
DEFAULT_PROFILE = "default"          # the repository's own params.yaml, run in place
PROFILES_DIR = "profiles"            # profiles/<name>.yaml: overrides merged over params.yaml
WORKSPACES_DIR = ".work"             # .work/<profile>: the DVC workspace of a non-default profile
REPORTS_DIR = "reports"              # HTML reports and `atpatch inspect` pictures
SUITES_DIR = "gx/expectations"       # Great Expectations suites, one JSON file per suite (in the repository)
DATA_DOCS_DIR = f"{REPORTS_DIR}/data_docs"  # Data Docs: <scenario>/<stage>/index.html under a project root
VALIDATED_STAGES = ("generate", "extract", "evaluate")  # the stages that run stored suites (Data Docs each)

# Where each stage writes, per scenario `{s}`; dvc.yaml declares the same paths with ${key}.
DATA_DIR = "data/{s}"
METRICS_DIR = "metrics/{s}"
# One small JSON of headline numbers per scenario, alone in its folder: dvc.yaml's top-level
# `metrics:` points at the folder, so `dvc metrics show` is one short row per scenario that has run.
HEADLINE_DIR = "metrics/headline"
PLOTS_DIR = "plots"                  # plots/<scenario>/: dvc.yaml's top-level `plots:` draws them all
OUT_PATHS = {
    "generate": f"{DATA_DIR}/generated",
    "train_victim": f"{DATA_DIR}/victim",
    "extract": f"{DATA_DIR}/features.safetensors",
    "train_detector": f"{DATA_DIR}/detector",
    "evaluate": f"{METRICS_DIR}/evaluate.json",
    "gate": f"{METRICS_DIR}/gate.json",
    "register": f"{METRICS_DIR}/register.json",
}
EXTRA_PATHS = {("train_detector", "metrics"): f"{METRICS_DIR}/detector.json",
               ("evaluate", "plots"): f"{PLOTS_DIR}/{{s}}",
               ("evaluate", "headline"): f"{HEADLINE_DIR}/{{s}}.json"}
# The JSON reports a scenario's metrics folder can hold (`atpatch report` reads them).
REPORT_FILES = ("evaluate", "gate", "register", "detector")

# Scenario kinds: the module that knows a kind's data, victim and metrics.
KIND_MODULES = {
    "vision-backdoor": "atpatch.scenarios.vision",
    "text-backdoor": "atpatch.scenarios.text_backdoor",
    "tabular-fairness": "atpatch.scenarios.tabular",
    "text-fairness": "atpatch.scenarios.text_fairness",
}
FAIRNESS_KINDS = ("tabular-fairness", "text-fairness")

CHALLENGER_ALIAS = "challenger"      # every registered version that was evaluated
CHAMPION_ALIAS = "champion"          # only a version that passed the gate

# Prefect: the flows, the work pool their deployments use, the nightly schedule.
PIPELINE_FLOW = "atpatch-pipeline"
NIGHTLY_FLOW = "atpatch-nightly-reevaluate"
SWEEP_FLOW = "atpatch-sweep"         # benchmark cells (scenario x seed x variant) as tasks on Dask
WORK_POOL = "atpatch"                # a pool of type process
NIGHTLY_CRON = "0 3 * * *"
SHARDED_FLOW = "atpatch-sharded"     # a stage's passes over its inputs, sharded over Dask workers


def out_path(stage: str, scenario: str) -> str:
    """The output of `stage` for `scenario`, relative to the project root."""
    return OUT_PATHS[stage].format(s=scenario)


def report_path(scenario: str, name: str) -> str:
    """metrics/<scenario>/<name>.json, `name` one of REPORT_FILES."""
    return f"{METRICS_DIR}/{name}.json".format(s=scenario)


def plots_dir(scenario: str) -> str:
    return EXTRA_PATHS[("evaluate", "plots")].format(s=scenario)


def html_report(scenario: str) -> str:
    return f"{REPORTS_DIR}/{scenario}.html"


def data_docs_index(scenario: str, stage: str) -> str:
    """The Data Docs page of the validations one stage ran for `scenario` (relative to the project root)."""
    return f"{DATA_DOCS_DIR}/{scenario}/{stage}/index.html"


def raw_dir(source: str) -> str:
    """Where stage fetch@<source> puts a raw data source."""
    return f"data/raw/{source}"


def model_name(scenario: str) -> str:
    """The registered model of a scenario."""
    return f"atpatch-{scenario}"


def deployment_name(scenario: str, profile: str = DEFAULT_PROFILE) -> str:
    """The nightly deployment of a scenario: `<scenario>`, or `<scenario>-<profile>` for another profile."""
    return scenario if profile == DEFAULT_PROFILE else f"{scenario}-{profile}"


def artifact_key(scenario: str) -> str:
    """The Prefect artifact key of a scenario's metrics and gate summary (lowercase, digits, dashes only)."""
    return f"{scenario.lower().replace('_', '-')}-metrics"


def profile_file(profile: str, root: str | Path = ".") -> Path:
    return Path(root) / PROFILES_DIR / f"{profile}.yaml"


def workspace_dir(profile: str, root: str | Path = ".") -> Path:
    return Path(root) / WORKSPACES_DIR / profile


# -- environment ------------------------------------------------------------------------------------
# Fixed settings: offline Hugging Face, no telemetry, and the Prefect ephemeral-server settings that
# stop three services fighting over the SQLite lock on 2 cores.
ENV_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}


def project_env(root: str | Path, stores: bool = False) -> dict[str, str]:
    """Settings that live inside a project (or workspace) folder: caches and Prefect home; with
    `stores`, also the project root and MLflow store (left unset otherwise: atpatch.ops.tracking then
    derives them from the working directory, and a caller's own tracking server is kept)."""
    root = Path(root).resolve()
    env = {"HF_HOME": str(root / ".cache" / "hf"), "DVC_SITE_CACHE_DIR": str(root / ".dvc" / "site_cache"),
           "PREFECT_HOME": str(root / ".prefect")}
    if stores:
        env.update({"ATPATCH_ROOT": str(root), "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"})
    return env


def environment(root: str | Path, base: dict | None = None, isolate: bool = False,
                bindir: str | Path | None = None) -> dict[str, str]:
    """The environment of a command run in project `root`: `base` (default os.environ) with every
    default it lacks. Values already in `base` win, except with `isolate`: then the project's caches
    and stores replace them (a workspace never writes into another project's MLflow store). `bindir` (default: the running interpreter's) goes first on PATH: dvc.yaml runs `python`."""
    env = dict(os.environ if base is None else base)
    for key, value in ENV_DEFAULTS.items():
        env.setdefault(key, value)
    for key, value in project_env(root, stores=isolate).items():
        if isolate:
            env[key] = value
        else:
            env.setdefault(key, value)
    bindir = str(bindir or Path(sys.executable).parent)
    if bindir not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


def shell_exports(root: str | Path, base: dict | None = None) -> str:
    """`export K=V` lines for what environment() adds or changes (scripts/env.sh evaluates them)."""
    base = dict(os.environ if base is None else base)
    env = environment(root, base, bindir=Path(root).resolve() / ".venv" / "bin")
    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items() if base.get(k) != v)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "shell":
        sys.exit("usage: conventions.py shell PROJECT_ROOT")
    print(shell_exports(sys.argv[2]))
