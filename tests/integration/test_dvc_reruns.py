"""Changing one declared input makes DVC call exactly the stages that read it out of date.

A scratch DVC project holds the repository's dvc.yaml, params.yaml, stages/, src/ and gx/, with stand-in
outputs for one scenario recorded in dvc.lock (`dvc commit`); each case changes one input and reads
`dvc status`: the stages whose own inputs changed (downstream ones then rerun on their changed deps)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
S = "vision-backdoor"
STAGES = ["generate", "train_victim", "extract", "train_detector", "evaluate", "gate", "register"]
OUT_FILES = ["data/raw/fashion-mnist/x", f"data/{S}/generated/x", f"data/{S}/victim/x", f"data/{S}/features.safetensors",
             f"data/{S}/detector/x", f"metrics/{S}/detector.json", f"metrics/{S}/evaluate.json", f"plots/{S}/roc.csv",
             f"plots/{S}/before_after.png", f"plots/{S}/attention_maps.png", f"plots/{S}/roc.png",
             f"metrics/{S}/gate.json", f"metrics/{S}/register.json", f"metrics/headline/{S}.json"]


def dvc(project: Path, *args: str) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(project / ".dvc" / "site_cache")}
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=project, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dvc-reruns")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, root / name)
    for name in ("stages", "src", "gx"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for rel in OUT_FILES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("stand-in\n")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc(root, "init", "-q")
    dvc(root, "commit", "-f", "-q", "fetch@fashion-mnist", *[f"{s}@{S}" for s in STAGES])
    return root


def changed_stages(project: Path) -> set[str]:
    status = json.loads(dvc(project, "status", "--json", *[f"{s}@{S}" for s in STAGES]) or "{}")
    return {name.split("@")[0] for name, entries in status.items()
            if any("changed deps" in e for e in entries if isinstance(e, dict))}


def edit_params(project: Path, change) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    change(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


CASES = {
    "benign value (defaults.patch)": (lambda p: p["defaults"]["patch"].update(benign_value="zero"),
                                     {"evaluate", "gate", "register"}),
    "calibration (scenario train_detector)": (lambda p: p["scenarios"][S]["train_detector"].update(calibration_fpr=0.01),
                                             {"train_detector"}),
    "a debug-set size (scenario generate)": (lambda p: p["scenarios"][S]["generate"]["debug"].update(n_calib=10),
                                            {"generate", "train_victim", "extract", "evaluate"}),
    "gate threshold (defaults.gate)": (lambda p: p["defaults"]["gate"].update(max_ca_drop=0.5), {"gate"}),
    "torch threads (top-level threads)": (lambda p: p.update(threads=1),
                                          {"train_victim", "extract", "train_detector", "evaluate"}),
    "feature kinds (defaults.extract)": (lambda p: p["defaults"]["extract"].update(kinds=["max"]),
                                        {"extract", "train_detector", "evaluate"}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_params_change_reruns_the_stages_that_read_it(project, case):
    change, expected = CASES[case]
    before = (project / "params.yaml").read_text()
    assert changed_stages(project) == set()
    try:
        edit_params(project, change)
        assert changed_stages(project) == expected
    finally:
        (project / "params.yaml").write_text(before)


# register depends on the whole package: the registered model carries a copy of it.
@pytest.mark.parametrize("module, expected", [
    ("src/atpatch/eval/plots.py", {"evaluate", "register"}),
    ("src/atpatch/ops/patching.py", {"extract", "train_detector", "register"}),
    ("src/atpatch/ops/serving/server.py", {"gate", "register"}),  # the gate reads the registry
    ("src/atpatch/core/patch.py", set(STAGES)),
    ("gx/expectations/features.json", {"extract"}),  # a stored suite: only the stage that runs it
    ("gx/expectations/raw.images.json", {"generate"}),
])
def test_a_code_change_reruns_the_stages_that_import_it(project, module, expected):
    path = project / module
    before = path.read_text()
    try:
        path.write_text(before + "\n# changed\n")
        assert changed_stages(project) == expected
    finally:
        path.write_text(before)
