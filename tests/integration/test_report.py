"""The HTML report on the committed vision-backdoor metrics and plots, rendered in headless Chromium."""

from __future__ import annotations

import html
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from needs import need

REPO = Path(__file__).resolve().parents[2]
SCENARIO = "vision-backdoor"


@pytest.fixture()
def root(tmp_path):
    """A project root holding copies of the committed metrics/<scenario>/ and plots/<scenario>/."""
    for part in ("metrics", "plots"):
        shutil.copytree(REPO / part / SCENARIO, tmp_path / part / SCENARIO)
    return tmp_path


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_report_holds_metrics_definitions_gate_registry_and_inline_figures(root):
    from atpatch.eval.report import build_report

    evaluate = json.loads((root / "metrics" / SCENARIO / "evaluate.json").read_text())
    path = build_report(SCENARIO, root)
    assert path == root / "reports" / f"{SCENARIO}.html"
    text = path.read_text(encoding="utf-8")
    for name in ("CA", "ASR", "ASR_floor", "DER", "column_auroc", "oracle_ASR"):
        assert f"<td>{name}</td>" in text, name
    for value in (evaluate["unpatched"]["CA"], evaluate["unpatched"]["ASR"], evaluate["patched"]["two-pass"]["ASR"]):
        assert f"{value:.4f}" in text
    for definition in evaluate["definitions"].values():  # each stated next to its number
        assert definition.replace("'", "&#x27;") in text
    gate = json.loads((root / "metrics" / SCENARIO / "gate.json").read_text())
    assert f"Gate: {'PASSED' if gate['passed'] else 'FAILED'}" in text
    for reason in gate["reasons"]:
        assert html.escape(reason) in text, reason
    assert html.escape(evaluate["mediation"]["message"]) in text  # the attention-mediation verdict, in words
    assert "atpatch-vision-backdoor" in text
    # Self-contained: the three figures inlined, nothing fetched from elsewhere.
    assert text.count('src="data:image/png;base64,') == 3
    assert "http://" not in text and "https://" not in text and "file:" not in text


def test_report_renders_unknown_and_nested_metric_keys(root):
    """A fairness-style evaluate.json: unknown keys, per-attribute nesting, no gate yet, a missing plot."""
    from atpatch.eval.report import build_report

    for name in ("gate.json", "register.json"):
        (root / "metrics" / SCENARIO / name).unlink()
    (root / "plots" / SCENARIO / "roc.png").unlink()
    report = {"scenario": SCENARIO, "default_mode": "two-pass",
              "definitions": {"flip_rate": "share of inputs whose prediction changes when only the attribute is swapped"},
              "unpatched": {"accuracy": 0.85, "sex": {"flip_rate": 0.12, "dp_difference": 0.2}},
              "patched": {"two-pass": {"accuracy": 0.84, "sex": {"flip_rate": 0.01, "dp_difference": 0.05},
                                       "brand_new_metric": "n/a"}}}
    (root / "metrics" / SCENARIO / "evaluate.json").write_text(json.dumps(report))
    text = build_report(SCENARIO, root).read_text()
    assert "<td>sex.flip_rate</td>" in text and "0.1200" in text and "0.0100" in text
    assert "share of inputs whose prediction changes" in text and "brand_new_metric" in text
    assert "NO GATE DECISION" in text and "Not registered yet" in text and "roc.png not found" in text


def test_report_errors_name_the_missing_file(tmp_path):
    from atpatch.core.errors import AtPatchError
    from atpatch.eval.report import build_report

    with pytest.raises(AtPatchError, match=r"metrics/nope/evaluate.json: not found; run the pipeline first"):
        build_report("nope", tmp_path)
    with pytest.raises(AtPatchError, match="scenario: expected a name"):
        build_report("../etc", tmp_path)


def test_log_report_as_mlflow_artifact(root, monkeypatch):
    import mlflow

    from atpatch.eval.report import build_report
    from atpatch.ops.tracking import log_report

    monkeypatch.setenv("ATPATCH_ROOT", str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    run_id = log_report(build_report(SCENARIO, root), SCENARIO)
    files = [f.path for f in mlflow.MlflowClient().list_artifacts(run_id, "reports")]
    assert files == [f"reports/{SCENARIO}.html"]


def test_report_renders_in_headless_chromium(root):
    """Look at it as a user would: a screenshot that is not blank, of a page showing the gate and metrics."""
    from PIL import Image

    from atpatch.eval.report import build_report

    chromium = _chromium()
    need(chromium is not None, "a chromium binary on PATH (scripts/install_chromium.sh; make test runs it)")
    path = build_report(SCENARIO, root)
    shot = root / "shot.png"
    res = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                          "--window-size=1200,2400", f"--screenshot={shot}", path.as_uri()],
                         capture_output=True, text=True, timeout=120, cwd=root)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(float)
    assert pixels.shape[:2] == (2400, 1200)
    ink = (pixels.min(-1) < 200).mean()  # share of non-background pixels
    assert pixels.std() > 10 and 0.02 < ink < 0.9, (pixels.std(), ink)
    # The gate badge's colour is on the page (the decision is visible, not only in the source): green
    # #1f8a4c when it passed, red #c0392b when it failed.
    gate = json.loads((root / "metrics" / SCENARIO / "gate.json").read_text())
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    badge = (g > 110) & (r < 70) & (b < 110) if gate["passed"] else (r > 170) & (g < 80) & (b < 80)
    assert badge.sum() > 500
    # The DOM chromium built from the file holds the decision and the numbers.
    dumped = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", path.as_uri()],
                            capture_output=True, text=True, timeout=120, cwd=root)
    evaluate = json.loads((root / "metrics" / SCENARIO / "evaluate.json").read_text())
    verdict = f"Gate: {'PASSED' if gate['passed'] else 'FAILED'}"
    assert dumped.returncode == 0 and verdict in dumped.stdout
    assert f"{evaluate['unpatched']['CA']:.4f}" in dumped.stdout


def test_markdown_summary_has_headline_metrics_and_each_gate_check(root):
    """The flows' run artifact: headline rows before -> after in a fixed order, the decision and every check."""
    from atpatch.eval.report import load_reports, markdown_summary

    reports = load_reports(SCENARIO, root)
    text = markdown_summary(SCENARIO, reports)
    before, after = reports["evaluate"]["unpatched"], reports["evaluate"]["patched"]["two-pass"]
    assert f"| CA | {before['CA']:.4f} | {after['CA']:.4f} |" in text
    assert f"| ASR | {before['ASR']:.4f} | {after['ASR']:.4f} |" in text
    assert text.index("| CA |") < text.index("| ASR |") < text.index("| input_flag_rate_clean |")
    assert "| DER |" not in text  # headline only; `atpatch report` has the rest
    gate = reports["gate"]
    assert f"**gate: {'PASSED' if gate['passed'] else 'FAILED'}" in text
    for check in gate["checks"]:
        assert f"| {check['name']} | {check['value']:.4f} | {check['comparison']} " in text, check["name"]
    reports["gate"] = None
    assert "**gate: no gate decision (gate.json not found)**" in markdown_summary(SCENARIO, reports)


def test_report_links_the_data_docs_each_stage_rendered(root):
    from atpatch.eval.report import build_report

    docs = root / "reports" / "data_docs" / SCENARIO / "generate" / "index.html"
    docs.parent.mkdir(parents=True)
    docs.write_text("<html></html>")
    text = build_report(SCENARIO, root).read_text()
    assert f'<a href="data_docs/{SCENARIO}/generate/index.html">Data Docs</a>' in text
    assert "extract: <span class=\"muted\">no Data Docs yet" in text
