"""A test that needs an outside tool: on a developer machine without it the test skips, saying what to
install; in CI (environment variable CI set) it fails instead, since there a missing tool is breakage
that a skip would hide."""

from __future__ import annotations

import os

import pytest


def need(present: bool, what: str) -> None:
    if present:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI: {what} is missing", pytrace=False)
    pytest.skip(f"{what} is missing")
