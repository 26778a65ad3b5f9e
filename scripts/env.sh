# Environment defaults for every AtPatch command (sourced by the Makefile and scripts/setup.sh).
# Source from the repository root: paths are made absolute from $PWD.
# Values already set in the caller's environment win (${VAR:-default}).

_atpatch_root="${ATPATCH_ROOT:-$PWD}"

# The project venv first on PATH: dvc.yaml stages run `python ...`.
case ":$PATH:" in *":$_atpatch_root/.venv/bin:"*) ;; *) export PATH="$_atpatch_root/.venv/bin:$PATH" ;; esac

# Offline: no Hugging Face hub calls; caches stay inside the project.
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export TRANSFORMERS_OFFLINE="${TRANSFORMERS_OFFLINE:-1}"
export HF_DATASETS_OFFLINE="${HF_DATASETS_OFFLINE:-1}"
export HF_HOME="${HF_HOME:-$_atpatch_root/.cache/hf}"

# MLflow tries DNS for telemetry on import otherwise.
export MLFLOW_DISABLE_TELEMETRY="${MLFLOW_DISABLE_TELEMETRY:-true}"

# DVC: keep its site cache in the repo (absolute, so it works from any cwd).
export DVC_SITE_CACHE_DIR="${DVC_SITE_CACHE_DIR:-$_atpatch_root/.dvc/site_cache}"
export DVC_NO_ANALYTICS="${DVC_NO_ANALYTICS:-1}"

# Prefect: home inside the project (else ~/.prefect on import) and the ephemeral-server
# settings that stop three services fighting over the SQLite lock on 2 cores (STACK.md).
export PREFECT_HOME="${PREFECT_HOME:-$_atpatch_root/.prefect}"
export PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED="${PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED:-false}"
export PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED="${PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED:-false}"
export PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED="${PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED:-false}"
export PREFECT_SERVER_ANALYTICS_ENABLED="${PREFECT_SERVER_ANALYTICS_ENABLED:-false}"
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="${PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS:-90}"

unset _atpatch_root
