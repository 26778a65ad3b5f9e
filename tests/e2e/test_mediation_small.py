"""The attention-mediation check end to end on a victim that carries its trigger by value.

The small profile's vision victim trained as the benchmark's `value-borne` variant (pixels scaled with
the data set's mean and std, weight decay 0.05, a 10% warm-up) sends triggered images to the target
class through the trigger token's values: patching the known trigger tokens changes nothing. The
pipeline must say so: evaluate.json's mediation block fails, the gate refuses the patch with that
reason in words, the registry gets a challenger and no champion, and `atpatch report` prints it.
(The default small victim passing the same check is in test_pipeline_small.py.)
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from _recipes import cheap_vision
from _workspace_env import env_for  # noqa: E402

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SCENARIO = "vision-backdoor"
VALUE_BORNE = cheap_vision(SCENARIO, {"train_victim": {"pixel_scaling": "dataset", "weight_decay": 0.05,
                                                      "pct_start": 0.1}})


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    from atpatch.scenarios.data.fetch import fetch_fashion_mnist
    from atpatch.ops.workspace import make_workspace

    fetch_fashion_mnist(REPO / "data" / "raw" / "fashion-mnist")
    path = tmp_path_factory.mktemp("value-borne")
    env = env_for(path)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        make_workspace(path, "small", VALUE_BORNE)
    res = subprocess.run([str(REPO / ".venv" / "bin" / "dvc"), "repro", f"register@{SCENARIO}"], cwd=path, env=env,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return {"path": path, "env": env}


def read(ws: dict, name: str) -> dict:
    return json.loads((ws["path"] / "metrics" / SCENARIO / f"{name}.json").read_text())


def test_value_borne_victim_fails_the_check_and_the_gate_says_why(ws):
    evaluate, gate, register = read(ws, "evaluate"), read(ws, "gate"), read(ws, "register")
    m = evaluate["mediation"]
    assert m["fault_rate_unpatched"] > 0.9 and m["fault_rate_known_patched"] > m["fault_rate_clean"] + 0.5
    assert evaluate["oracle_ASR"] > evaluate["unpatched"]["ASR_floor"] + 0.5  # the test split agrees
    assert not m["passed"] and "does not carry the fault through over-attention" in m["message"]
    check = next(c for c in gate["checks"] if c["name"] == "attention_mediation")
    assert not check["passed"] and not gate["passed"]
    # The ASR the patch leaves is judged on its own too (the patch cannot reach a value-borne backdoor).
    assert not next(c for c in gate["checks"] if c["name"] == "asr_over_floor")["passed"]
    assert gate["reasons"][0] == m["message"]
    assert register["promoted"] is False and register["champion"] is None


def test_report_prints_the_verdict(ws):
    res = subprocess.run([str(REPO / ".venv" / "bin" / "atpatch"), "report", "--root", str(ws["path"]),
                          "--scenario", SCENARIO], env={**ws["env"], "COLUMNS": "200"}, capture_output=True,
                         text=True, timeout=300, cwd=ws["path"])
    assert res.returncode == 0, res.stderr[-2000:]
    out = " ".join(res.stdout.split())
    assert "attention mediation FAILED" in out and "AtPatch cannot remove it" in out
    assert "gate: FAILED: attention mediation FAILED" in out
