#!/usr/bin/env bash
# Idempotent setup: the venv (torch CPU wheel first, then the package) and the raw data.
# Fast (about a second) when everything is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.atpatch-installed

if [[ ! -x $VENV/bin/python ]]; then
    echo "setup: creating $VENV"
    "$PY" -m venv "$VENV"
fi

# Reinstall when the venv is new or pyproject.toml changed since the last install.
if [[ ! -f $STAMP || pyproject.toml -nt $STAMP ]]; then
    # Exact pin first: it resolves to the CPU wheel; a range would pull a multi-GB CUDA build.
    "$VENV/bin/pip" install -q "torch==2.13.0"
    "$VENV/bin/pip" install -q -e ".[test]"
    touch "$STAMP"
fi

# Raw data: verified by sha256, downloaded only when missing or wrong.
"$VENV/bin/python" stages/fetch.py
