#!/usr/bin/env bash
# Idempotent: make headless Chromium available for the HTML report's render test
# (tests/integration/test_report.py). Does nothing when a chromium binary is already on PATH.
# Needs root (or sudo) and access to Debian's package mirror; CI calls it before `make test`.
set -euo pipefail

for bin in chromium chromium-browser google-chrome; do
    if command -v "$bin" >/dev/null 2>&1; then
        echo "install_chromium: $(command -v "$bin") present ($("$bin" --version 2>/dev/null || echo 'version unknown'))"
        exit 0
    fi
done

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
        echo "install_chromium: not root and no sudo; install Debian package 'chromium' by hand" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
echo "install_chromium: installed $(chromium --version)"
