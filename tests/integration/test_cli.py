"""The `atpatch` command line through typer's CliRunner: help, error exits, report, run, inspect, serve, patch."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
SCENARIO = "tiny-cli"  # registered model atpatch-tiny-cli
COMMANDS = ("run", "report", "inspect", "serve", "patch", "sweep")


def _invoke(*args: str):
    from atpatch.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _assert_user_error(result, *needles: str) -> str:
    """Exit 1, one line `error: ...` on stderr naming the problem, no traceback."""
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    error = [line for line in lines if line.startswith("error: ")]
    assert len(error) == 1 and "Traceback" not in result.output + result.stderr, result.stderr
    for needle in needles:
        assert needle in error[0], (needle, error[0])
    return error[0]


@pytest.fixture()
def project(tmp_path):
    """A project root with the committed vision-backdoor metrics and plots."""
    for part in ("metrics", "plots"):
        shutil.copytree(REPO / part / "vision-backdoor", tmp_path / part / "vision-backdoor")
    return tmp_path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny patch registered as atpatch-tiny-cli@challenger (no champion) in a temp project's MLflow store."""
    from tiny_patch import register_tiny

    root = tmp_path_factory.mktemp("cli")
    # The project's params.yaml names the scenario, a vision-backdoor kind like the repository's.
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["scenarios"] = {SCENARIO: params["scenarios"]["vision-backdoor"]}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATPATCH_ROOT", str(root))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        parts = register_tiny(root / "tiny", f"atpatch-{SCENARIO}", "challenger", steps=120)
        yield {"root": root, **parts}


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_an_example(command):
    result = _invoke(command, "--help")
    assert result.exit_code == 0, result.output
    assert f"Example: atpatch {command}" in " ".join(result.output.split())


def test_top_level_help_lists_commands():
    result = _invoke("--help")
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output


def committed(project, name: str) -> dict:
    """metrics/vision-backdoor/<name>.json of the project (the numbers the tests expect to see)."""
    import json

    return json.loads((project / "metrics" / "vision-backdoor" / f"{name}.json").read_text())


def test_report_table_on_committed_metrics(project):
    from atpatch.eval.report import format_value, gate_summary

    result = _invoke("report", "--root", project)
    assert result.exit_code == 0, result.output
    out = " ".join(re.sub(r"[\u2500-\u257f]", " ", result.output).split())  # table borders out: wrapped cells rejoin
    evaluate, gate, reg = (committed(project, name) for name in ("evaluate", "gate", "register"))
    patched = evaluate["patched"][evaluate["default_mode"]]
    for text in ("ASR_floor", format_value(evaluate["unpatched"]["CA"]), format_value(patched["CA"]),
                 format_value(patched["ASR"]), "accuracy on the clean test set", "oracle_ASR",
                 " ".join(evaluate["mediation"]["message"].split()), f"gate: {gate_summary(gate)}",
                 f"registry: atpatch-vision-backdoor version {reg['version']}; challenger {reg['challenger']}, "
                 f"champion {reg['champion'] or 'none'}"):
        assert text in out, text
    online = _invoke("report", "--root", project, "--mode", "online")
    assert online.exit_code == 0 and "patched (online)" in online.output


def test_report_html(project):
    result = _invoke("report", "--root", project, "--html")
    assert result.exit_code == 0, result.output
    html = (project / "reports" / "vision-backdoor.html").read_text()
    evaluate, gate = committed(project, "evaluate"), committed(project, "gate")
    assert f"Gate: {'PASSED' if gate['passed'] else 'FAILED'}" in html
    assert f"{evaluate['unpatched']['CA']:.4f}" in html


def test_user_errors_are_one_line_and_exit_1(project, tmp_path):
    _assert_user_error(_invoke("report", "--root", tmp_path, "--scenario", "text-backdoor"),
                       "metrics/text-backdoor/evaluate.json: not found", "atpatch run --scenario text-backdoor")
    _assert_user_error(_invoke("report", "--root", project, "--mode", "three-pass"), "mode: expected one of")
    _assert_user_error(_invoke("report", "--scenario", "../x", "--root", project), "--scenario: expected one of")
    _assert_user_error(_invoke("run", "--root", tmp_path, "--dry-run"), "dvc.yaml: not found")
    _assert_user_error(_invoke("run", "--root", REPO, "--profile", "huge", "--dry-run"), "--profile huge",
                       "not found")
    _assert_user_error(_invoke("patch", "--model", tmp_path / "none", "--debug-set", tmp_path / "d.safetensors",
                               "--out", tmp_path / "o"), "--model", "not a directory")
    store = tmp_path / "empty"
    store.mkdir()
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}"}
    from atpatch.cli import app

    for args in (["serve"], ["inspect", "3"]):
        result = CliRunner(env=env).invoke(app, [*args, "--root", str(store)])
        _assert_user_error(result, "no MLflow store at", "nothing is registered yet")
    assert not (store / "mlflow.db").exists()


def test_run_dry_run_targets_the_scenario(tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages:\n  register:\n    foreach: ${scenarios}\n    do:\n"
                                       "      cmd: python stages/register.py --scenario ${key}\n")
    (tmp_path / "params.yaml").write_text("scenarios: {vision-backdoor: {}, text-backdoor: {}}\n")
    result = _invoke("run", "--root", tmp_path, "--scenario", "text-backdoor", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "dvc repro register@text-backdoor" in " ".join(result.output.split())
    repo = _invoke("run", "--root", REPO, "--dry-run")  # today's dvc.yaml (one scenario) or the foreach one
    assert repo.exit_code == 0, repo.output
    assert re.search(r"dvc repro register(@vision-backdoor)?$", " ".join(repo.output.split())), repo.output
    small = _invoke("run", "--root", REPO, "--profile", "small", "--dry-run")
    assert small.exit_code == 0 and str(REPO / ".work" / "small") in " ".join(small.output.split()).replace(" ", "")


def test_run_streams_dvc_and_reports_failure(monkeypatch, tmp_path):
    """The command runs dvc in the project with the pipeline environment; a failing repro is one error line."""
    import atpatch.cli as cli

    (tmp_path / "dvc.yaml").write_text("stages:\n  register:\n    foreach: [vision-backdoor]\n    do:\n      cmd: x\n")
    seen = {}

    def fake_stream(cmd, cwd, env):
        seen.update(cmd=cmd, cwd=cwd, env=env)
        return 3

    monkeypatch.setattr(cli, "_stream", fake_stream)
    _assert_user_error(_invoke("run", "--root", tmp_path), "dvc repro register@vision-backdoor failed (exit 3)")
    assert seen["cmd"][-3:] == ["dvc", "repro", "register@vision-backdoor"] and seen["cwd"] == tmp_path.resolve()
    assert seen["env"]["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert seen["env"]["HF_HUB_OFFLINE"] == "1"


def test_inspect_triggered_and_clean_inputs(tiny, tmp_path):
    from PIL import Image

    from tiny_patch import tiny_images

    triggered, labels = tiny_images(8, seed=21, triggered=True)
    npy = tmp_path / "trig.npy"
    np.save(npy, triggered[0])
    out_png = tmp_path / "attention.png"
    result = _invoke("inspect", "--root", tiny["root"], "--scenario", SCENARIO, npy, "--out", out_png)
    assert result.exit_code == 0, (result.output, result.stderr)
    assert "has no champion" in result.stderr and "using challenger version 1" in result.stderr
    out = " ".join(result.output.split())
    assert "unpatched" in out and "patched" in out and "mode two-pass" in out
    trigger = int(np.flatnonzero(labels[0])[0])
    assert f"flagged positions: {trigger} (patch row {(trigger - 1) // 7}, col {(trigger - 1) % 7}" in out, out
    assert "patched layers: [0, 1]" in out
    assert out_png.is_file() and Image.open(out_png).size[0] > 300

    clean, _ = tiny_images(1, seed=22)
    png = tmp_path / "clean.png"
    Image.fromarray(clean[0]).save(png)
    result = _invoke("inspect", "--root", tiny["root"], "--scenario", SCENARIO, png, "--out", tmp_path / "c.png")
    assert result.exit_code == 0, (result.output, result.stderr)
    assert "flagged positions: none" in " ".join(result.output.split())


def test_inspect_errors(tiny, tmp_path):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((5, 5)))
    _assert_user_error(_invoke("inspect", "--root", tiny["root"], "--scenario", SCENARIO, bad),
                       "expected a 28x28 grayscale image, got shape (5, 5)")
    _assert_user_error(_invoke("inspect", "--root", tiny["root"], "--scenario", SCENARIO, "3"),
                       f"data/{SCENARIO}/generated/test_triggered: split 'test_triggered' not found")


def test_inspect_reads_the_scenarios_own_test_set(tiny):
    """An index picks that image of data/<scenario>/generated/test_<split>, where the pipeline writes it."""
    from datasets import Dataset

    from tiny_patch import tiny_images

    images, _ = tiny_images(4, seed=5, triggered=True)
    folder = tiny["root"] / "data" / SCENARIO / "generated" / "test_triggered"
    Dataset.from_dict({"image": images, "label": [1, 2, 3, 4]}).save_to_disk(str(folder))
    try:
        result = _invoke("inspect", "--root", tiny["root"], "--scenario", SCENARIO, "--split", "triggered", "2")
    finally:
        import shutil

        shutil.rmtree(tiny["root"] / "data" / SCENARIO)
    assert result.exit_code == 0, (result.output, result.exception)
    out = " ".join(result.output.split())
    assert "input: triggered test row 2 (label 3)" in out and "flagged positions" in out
    _assert_user_error(_invoke("inspect", "--root", tiny["root"], "--scenario", "nothing-here", "3"),
                       f"--scenario: expected one of {SCENARIO}, got 'nothing-here'")


def test_serve_needs_a_champion(tiny):
    from atpatch.ops.registry import set_alias

    _assert_user_error(_invoke("serve", "--root", tiny["root"], "--scenario", SCENARIO),
                       "no champion to serve", "challenger is version 1")
    set_alias(f"atpatch-{SCENARIO}", "champion", 1)
    result = _invoke("serve", "--root", tiny["root"], "--scenario", SCENARIO, "--port", "5077", "--dry-run")
    assert result.exit_code == 0, (result.output, result.stderr)
    out = " ".join(result.output.split())
    assert f"models:/atpatch-{SCENARIO}@champion --env-manager local -h 127.0.0.1 -p 5077" in out


def test_patch_builds_detector_and_config(tiny, tmp_path):
    import json

    from atpatch import Detector

    out = tmp_path / "patch"
    result = _invoke("patch", "--model", tiny["victim"], "--debug-set", tiny["debug_set"], "--out", out,
                     "--steps", "40", "--fpr", "0")
    assert result.exit_code == 0, (result.output, result.stderr)
    config = json.loads((out / "patch.json").read_text())
    assert config == {"mode": "two-pass", "patch_layers": None, "benign_value": "unified", "input": "image"}
    det = Detector.load(out / "detector")
    assert det.config.layers == [0, 1] and det.benign.shape == (2, 2)
    assert "fit_column_auroc" in json.loads((out / "metrics.json").read_text())
    assert "threshold" in result.output


def test_patch_rejects_a_bad_debug_set(tiny, tmp_path):
    import torch
    from safetensors.torch import save_file

    bad = tmp_path / "bad.safetensors"
    save_file({"pixel_values": torch.zeros(4, 1, 28, 28)}, str(bad))
    _assert_user_error(_invoke("patch", "--model", tiny["victim"], "--debug-set", bad, "--out", tmp_path / "o"),
                       "tensor 'token_labels' [N, K] is missing")
    wrong = tmp_path / "wrong.safetensors"
    labels = torch.zeros(4, 7, dtype=torch.long)
    labels[0, 3] = 1
    save_file({"pixel_values": torch.zeros(4, 1, 28, 28), "token_labels": labels}, str(wrong))
    _assert_user_error(_invoke("patch", "--model", tiny["victim"], "--debug-set", wrong, "--out", tmp_path / "o"),
                       "token_labels", "expected shape (4, 50)")
    (tmp_path / "text.safetensors").write_text("not safetensors")
    _assert_user_error(_invoke("patch", "--model", tiny["victim"], "--debug-set", tmp_path / "text.safetensors",
                               "--out", tmp_path / "o"), "not a readable safetensors file")


def test_patch_narrows_the_candidates(tiny, tmp_path):
    from atpatch import Detector, PatchedClassifier
    from atpatch.scenarios.models.loading import load_classifier
    from atpatch.scenarios.models.vit import to_pixel_values
    from tiny_patch import tiny_images

    out = tmp_path / "patch"
    half = ",".join(str(p) for p in range(1, 26))
    result = _invoke("patch", "--model", tiny["victim"], "--debug-set", tiny["debug_set"], "--out", out,
                     "--steps", "40", "--fpr", "0", "--positions", half, "--flag-as-group")
    assert result.exit_code == 0, (result.output, result.stderr)
    det = Detector.load(out / "detector")
    assert det.config.layout["positions"] == list(range(1, 26)) and det.config.layout["flag_as_group"]
    det.set_threshold(0.0)  # flag everything that may be flagged: exactly the 25 positions
    images, _ = tiny_images(4, seed=5, triggered=True)
    flags = PatchedClassifier(load_classifier(tiny["victim"]), det)(pixel_values=to_pixel_values(images)).flagged
    assert flags[:, 1:26].all() and not flags[:, 26:].any() and not flags[:, 0].any()


@pytest.mark.parametrize("option, value, message", [("--positions", "3,x", "expected comma-separated integers"),
                                                    ("--positions", "0,4", "leading special tokens"),
                                                    ("--candidate-ids", "7", "token ids need a text model's input_ids")])
def test_patch_rejects_bad_candidates(tiny, tmp_path, option, value, message):
    result = _invoke("patch", "--model", tiny["victim"], "--debug-set", tiny["debug_set"], "--out", tmp_path / "p",
                     "--steps", "5", option, value)
    assert result.exit_code != 0 and message in " ".join((result.output + result.stderr).split())
