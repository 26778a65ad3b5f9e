"""The engine on tiny random models of every supported family, with a planted over-attention."""

import numpy as np
import pytest
import torch

from atpatch import (Detector, DetectorConfig, KINDS, PatchedClassifier, attention_seam, benign_attention,
                     record, select_kind)
from atpatch.eval.metrics import detection_metrics
from atpatch.core.seam import is_registered

from tiny_models import FAMILIES, build, plant


def eager_output(model, inputs):
    from atpatch import model_output

    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            return model_output(model(**inputs))
    finally:
        model.set_attn_implementation(previous)


def fit_detector(family, n=96, steps=300):
    """Record a debugging set (half triggered), fit and calibrate a detector; return it and a test set."""
    gen = torch.Generator().manual_seed(3)
    heads = family.model.config.num_attention_heads if hasattr(family.model.config, "num_attention_heads") \
        else family.model.config.n_heads
    parts = [family.make(n, True, gen), family.make(n, False, gen)]
    recs = [record(family.model, inputs, family.layout) for inputs, _ in parts]
    feats = torch.cat([r.stacked() for r in recs])  # [2n, K, L, F]
    cand = torch.cat([r.candidate for r in recs])
    labels = torch.cat([lab for _, lab in parts])
    config = DetectorConfig(layers=list(range(feats.shape[2])), heads=heads, kinds=list(KINDS),
                            model_type=family.model.config.model_type, layout=family.layout.to_dict(), steps=steps)
    det = Detector(config)
    det.fit(feats[cand], labels[cand], progress=False)
    mass = select_kind(feats, heads, KINDS, "mean")  # [N, K, L, H]
    det.benign = benign_attention(mass, cand, labels)
    clean_inputs, _ = family.make(n, False, gen)
    clean = record(family.model, clean_inputs, family.layout)
    det.calibrate(clean.stacked(), clean.candidate, fpr=0.0)
    return det


@pytest.fixture(scope="module", params=FAMILIES)
def planted(request):
    family = build(request.param)
    plant(family)
    return family, fit_detector(family)


def test_planted_over_attention_is_detected(planted):
    family, det = planted
    gen = torch.Generator().manual_seed(11)
    parts = [family.make(32, True, gen), family.make(32, False, gen)]
    recs = [record(family.model, inputs, family.layout) for inputs, _ in parts]
    feats = torch.cat([r.stacked() for r in recs])
    cand = torch.cat([r.candidate for r in recs])
    labels = torch.cat([lab for _, lab in parts])
    scores = det.score(feats)
    flags = det.flags(det.logits(feats).detach())
    metrics = detection_metrics(scores[cand].numpy(), labels[cand].numpy(), flags[cand].numpy())
    assert metrics["column_auroc"] >= 0.99, metrics


def set_native(model, name: str) -> str:
    """Run `model` with attention `name` where its family supports it (DistilBERT here: eager only)."""
    name = name if name == "eager" or model._supports_sdpa else "eager"
    model.set_attn_implementation(name)
    return name


def own_output(model, inputs):
    """The model's logits as configured (no seam): the pass-through reference."""
    from atpatch import model_output

    with torch.no_grad():
        return model_output(model(**inputs))


@pytest.mark.parametrize("native", ["eager", "sdpa"])
@pytest.mark.parametrize("mode", ["two-pass", "online"])
def test_patch_changes_triggered_logits_and_passes_clean_through_exactly(planted, mode, native):
    family, det = planted
    set_native(family.model, native)
    gen = torch.Generator().manual_seed(12)
    trig, _ = family.make(6, True, gen)
    clean, _ = family.make(6, False, gen)
    mixed = {k: torch.cat([trig[k], clean[k]]) for k in trig}
    reference = own_output(family.model, mixed)
    out = PatchedClassifier(family.model, det, mode=mode)(**mixed)
    hit = out.flagged.any(-1)
    assert hit[:6].all(), out.flagged
    assert not hit[6:].any()
    assert torch.equal(out.logits[6:], reference[6:])  # bit for bit, in a batch with flagged inputs
    for got, want in zip(out.logits[:6], reference[:6]):  # well beyond float noise
        assert not torch.allclose(got, want, rtol=1e-3, atol=1e-6), (got, want)


@pytest.mark.parametrize("layers", [(0,), None])
def test_seam_reads_only_the_layers_needed_and_keeps_the_native_output(planted, layers):
    """Under SDPA the seam computes probabilities beside it at the read layers only; they equal eager's,
    and the model's output stays the SDPA output bit for bit."""
    from atpatch import TokenLayout
    from atpatch.core.features import Recorder

    family, _ = planted
    model = family.model
    inputs, _ = family.make(5, True, torch.Generator().manual_seed(15))
    set_native(model, "eager")
    eager = record(model, inputs, family.layout, layers=layers)
    native = set_native(model, "sdpa")
    reference = own_output(model, inputs)
    rec = Recorder(TokenLayout.from_dict(family.layout.to_dict()), inputs, layers)
    seen = []

    def handler(layer, probs):
        seen.append(layer)
        return rec(layer, probs)

    handler.layers_needed = layers
    with attention_seam(model, handler):
        out = own_output(model, inputs)
    assert torch.equal(out, reference), native
    n_layers = len(eager.features)
    assert seen == list(layers or range(n_layers))
    for layer, feats in eager.features.items():
        assert torch.allclose(rec.features[layer], feats, atol=1e-6), layer
    set_native(model, "eager")


def test_seam_restores_model_and_leaves_nothing_behind(planted):
    family, _ = planted
    model = family.model
    inputs, _ = family.make(3, True, torch.Generator().manual_seed(13))
    model.set_attn_implementation("sdpa" if family.name != "distilbert" else "eager")
    before_impl = model.config._attn_implementation
    before = eager_output(model, inputs)
    with pytest.raises(RuntimeError, match="boom"):
        with attention_seam(model, lambda layer, probs: probs * 0 + 1.0 / probs.shape[-1]):
            assert is_registered()
            raise RuntimeError("boom")
    with attention_seam(model, lambda layer, probs: probs):
        pass
    assert model.config._attn_implementation == before_impl
    assert not is_registered()
    assert torch.equal(eager_output(model, inputs), before)
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


def test_flags_never_land_on_special_or_padding_tokens(planted):
    family, det = planted
    inputs, _ = family.make(8, True, torch.Generator().manual_seed(14))
    out = PatchedClassifier(family.model, det)(**inputs)
    r = record(family.model, inputs, family.layout)
    assert not (out.flagged & ~r.candidate).any()
    assert np.isfinite(out.logits.numpy()).all()


@pytest.mark.parametrize("planted", ["bert", "roberta", "distilbert"], indirect=True)  # the families with token ids
@pytest.mark.parametrize("mode", ["two-pass", "online"])
def test_a_flag_on_one_copy_of_a_token_reaches_its_other_copy_with_flag_same_token(planted, mode, monkeypatch):
    """The detector flags only the first copy of a token written twice (as a trigger split between its
    copies can score under the threshold); with flag_same_token the patch flags and patches both."""
    import copy
    from dataclasses import replace

    from atpatch import TokenLayout

    family, det = planted
    inputs, _ = family.make(4, False, torch.Generator().manual_seed(15))
    inputs["input_ids"][:, 3] = inputs["input_ids"][:, 2]  # every input holds a token twice: positions 2 and 3
    first_only = torch.zeros_like(inputs["input_ids"], dtype=torch.bool)
    first_only[:, 2] = True
    outputs = {}
    for tie in (False, True):
        tied = copy.deepcopy(det)
        tied.config.layout = replace(TokenLayout.from_dict(det.config.layout), flag_same_token=tie).to_dict()
        monkeypatch.setattr(tied, "flags", lambda logits: first_only[: logits.shape[0], : logits.shape[1]])
        outputs[tie] = PatchedClassifier(family.model, tied, mode=mode)(**inputs)
    assert outputs[False].flagged[:, 3].sum() == 0 and outputs[False].flagged[:, 2].all()
    assert outputs[True].flagged[:, 2].all() and outputs[True].flagged[:, 3].all()
    assert outputs[True].flagged.sum() == 2 * len(first_only)  # the copies only, nothing else
    assert not torch.equal(outputs[True].logits, outputs[False].logits)  # the second copy is patched too
