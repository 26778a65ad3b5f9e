SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

# Every recipe sources scripts/env.sh (offline flags, caches inside the repo, Prefect settings).
ENV := . scripts/env.sh

.PHONY: setup run test run-small

setup:
	./scripts/setup.sh

# The default scenario end to end; SCENARIO=text-backdoor (etc.) picks another.
SCENARIO ?= vision-backdoor

run: setup
	$(ENV) && .venv/bin/dvc repro register@$(SCENARIO)

test: setup
	$(ENV) && .venv/bin/python -m pytest -q tests

# The small profile (profiles/small.yaml) in its own DVC workspace .work/small: a few minutes on 2 cores.
run-small: setup
	$(ENV) && .venv/bin/python -m atpatch.workspace --profile small --dest .work/small >/dev/null && \
	  cd .work/small && ATPATCH_ROOT="$$PWD" DVC_SITE_CACHE_DIR="$$PWD/.dvc/site_cache" PREFECT_HOME="$$PWD/.prefect" \
	  MLFLOW_TRACKING_URI="sqlite:///$$PWD/mlflow.db" ../../.venv/bin/dvc repro register@$(SCENARIO)
