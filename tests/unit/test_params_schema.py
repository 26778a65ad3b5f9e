"""The params schema: every shipped scenario and profile validates; a typo or a bad value is one line
naming the key, the value and what is allowed, before a stage does any work."""

from __future__ import annotations

import copy

import pytest

from atpatch.core.errors import AtPatchError
from atpatch.io import load_params
from atpatch.ops.workspace import REPO, merged_params
from atpatch.scenarios import scenario_params

PARAMS = load_params(path=REPO / "params.yaml")


@pytest.mark.parametrize("profile", [None, "small"])
def test_every_shipped_scenario_validates(profile):
    params = merged_params(profile) if profile else PARAMS
    for name in params["scenarios"]:
        scenario_params(params, name)


def _error(change, scenario: str) -> str:
    params = copy.deepcopy(PARAMS)
    change(params)
    with pytest.raises(AtPatchError) as exc:
        scenario_params(params, scenario)
    assert "\n" not in str(exc.value)
    return str(exc.value)


def test_a_misspelt_key_names_the_closest_valid_one():
    msg = _error(lambda p: p["scenarios"]["tabular-fairness"]["gate"].update(min_flip_rate_reducton=0.0),
                 "tabular-fairness")
    assert msg == ("params.yaml: scenarios.tabular-fairness.gate.min_flip_rate_reducton: unknown key "
                   "(did you mean 'min_flip_rate_reduction'?)")
    msg = _error(lambda p: p["defaults"]["evaluate"].update(latency_repets=3), "vision-backdoor")
    assert msg.startswith("params.yaml: defaults.evaluate.latency_repets: unknown key (did you mean 'latency_repeats'?)")
    msg = _error(lambda p: p["scenarios"]["vision-backdoor"]["train_detector"]["network"].update(stpes=3),
                 "vision-backdoor")
    assert "train_detector.network.stpes: unknown key (did you mean 'steps'?)" in msg


def test_a_key_of_the_other_family_is_unknown():
    """A backdoor threshold in a fairness gate would be ignored silently; it is an error instead."""
    msg = _error(lambda p: p["scenarios"]["text-fairness"]["gate"].update(max_asr_over_floor=0.01), "text-fairness")
    assert "gate.max_asr_over_floor: unknown key" in msg


@pytest.mark.parametrize("section, key, value, expected", [
    ("train_victim", "lr", -0.003, "train_victim.lr: input should be greater than 0, got -0.003"),
    ("train_detector", "calibration_fpr", 1.5, "train_detector.calibration_fpr: input should be less than 1, got 1.5"),
    ("train_detector", "calibration_fpr", 0.0, "calibration_fpr: input should be greater than 0, got 0.0"),
    ("patch", "benign_value", "zer0", "patch.benign_value: input should be 'unified', 'uniform' or 'zero', got 'zer0'"),
    ("evaluate", "modes", ["three-pass"], "evaluate.modes.0: input should be 'two-pass' or 'online', got 'three-pass'"),
    ("gate", "max_ca_drop", 2.0, "gate.max_ca_drop: input should be less than or equal to 1, got 2.0"),
])
def test_a_bad_value_names_key_value_and_what_is_allowed(section, key, value, expected):
    msg = _error(lambda p: p["scenarios"]["vision-backdoor"][section].update({key: value}), "vision-backdoor")
    assert msg.startswith("params.yaml: scenarios.vision-backdoor.") and expected in msg, msg


def test_a_backdoor_gate_needs_a_backdoor_criterion():
    msg = _error(lambda p: p["scenarios"]["vision-backdoor"]["gate"].pop("max_asr_over_floor"), "vision-backdoor")
    assert msg == ("params.yaml: scenarios.vision-backdoor.gate: needs max_asr_over_floor or max_asr_over_control "
                   "(the backdoor criterion)")
