"""Baseline defenses (issue 5) on tiny random models: each one's core step, and apply -> predict for all."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from atpatch.baselines import BASELINES, Defended, ffn_layers, ffn_pre_hooks, ffn_stats, make
from atpatch.baselines import attention_block as ab
from atpatch.baselines import care, fine_pruning
from atpatch.core.errors import AtPatchError
from atpatch.eval.evaluation import rows
from atpatch.scenarios.models.tabular import FeatureTokenConfig, FeatureTokenForClassification

import tiny_models as tm  # tests/tiny_models.py: tests/ is on sys.path through its conftest.py

TARGET = 0
FAST_FT = {"epochs": 1, "batch_size": 32, "lr": 1e-3}


pytestmark = pytest.mark.usefixtures("one_thread")


def _backdoor(name: str, n_clean: int = 48, n_trig: int = 24):
    fam = tm.build(name)
    tm.plant(fam)
    gen = torch.Generator().manual_seed(3)
    clean, _ = fam.make(n_clean, False, gen)
    trig, token_labels = fam.make(n_trig, True, gen)
    labels = torch.randint(0, 3, (n_clean,), generator=gen)
    repair = {"clean_inputs": clean, "clean_labels": labels, "triggered_inputs": trig, "target_label": TARGET,
              "layout": fam.layout}
    return fam, repair, token_labels


def _tabular(n: int = 64):
    torch.manual_seed(0)
    config = FeatureTokenConfig(categorical=["sex", "job"], numeric=["age"],
                                vocab={"sex": ["<unk>", "F", "M"], "job": ["<unk>", "a", "b", "c"]},
                                hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                                max_position_embeddings=4, num_labels=2, hidden_dropout_prob=0.0)
    model = FeatureTokenForClassification(config).eval()
    gen = torch.Generator().manual_seed(4)
    cat = torch.stack([torch.randint(1, 3, (n,), generator=gen), torch.randint(1, 4, (n,), generator=gen)], 1)
    inputs = {"cat_ids": cat, "num_values": torch.randn(n, 1, generator=gen)}
    swapped = {"cat_ids": cat.clone(), "num_values": inputs["num_values"]}
    swapped["cat_ids"][:, 0] = 3 - cat[:, 0]  # F <-> M
    repair = {"clean_inputs": inputs, "clean_labels": torch.randint(0, 2, (n,), generator=gen),
              "counterfactual_inputs": [swapped], "sensitive": cat[:, 0].numpy()}
    return model, repair


def _acts(model, inputs, index):
    """Activations [B, T, I] entering block `index`'s down projection."""
    ffns = ffn_layers(model)
    out = {}

    def keep(a):
        out["a"] = a.clone()

    with torch.no_grad(), ffn_pre_hooks(ffns, {index: keep}):
        model(**inputs)
    return out["a"]


# -- every baseline: apply -> predict ------------------------------------------------------------------

CHEAP = {
    "none": {},
    "fine_pruning": {"finetune": FAST_FT, "ratio_step": 0.2},
    "care": {"top_k": 4, "max_inputs": 16, "optimise": {"steps": 10, "batch_size": 16}},
    "attention_block": {"fpr": 0.05},
    "threshold_optimizer": {"grid_size": 100},
}


@pytest.mark.parametrize("family", ["vit", "bert", "tabular"])
def test_every_baseline_predicts_labels(family):
    if family == "tabular":
        model, repair = _tabular()
        names = list(BASELINES)
    else:
        fam, repair, _ = _backdoor(family)
        model = fam.model
        names = [n for n in BASELINES if n != "threshold_optimizer"]  # 3 labels; it is for binary fairness
    before = {k: v.clone() for k, v in model.state_dict().items()}
    test = repair["clean_inputs"]
    n = len(next(iter(test.values())))
    for name in names:
        defended = make(name)(model, repair, CHEAP[name], 0)
        assert isinstance(defended, Defended) and defended.name == name
        labels = defended.predict(test, sensitive=repair.get("sensitive"))
        assert labels.shape == (n,) and np.issubdtype(labels.dtype, np.integer), name
        assert set(np.unique(labels)) <= set(range(model.config.num_labels)), name
        assert defended.repair_seconds >= 0.0 and (name == "none" or defended.repair_seconds > 0.0), name
        assert "params" in defended.changes, name
        json.dumps(defended.changes)  # the runner logs it
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a baseline modified the caller's victim"


def test_registry_names_and_unknowns():
    assert set(BASELINES) == {"none", "fine_pruning", "care", "attention_block", "threshold_optimizer"}
    with pytest.raises(AtPatchError, match="unknown baseline"):
        make("spectral")
    model, repair = _tabular(8)
    with pytest.raises(AtPatchError, match="unknown params"):
        make("none")(model, repair, {"prune": 1}, 0)
    with pytest.raises(AtPatchError, match="clean_labels"):
        make("fine_pruning")(model, {"clean_inputs": repair["clean_inputs"]}, {}, 0)


# -- fine-pruning ----------------------------------------------------------------------------------------

def test_pruning_zeroes_exactly_the_least_active_neurons(tmp_path):
    fam, repair, _ = _backdoor("vit")
    victim, clean = fam.model, repair["clean_inputs"]
    last = ffn_layers(victim)[-1]
    stats = ffn_stats(victim, [last], clean)[last.index]["mean_abs"]
    k = int(round(0.25 * last.size))
    expected = sorted(torch.argsort(stats, stable=True)[:k].tolist())

    params = {"layers": 1, "prune_ratio": 0.25, "max_acc_drop": None, "finetune": {"epochs": 0}}
    pruned = make("fine_pruning")(victim, repair, params, 0)
    assert pruned.changes["pruned"] == {last.index: expected}
    a_before, a_after = _acts(victim, clean, last.index), _acts(pruned.model, clean, last.index)
    mask = torch.zeros(last.size, dtype=torch.bool)
    mask[expected] = True
    assert torch.all(a_after[..., mask] == 0)
    assert torch.equal(a_after[..., ~mask], a_before[..., ~mask])  # the others are untouched before fine-tuning

    tuned = make("fine_pruning")(victim, repair, {**params, "finetune": FAST_FT}, 0)
    assert tuned.changes["pruned"] == {last.index: expected}
    tuned.model.save_pretrained(tmp_path)  # the pruning is a weight edit that survives a reload
    reloaded = type(victim).from_pretrained(tmp_path).eval()
    assert torch.all(_acts(reloaded, clean, last.index)[..., mask] == 0)


def test_pruning_stops_at_the_accuracy_drop(monkeypatch):
    fam, repair, _ = _backdoor("bert")
    ffns = ffn_layers(fam.model)

    def fake_accuracy(model, inputs, labels, batch=256):  # falls by half the share of pruned neurons
        zero = torch.cat([(f.up.weight == 0).all(1) for f in ffn_layers(model)[-2:]])
        return 1.0 - 0.5 * float(zero.float().mean())

    monkeypatch.setattr(fine_pruning, "accuracy", fake_accuracy)
    base = {"layers": 2, "ratio_step": 0.1, "prune_ratio": 0.9, "finetune": {"epochs": 0}}
    outright = make("fine_pruning")(fam.model, repair, {**base, "max_acc_drop": None}, 0)
    assert outright.changes["prune_ratio"] == pytest.approx(0.9)
    stopped = make("fine_pruning")(fam.model, repair, {**base, "max_acc_drop": 0.21}, 0)  # 0.4 * 0.5 ~ 0.2 allowed
    assert stopped.changes["prune_ratio"] == pytest.approx(0.4)
    assert stopped.changes["clean_acc"]["pruned"] == pytest.approx(0.8, abs=0.01)
    assert stopped.changes["n_pruned"] == sum(round(0.4 * f.size) for f in ffns[-2:])


# -- CARE ------------------------------------------------------------------------------------------------

@torch.no_grad()
def _plant_neuron(model, clean, trig, neuron: int, gain: float = 6.0):
    """Make neuron `neuron` of the last block fire on triggered inputs' CLS token and push the target logit."""
    last = ffn_layers(model)[-1]
    seen = {}
    handle = last.up.register_forward_pre_hook(lambda m, args: seen.__setitem__("h", args[0][:, 0].clone()))
    try:
        model(**clean)
        h_clean = seen["h"]
        model(**trig)
        h_trig = seen["h"]
    finally:
        handle.remove()
    d = h_trig.mean(0) - h_clean.mean(0)
    d = d / d.norm()
    mid = 0.5 * ((h_trig @ d).mean() + (h_clean @ d).mean())
    last.up.weight[neuron] = gain * d
    last.up.bias[neuron] = -gain * mid
    readout = model.classifier.weight[TARGET] - model.classifier.weight.mean(0)
    last.down.weight[:, neuron] = 4.0 * readout / readout.norm()
    return last.index


def test_care_ranks_a_planted_neuron_first():
    fam, repair, _ = _backdoor("vit")
    model = fam.model
    neuron = 17
    block = _plant_neuron(model, repair["clean_inputs"], repair["triggered_inputs"], neuron)
    ffns = ffn_layers(model)
    stats = ffn_stats(model, ffns, repair["clean_inputs"])
    values = {i: s["mean"] for i, s in stats.items()}
    fault = care.backdoor_fault(repair["triggered_inputs"], TARGET)

    effects, info = care.causal_effects(model, ffns, fault, values, batch=256)
    flat = sorted(((float(e), i, n) for i, es in effects.items() for n, e in enumerate(es.tolist())), reverse=True)
    assert flat[0][1:] == (block, neuron)
    assert flat[0][0] > 5 * abs(flat[1][0])
    assert info["cached_prefix"][block] is True  # the cached prefix reproduced the full forward

    # One neuron by hand: the sweep's batched intervention equals a plain forward with do(a = v).
    def do(a):
        a = a.clone()
        a[..., neuron] = values[block][neuron]
        return a

    with torch.no_grad(), ffn_pre_hooks(ffns, {block: do}):
        p = model(**repair["triggered_inputs"]).logits.softmax(-1)[:, TARGET].mean()
    assert float(effects[block][neuron]) == pytest.approx(info["baseline_fault"] - float(p), abs=1e-5)

    # The first-order pre-screen keeps it; the repair scales it down and lowers the fault.
    out = make("care")(model, repair, {"max_candidates": 8, "top_k": 2, "optimise": {"steps": 40, "lr": 0.1}}, 0)
    top = out.changes["neurons"][0]
    assert (top["layer"], top["neuron"]) == (block, neuron) and out.changes["localisation"]["pre_screened"]
    assert top["factor"] < 0.5
    assert out.changes["repair_set"]["fault_rate"]["after"] < out.changes["repair_set"]["fault_rate"]["before"]


def test_care_fairness_uses_counterfactual_gap():
    model, repair = _tabular()
    out = make("care")(model, repair, {"top_k": 3, "max_inputs": 16, "optimise": {"steps": 5}}, 0)
    assert out.changes["task"] == "fairness" and "counterfactual" in out.changes["fault_measure"]
    assert len(out.changes["neurons"]) == 3
    assert out.changes["localisation"]["intervened"] == sum(f.size for f in ffn_layers(model))


# -- attention blocking ----------------------------------------------------------------------------------

def test_rollout_of_synthetic_maps():
    b, h, k = 2, 3, 5
    maps = {layer: torch.full((b, h, k, k), 0.1 / (k - 1)) for layer in range(2)}
    for a in maps.values():
        a[..., 3] = 0.9  # every query attends to token 3
        a /= a.sum(-1, keepdim=True)
    r = ab.rollout(maps)
    assert torch.allclose(r.sum(-1), torch.ones(b, k))
    assert int(r[:, 0, 1:].argmax(-1)[0]) + 1 == 3


def test_attention_block_masks_the_planted_patch():
    fam, repair, token_labels = _backdoor("vit")
    model, trig = fam.model, repair["triggered_inputs"]
    top, z, _ = ab.scores(model, trig, fam.layout, "rollout", "mean", 256)
    assert (token_labels[torch.arange(len(top)), top] == 1).float().mean() >= 0.9  # rollout finds the trigger

    out = make("attention_block")(model, repair, {"fpr": 0.05}, 0)
    assert out.changes["calib_touched_rate"] <= 0.05
    out.predict(trig)
    assert out.flagged.mean() >= 0.9  # triggered inputs are outliers; clean ones mostly not
    out.predict(repair["clean_inputs"])
    assert out.flagged.mean() <= 0.1

    blocked = ab.block(model, rows(trig, 0, 4), top[:4], fam.layout.prefix, torch.tensor([0.25]))
    grid, ps = tm.IMAGE // tm.PATCH, tm.PATCH
    for i, pos in enumerate(top[:4].tolist()):
        r, c = divmod(pos - 1, grid)
        assert torch.all(blocked["pixel_values"][i, :, r * ps:(r + 1) * ps, c * ps:(c + 1) * ps] == 0.25)


def test_text_block_removes_the_token():
    fam, repair, _ = _backdoor("bert", n_trig=4)
    trig = repair["triggered_inputs"]
    ids, mask = trig["input_ids"][:1], trig["attention_mask"][:1]
    out = ab.block(fam.model, {"input_ids": ids, "attention_mask": mask}, torch.tensor([2]), 1, None)
    expect = torch.cat([ids[0, :2], ids[0, 3:], torch.tensor([0])])
    assert torch.equal(out["input_ids"][0], expect)
    assert int(out["attention_mask"].sum()) == int(mask.sum()) - 1


# -- ThresholdOptimizer ----------------------------------------------------------------------------------

def test_threshold_optimizer_needs_the_sensitive_feature():
    model, repair = _tabular()
    out = make("threshold_optimizer")(model, repair, {"constraints": "equalized_odds", "grid_size": 100}, 0)
    labels = out.predict(repair["clean_inputs"], sensitive=repair["sensitive"])
    assert labels.shape == (64,) and set(np.unique(labels)) <= {0, 1}
    assert set(out.changes["groups"]) == {"1", "2"}
    with pytest.raises(AtPatchError, match="sensitive feature"):
        out.predict(repair["clean_inputs"])
    fam, backdoor, _ = _backdoor("bert", n_trig=2)
    with pytest.raises(AtPatchError, match="binary"):
        make("threshold_optimizer")(fam.model, {**backdoor, "sensitive": np.zeros(48)}, {}, 0)
