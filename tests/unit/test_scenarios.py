"""Scenario params: the flat view a stage sees, conventions for paths, clear errors."""

import pytest
import yaml

from atpatch.core.errors import AtPatchError
from atpatch.scenarios import OUT_PATHS, scenario_params
from atpatch.io import load_params
from atpatch.ops.workspace import REPO

SHIPPED = load_params(path=REPO / "params.yaml")
PARAMS = {"seed": 3, "scenario": "a", "defaults": SHIPPED["defaults"], "scenarios": {
    "a": {**SHIPPED["scenarios"]["vision-backdoor"], "generate": {"poison_rate": 0.1}},
    "b": SHIPPED["scenarios"]["tabular-fairness"]}}


def test_flat_view_fills_paths_by_scenario_name():
    p = scenario_params(PARAMS)
    assert (p["seed"], p["scenario"], p["kind"]) == (3, "a", "vision-backdoor")
    assert p["generate"] == {"poison_rate": 0.1, "out": "data/a/generated"}  # the scenario's own section, merged
    assert p["evaluate"]["modes"] == SHIPPED["defaults"]["evaluate"]["modes"]  # from defaults
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


def test_text_fairness_counterfactual_masks_mark_the_swapped_pieces(monkeypatch):
    """A swapped name with another piece count moves the gendered pieces: fault_mask_cf follows them."""
    from types import SimpleNamespace

    import numpy as np
    import pandas as pd
    import torch

    from atpatch.scenarios.data.gendered import GenderLexicon
    from atpatch.scenarios.models.text import encode
    from atpatch.scenarios import text_fairness
    from tiny_patch import text_tokenizer

    tok = text_tokenizer(["he", "she", "tea"])
    assert len(tok.tokenize("Zebulon")) > len(tok.tokenize("Ann")) == 1
    lex = GenderLexicon(female_names=("Ann",), male_names=("Zebulon",))
    frame = pd.DataFrame({"text": ["Ann says she likes tea.", "tea tea", "Zebulon drank his tea", "he and she"],
                          "label": [1, 0, 0, 1], "gender": ["female", "none", "male", "mixed"]})
    monkeypatch.setattr(text_fairness, "read_split", lambda params, name: frame)
    monkeypatch.setattr(text_fairness, "lexicon", lambda params: lex)
    params, model = {"generate": {"max_length": 24}}, SimpleNamespace(atpatch_tokenizer=tok)

    data = text_fairness.test_sets(params, model)
    gender = data["attributes"]["gender"]
    (x_cf,), (mask_cf,) = gender["x_cf"], gender["fault_mask_cf"]
    swapped = ["Zebulon says he likes tea.", "Ann drank her tea"]
    assert torch.equal(x_cf["input_ids"], encode(tok, swapped, 24)["input_ids"])
    assert mask_cf.dtype == bool and mask_cf.shape == gender["fault_mask"].shape == (2, 24)
    ids = x_cf["input_ids"]
    marked = [tok.convert_ids_to_tokens(ids[i][torch.from_numpy(m)].tolist()) for i, m in enumerate(mask_cf)]
    assert marked == [tok.tokenize("Zebulon") + tok.tokenize("he"), tok.tokenize("Ann") + tok.tokenize("her")]
    assert not np.array_equal(mask_cf, gender["fault_mask"])  # the pieces moved
    # counterfactual_sets (the baselines' interface) returns the same inputs
    (same,) = text_fairness.counterfactual_sets(params, model, frame.iloc[[0, 2]], "gender", lex)
    assert all(torch.equal(same[k], x_cf[k]) for k in x_cf)


def test_candidate_policy_is_checked_and_protected_only_for_fairness_kinds():
    from atpatch.scenarios import candidate_policy

    assert candidate_policy({"kind": "text-backdoor"}) == "all"
    assert candidate_policy({"kind": "tabular-fairness", "extract": {"candidates": "protected"}}) == "protected"
    with pytest.raises(AtPatchError, match="extract.candidates: expected one of \\['all'\\], got 'protected'"):
        candidate_policy({"kind": "text-backdoor", "scenario": "tb", "extract": {"candidates": "protected"}})
    with pytest.raises(AtPatchError, match="scenarios.tf.extract.candidates"):
        candidate_policy({"kind": "text-fairness", "scenario": "tf", "extract": {"candidates": "gender"}})


def test_text_fairness_protected_layout_flags_only_gendered_words_as_a_group():
    from types import SimpleNamespace

    from atpatch.scenarios.models.text import encode
    from atpatch.scenarios import text_fairness
    from tiny_patch import text_tokenizer

    tok = text_tokenizer(["he", "she", "his", "her", "tea"])
    model = SimpleNamespace(atpatch_tokenizer=tok)
    params = {"kind": "text-fairness", "extract": {"candidates": "protected"}}
    layout = text_fairness.layout(model, params)
    assert layout.flag_as_group and text_fairness.layout(model, {"kind": "text-fairness"}).candidate_ids == ()
    x = encode(tok, ["she likes tea and his tea"], 12)
    _, candidate = layout.masks(x, 1, 12)
    words = tok.convert_ids_to_tokens(x["input_ids"][0][candidate[0]].tolist())
    assert words == ["she", "his"]
    assert not candidate[0][x["attention_mask"][0] == 0].any()


def test_every_kind_implements_its_family_protocol():
    """Stages and tools call only the protocol's members; a kind missing one fails when it loads."""
    import importlib

    from atpatch.conventions import FAIRNESS_KINDS, KIND_MODULES
    from atpatch.scenarios.kind import BackdoorKind, FairnessKind, missing_members

    for kind, module in KIND_MODULES.items():
        protocol = FairnessKind if kind in FAIRNESS_KINDS else BackdoorKind
        assert missing_members(importlib.import_module(module), protocol) == [], kind


def test_a_kind_missing_a_member_is_one_clear_error(monkeypatch):
    import atpatch.scenarios.vision as vision
    from atpatch.scenarios import kind_module

    monkeypatch.delattr(vision, "test_frame")
    with pytest.raises(AtPatchError, match=r"missing BackdoorKind members \['test_frame'\]"):
        kind_module({"kind": "vision-backdoor"})
