"""The attention-mediation check on hand-built victims whose backdoor is carried by attention or by value.

Both victims send every checker-triggered image to class 0. In one the trigger only wins through the
attention CLS pays it; in the other its value is so large that normal attention suffices. Patching the
known trigger tokens must remove the first backdoor and leave the second, and the check must say so
in the library, in the gate and in `atpatch patch`.
"""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import mediation_victim
from typer.testing import CliRunner

from atpatch.eval.mediation import MAX_GAP, backdoor_mediation

N = 120


def debug_set(make) -> dict:
    """N triggered then N clean images, token labels and the faulty mask."""
    gen = torch.Generator().manual_seed(0)
    (xt, lt), (xc, lc) = make(N, True, gen), make(N, False, gen)
    return {"inputs": {"pixel_values": torch.cat([xt["pixel_values"], xc["pixel_values"]])},
            "token_labels": torch.cat([lt, lc]), "triggered": torch.arange(2 * N) < N}


def check(attention_borne: bool, target: int | None = 0) -> dict:
    model, make = mediation_victim(attention_borne)
    d = debug_set(make)
    return backdoor_mediation(model, d["inputs"], d["token_labels"], d["triggered"], torch.ones(1, 1), (0,),
                              target=target)


def test_attention_borne_backdoor_passes():
    m = check(attention_borne=True)
    assert m["fault_rate_unpatched"] > 0.9 and m["fault_rate_clean"] < 0.1
    assert m["fault_rate_known_patched"] <= m["fault_rate_clean"] + MAX_GAP
    assert m["passed"] and m["message"].startswith("attention mediation PASSED")


def test_value_borne_backdoor_fails_with_its_reason():
    m = check(attention_borne=False)
    assert m["fault_rate_unpatched"] > 0.9 and m["fault_rate_known_patched"] > 0.9
    assert not m["passed"]
    assert "does not carry the fault through over-attention" in m["message"]
    assert "AtPatch cannot remove it" in m["message"]


def test_target_is_inferred_from_the_faulty_inputs():
    assert check(attention_borne=False, target=None)["target"] == 0


def test_gate_check_carries_the_message(tmp_path):
    """The gate's named check judges the gap at the gate's own limit and reports the plain-words reason."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("gate_stage", Path(__file__).parents[2] / "stages" / "gate.py")
    gate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gate)
    report = {"mediation": check(attention_borne=False)}
    c = gate.mediation_check(report, tmp_path / "evaluate.json", MAX_GAP)
    assert c["name"] == "attention_mediation" and not c["passed"]
    assert gate.reason(c).startswith("attention mediation FAILED")
    loose = gate.mediation_check(report, tmp_path / "evaluate.json", 1.0)
    assert loose["passed"]


@pytest.mark.parametrize("attention_borne", [True, False])
def test_atpatch_patch_says_whether_the_patch_can_work(tmp_path, attention_borne):
    from safetensors.torch import save_file

    from atpatch.cli import app

    model, make = mediation_victim(attention_borne)
    model.save_pretrained(tmp_path / "victim")
    d = debug_set(make)
    save_file({"pixel_values": d["inputs"]["pixel_values"].contiguous(), "token_labels": d["token_labels"],
               "triggered": d["triggered"]}, str(tmp_path / "debug.safetensors"))
    result = CliRunner().invoke(app, ["patch", "--model", str(tmp_path / "victim"), "--debug-set",
                                      str(tmp_path / "debug.safetensors"), "--out", str(tmp_path / "patch"),
                                      "--steps", "40"])
    assert result.exit_code == 0, (result.output, result.exception)
    written = json.loads((tmp_path / "patch" / "mediation.json").read_text())
    assert written["passed"] is attention_borne and written["target"] == 0
    verdict = "attention mediation PASSED" if attention_borne else "attention mediation FAILED"
    assert verdict in " ".join(result.output.split())
