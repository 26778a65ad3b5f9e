SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

# Every recipe sources scripts/env.sh (offline flags, caches inside the repo, Prefect settings).
ENV := . scripts/env.sh

.PHONY: setup run test test-cluster run-small

setup:
	./scripts/setup.sh

# The default scenario end to end; SCENARIO=text-backdoor (etc.) picks another.
SCENARIO ?= vision-backdoor

run: setup
	$(ENV) && .venv/bin/dvc repro register@$(SCENARIO)

# Headless Chromium for the report's render test (apt, needs root or sudo; without it that one test
# skips on a developer machine and fails in CI), the architecture contracts (pyproject.toml), the
# docs build (a broken link fails it), then every test but the real-cluster ones (marker `cluster`).
test: setup
	./scripts/install_chromium.sh || echo "make test: no Chromium; the report render test skips (fails in CI)"
	$(ENV) && .venv/bin/lint-imports && NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict -q && \
	  .venv/bin/python -m pytest -q --durations=25 -m "not cluster" tests

# The tests that start real `dask scheduler` / `dask worker` processes (sharded stages, a sweep that
# loses a worker): about 7 minutes on 2 cores. CI runs them after `make test`.
test-cluster: setup
	$(ENV) && .venv/bin/python -m pytest -q --durations=10 -m cluster tests

# The small profile (profiles/small.yaml) in its own DVC workspace .work/small: a few minutes on 2 cores.
run-small: setup
	$(ENV) && .venv/bin/atpatch run --profile small --scenario $(SCENARIO)
