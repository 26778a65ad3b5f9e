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
	$(ENV) && .venv/bin/atpatch run --profile small --scenario $(SCENARIO)
