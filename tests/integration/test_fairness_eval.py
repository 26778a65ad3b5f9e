"""fairness_eval.evaluate on a tiny random feature-token victim: the report's blocks, the oracle included."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from atpatch import KINDS, Detector, DetectorConfig

from atpatch.eval import fairness_eval
from atpatch.core.errors import AtPatchError
from atpatch.scenarios.models.tabular import build_feature_token_model
from atpatch.scenarios import tabular

N = 96
ORACLE_KEYS = {"CA", "flip_rate", "dp_diff", "eo_diff", "by_attribute", "flip_rate_reduction", "dp_diff_reduction",
               "eo_diff_reduction"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def victim(tmp_path_factory):
    """A random victim that depends on its inputs (so swapping sex flips predictions), the scenario's
    test_sets on a synthetic split, and an untrained detector."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"sex": rng.choice(["Female", "Male"], N), "race": rng.choice(["A", "B", "C"], N),
                          "job": rng.choice(["x", "y", "z"], N), "age": rng.integers(18, 70, N),
                          "label": rng.integers(0, 2, N)})
    out = tmp_path_factory.mktemp("generate")
    frame.to_parquet(out / "test.parquet")
    model = build_feature_token_model(frame, seed=0, categorical=["sex", "race", "job"], numeric=["age"],
                                      log_numeric=[], hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=32, hidden_dropout_prob=0.0).eval()
    params = {"generate": {"out": str(out), "protected": ["sex", "race"]}}
    data = tabular.test_sets(params, model)
    _spread(model, data["x"])
    torch.manual_seed(0)
    det = Detector(DetectorConfig(layers=[0, 1], heads=2, kinds=list(KINDS), model_type=model.config.model_type,
                                  layout=tabular.layout().to_dict()))
    det.benign = torch.ones(2, 2)
    det.set_threshold(0.5)
    return model, det, data


@torch.no_grad()
def _spread(model, x: dict) -> None:
    """Large random weights (the default init barely lets the output move) and a classifier bias that
    puts the decision between the two middle test inputs: both labels predicted, no input on the edge."""
    gen = torch.Generator().manual_seed(1)
    for name, p in model.named_parameters():
        if (p.dim() >= 2 and "LayerNorm" not in name) or name in ("num_weight", "num_bias", "cls_token"):
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    logits = model(**x).logits
    margin = (logits[:, 1] - logits[:, 0]).sort().values
    model.classifier.bias[1] -= (margin[N // 2 - 1] + margin[N // 2]) / 2


def _params(benign_value: str) -> dict:
    return {"scenario": "tiny-fairness", "kind": "tabular-fairness",
            "evaluate": {"modes": ["two-pass", "online"], "default_attention": "sdpa",
                         "batch_size": 32, "latency_batch": 32, "latency_repeats": 1},
            "patch": {"mode": "two-pass", "patch_layers": None, "benign_value": benign_value}}


def test_tabular_test_sets_carry_a_mask_per_counterfactual(victim):
    _, _, data = victim
    for name, a in data["attributes"].items():
        assert len(a["fault_mask_cf"]) == len(a["x_cf"]) == (2 if name == "sex" else 3)  # one set per value
        for mask in a["fault_mask_cf"]:
            assert np.array_equal(mask, a["fault_mask"]) and mask.sum(1).tolist() == [1] * N


def test_test_sets_score_another_split_when_asked(victim, tmp_path):
    """split="debug" (operating points chosen off the test split) reads debug.parquet the same way."""
    model, _, data = victim
    rows = pd.DataFrame({"sex": ["Female", "Male", "Male"], "race": ["A", "B", "C"], "job": ["x", "y", "z"],
                         "age": [30, 40, 50], "label": [0, 1, 1]})
    rows.to_parquet(tmp_path / "debug.parquet")
    params = {"generate": {"out": str(tmp_path), "protected": ["sex", "race"]}}
    debug = tabular.test_sets(params, model, split="debug")
    assert debug["y"].tolist() == [0, 1, 1] and debug["attributes"]["sex"]["sensitive"].tolist() == ["Female", "Male", "Male"]
    assert len(debug["attributes"]["race"]["x_cf"]) == 3 and len(data["y"]) == N
    with pytest.raises(AtPatchError, match="split 'test' not found"):
        tabular.test_sets(params, model)


@pytest.mark.parametrize("benign_value", ["zero", "unified"])
def test_report_has_an_oracle_block_shaped_like_a_patched_one(victim, benign_value, capsys):
    model, det, data = victim
    report, _ = fairness_eval.evaluate(_params(benign_value), model, det, data)
    json.dumps(report)  # evaluate.json
    oracle, patched = report["oracle"], report["patched"]["two-pass"]
    assert set(oracle) == ORACLE_KEYS and ORACLE_KEYS <= set(patched)
    assert set(oracle["by_attribute"]) == {"sex", "race"}
    for name, block in oracle["by_attribute"].items():
        assert set(block) == set(patched["by_attribute"][name]), name
    assert "oracle" in report["definitions"]
    assert 0.0 <= oracle["CA"] <= 1.0 and 0.0 <= oracle["flip_rate"] <= 1.0
    assert oracle["flip_rate"] == oracle["by_attribute"]["sex"]["flip_rate"]
    base = report["unpatched"]["flip_rate"]
    assert base > 0.05  # the scaled sex embedding makes the victim depend on sex
    if benign_value == "zero":
        # No query attends the sex token at any layer: the CLS state cannot depend on it.
        assert oracle["flip_rate"] == 0.0 and oracle["flip_rate_reduction"] == 1.0
    fairness_eval.print_table(report)
    assert "oracle" in capsys.readouterr().out
    iv = report["intervals"]  # bootstrap intervals around the default mode's numbers
    assert (iv["mode"], iv["attribute"], iv["n_boot"]) == ("two-pass", "sex", 1000) and "intervals" in report["definitions"]
    for key in ("CA_drop", "flip_rate_reduction", "dp_diff_reduction", "eo_diff_reduction"):
        point = report["unpatched"]["CA"] - patched["CA"] if key == "CA_drop" else patched[key]
        low, high = iv[key]
        assert low <= point + 1e-9 and point - 1e-9 <= high, (key, iv[key], point)  # a percentile interval of a smooth statistic


def test_oracle_masks_need_one_mask_per_counterfactual(victim):
    _, _, data = victim
    masks = fairness_eval.oracle_masks(data)
    assert len(masks) == 1 + sum(len(a["x_cf"]) for a in data["attributes"].values())
    assert all(m is data["attributes"]["sex"]["fault_mask"] for _, m in masks[3:])  # race counterfactuals
    sex = {k: v for k, v in data["attributes"]["sex"].items() if k != "fault_mask_cf"}
    with pytest.raises(AtPatchError, match="fault_mask_cf"):
        fairness_eval.oracle_masks({**data, "attributes": {**data["attributes"], "sex": sex}})


def test_protected_candidates_confine_flags_to_the_gated_column(victim):
    """extract.candidates: protected -> only the sex column can be flagged, whatever the detector scores."""
    from atpatch import PatchedClassifier
    from atpatch.scenarios.models.tabular import column_positions

    model, det, data = victim
    params = {"kind": "tabular-fairness", "generate": {"protected": ["sex", "race"]},
              "extract": {"candidates": "protected"}}
    layout = tabular.layout(model, params)
    assert layout.positions == (column_positions(model.config)["sex"],) and layout.flag_as_group
    race_first = {**params, "generate": {"protected": ["race", "sex"]}}  # the first attribute is the gated one
    assert tabular.layout(model, race_first).positions == (column_positions(model.config)["race"],)
    with pytest.raises(AtPatchError, match="needs the victim"):
        tabular.layout(None, params)
    narrow = Detector(DetectorConfig(**{**det.config.__dict__, "layout": layout.to_dict()}))
    narrow.benign = det.benign
    narrow.load_state_dict(det.state_dict())
    narrow.set_threshold(0.0)  # every candidate scores above 0: every input is flagged, on sex only
    out = PatchedClassifier(model, narrow, benign_value="zero")(**data["x"])
    assert out.flagged.sum(1).tolist() == [1] * N
    assert bool(out.flagged[:, column_positions(model.config)["sex"]].all())
