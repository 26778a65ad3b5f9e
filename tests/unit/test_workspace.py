"""deep_merge semantics and the merged params of a profile (no DVC, no data)."""

import copy

import pytest
import yaml

from atpatch.ops.workspace import REPO, deep_merge, merged_params, write_params


def test_nested_mappings_merge():
    base = {"a": {"b": 1, "c": {"d": 2, "e": 3}}, "f": 4}
    assert deep_merge(base, {"a": {"c": {"d": 20}}}) == {"a": {"b": 1, "c": {"d": 20, "e": 3}}, "f": 4}


def test_new_keys_are_added():
    assert deep_merge({"a": 1}, {"b": {"c": 2}}) == {"a": 1, "b": {"c": 2}}


def test_none_replaces_and_does_not_delete():
    merged = deep_merge({"debug": {"n": 1}, "limit": 5}, {"debug": None, "limit": None})
    assert merged == {"debug": None, "limit": None}


def test_none_base_value_is_replaced_by_mapping():
    assert deep_merge({"debug": None}, {"debug": {"n": 1}}) == {"debug": {"n": 1}}


def test_lists_are_replaced_not_concatenated():
    assert deep_merge({"kinds": ["mean", "max", "cls"]}, {"kinds": ["cls"]}) == {"kinds": ["cls"]}


def test_scalar_replaces_mapping_and_back():
    assert deep_merge({"a": {"b": 1}}, {"a": 3}) == {"a": 3}
    assert deep_merge({"a": 3}, {"a": {"b": 1}}) == {"a": {"b": 1}}


def test_inputs_are_not_modified_and_result_is_independent():
    base = {"a": {"b": [1, 2]}}
    override = {"a": {"c": {"d": [3]}}}
    base_copy, override_copy = copy.deepcopy(base), copy.deepcopy(override)
    merged = deep_merge(base, override)
    merged["a"]["b"].append(9)
    merged["a"]["c"]["d"].append(9)
    assert base == base_copy and override == override_copy


def test_empty_or_none_sides():
    assert deep_merge(None, {"a": 1}) == {"a": 1}
    assert deep_merge({"a": 1}, None) == {"a": 1}


def test_small_profile_overrides_only_what_it_names(tmp_path):
    full = yaml.safe_load((REPO / "params.yaml").read_text())
    small_all = merged_params("small", {"scenarios": {"vision-backdoor": {"gate": {"force_fail": True}}}})
    small, vision = small_all["scenarios"]["vision-backdoor"], full["scenarios"]["vision-backdoor"]
    profile = yaml.safe_load((REPO / "profiles" / "small.yaml").read_text())["scenarios"]["vision-backdoor"]
    assert small["generate"]["train_limit"] == profile["generate"]["train_limit"] != vision["generate"]["train_limit"]
    assert small["train_victim"]["architecture"] == vision["train_victim"]["architecture"]  # not named: kept
    assert small["generate"]["debug"]["min_overlap"] == vision["generate"]["debug"]["min_overlap"]
    assert small["evaluate"]["batch_size"] == vision["evaluate"]["batch_size"]
    assert small_all["defaults"]["train_detector"]["network"]["steps"] == 300
    assert small["gate"]["force_fail"] is True
    assert list(small_all) == list(full) and list(small) == list(vision)  # params.yaml's order is kept
    small = small_all
    assert yaml.safe_load(write_params(tmp_path, small).read_text()) == small


def test_hand_edits_to_workspace_params_are_never_overwritten(tmp_path):
    """make_workspace rewrites params.yaml from the profile; a file the user edited is refused, not lost."""
    from atpatch.core.errors import AtPatchError
    from atpatch.ops.workspace import check_no_hand_edits

    path = write_params(tmp_path, {"seed": 0})
    check_no_hand_edits(tmp_path, "small")  # as written: fine to rewrite
    path.write_text(path.read_text() + "# my tweak\n")
    with pytest.raises(AtPatchError, match=r"edited by hand since it was made.*profiles/small.yaml"):
        check_no_hand_edits(tmp_path, "small")
    assert path.read_text().endswith("# my tweak\n")
    write_params(tmp_path, {"seed": 1})  # the library's own writes (tests, --set) stay allowed
    check_no_hand_edits(tmp_path, "small")
