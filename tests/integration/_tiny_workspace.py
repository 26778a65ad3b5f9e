"""A tiny vision-backdoor workspace on real data, for tests that run stages: the repository's params.yaml
with small limits and one torch thread, the generated splits (stage generate on a slice of Fashion-MNIST),
and on request the tiny patch's victim and detector where the stages read them (tests/tiny_patch.py)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import yaml

from atpatch.conventions import PARAMS_FILE, out_path
from atpatch.io import deep_merge, load_params
from atpatch.scenarios import scenario_params

REPO = Path(__file__).resolve().parents[2]
SCENARIO = "vision-backdoor"
# 300 test images (about 270 triggered), batches of 32, a debugging set of 96; the cheap one-layer victim
# (tests/e2e/_recipes.py) for the stages that train one; one thread, as every test on the shared cores.
TINY = {"threads": 1, "sources": ["fashion-mnist"], "scenarios": {SCENARIO: {
    "generate": {"train_limit": 300, "test_limit": 300, "trigger": {"pattern": "checker"},
                 "debug": {"n_triggered": 24, "n_clean": 24, "n_calib": 48}},
    "train_victim": {"architecture": {"hidden_size": 32, "layers": 1, "heads": 4, "intermediate_size": 64},
                     "epochs": 1, "batch_size": 32, "lr": 0.003},
    "extract": {"batch_size": 32},
    "evaluate": {"batch_size": 32, "latency_batch": 32, "latency_repeats": 1, "bootstrap": 20}}}}


def _stage(name: str):
    spec = importlib.util.spec_from_file_location(f"atpatch_stage_{name}", REPO / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_params(overrides: dict | None = None) -> dict:
    """The repository's params.yaml with TINY (then `overrides`) merged in."""
    return deep_merge(deep_merge(load_params(path=REPO / PARAMS_FILE), TINY), overrides)


def tiny_workspace(root: Path, overrides: dict | None = None, dvc: bool = False) -> Path:
    """params.yaml and the generated splits under `root`; with `dvc`, a full workspace (dvc.yaml, stages/,
    git and DVC, atpatch.ops.workspace) around them."""
    from _fashion import fashion_dir

    fashion_dir()  # the shared raw copy, fetched once
    if dvc:
        from atpatch.ops.workspace import make_workspace

        make_workspace(root, None, deep_merge(TINY, overrides))
    else:
        root.mkdir(parents=True, exist_ok=True)
        (root / PARAMS_FILE).write_text(yaml.safe_dump(tiny_params(overrides), sort_keys=False))
    params = scenario_params(load_params(path=root / PARAMS_FILE), SCENARIO)
    params["fetch"]["dest"] = str(fashion_dir())  # absolute: the shared copy, whatever the root
    _stage("generate").main(params, root=root)
    return root


def install_patch(root: Path, victim: Path, detector: Path) -> None:
    """Copy a victim and a detector where stages extract and evaluate read them."""
    for stage, source in (("train_victim", victim), ("train_detector", detector)):
        dest = root / out_path(stage, SCENARIO)
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(source, dest)


def run_stage(root: Path, name: str) -> None:
    """Stage `name`'s main in `root`, in this process (the serial run)."""
    import contextlib

    params = scenario_params(load_params(path=root / PARAMS_FILE), SCENARIO)
    with contextlib.chdir(root):
        _stage(name).main(params)
