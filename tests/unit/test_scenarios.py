"""Scenario params: the flat view a stage sees, conventions for paths, clear errors."""

import pytest
import yaml

from atpatch.errors import AtPatchError
from atpatch.scenarios import OUT_PATHS, scenario_params
from atpatch.workspace import REPO

PARAMS = {"seed": 3, "scenario": "a", "scenarios": {
    "a": {"kind": "vision-backdoor", "source": "fashion-mnist", "generate": {"poison_rate": 0.1}},
    "b": {"kind": "tabular-fairness", "source": "adult"}}}


def test_flat_view_fills_paths_by_scenario_name():
    p = scenario_params(PARAMS)
    assert (p["seed"], p["scenario"], p["kind"]) == (3, "a", "vision-backdoor")
    assert p["generate"] == {"poison_rate": 0.1, "out": "data/a/generated"}
    assert p["fetch"] == {"dest": "data/raw/fashion-mnist"}
    assert p["train_detector"]["metrics"] == "metrics/a/detector.json" and p["evaluate"]["plots"] == "plots/a"
    assert {k: p[k]["out"] for k in OUT_PATHS} == {k: v.format(s="a") for k, v in OUT_PATHS.items()}
    assert scenario_params(PARAMS, "b")["evaluate"]["out"] == "metrics/b/evaluate.json"


@pytest.mark.parametrize("params, name, message", [
    ({"seed": 0}, "a", "section 'scenarios' is missing"),
    (PARAMS, "zzz", r"scenario 'zzz' not found \(scenarios: \['a', 'b'\]\)"),
    ({"scenarios": {"a": {"source": "x"}}}, "a", "'scenarios.a.kind' is missing"),
    ({"scenarios": {"a": {"kind": "nope", "source": "x"}}}, "a", "'scenarios.a.kind': expected one of"),
])
def test_errors_name_the_field(params, name, message):
    with pytest.raises(AtPatchError, match=message):
        scenario_params(params, name, "my.yaml")


def test_repository_params_define_every_scenario_they_name():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert params["scenario"] in params["scenarios"]
    for name, section in params["scenarios"].items():
        flat = scenario_params(params, name)
        assert section["source"] in params["sources"], name
        assert flat["register"].get("model_name") in (None, f"atpatch-{name}")


def test_text_fairness_counterfactual_groups_swap_female_and_male_only():
    import numpy as np

    from atpatch.scenarios import text_fairness

    (swapped,) = text_fairness.counterfactual_sensitive(None, "gender", np.array(["female", "male", "mixed", "none"]))
    assert swapped.tolist() == ["male", "female", "mixed", "none"]
    assert text_fairness.protected({}) == ["gender"]
    with pytest.raises(AtPatchError, match="'gender' only"):
        text_fairness.counterfactual_sets({}, None, None, "race")
