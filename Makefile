SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

# Every recipe sources scripts/env.sh (offline flags, caches inside the repo, Prefect settings).
ENV := . scripts/env.sh

.PHONY: setup run test

setup:
	./scripts/setup.sh

run: setup
	$(ENV) && .venv/bin/dvc repro

test: setup
	$(ENV) && .venv/bin/python -m pytest -q tests
