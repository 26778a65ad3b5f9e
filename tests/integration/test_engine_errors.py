"""Persistence round trip and clear errors on bad input."""

import json

import pytest
import torch

from atpatch import (AtPatchError, Detector, DetectorConfig, DetectorFileError, PatchedClassifier, ShapeError,
                     UnsupportedModelError, attention_seam)
from atpatch.core.seam import is_registered


def small_detector(seed=0):
    det = Detector(DetectorConfig(layers=[0, 1], heads=2, kinds=["mean", "max", "cls"], model_type="bert",
                                  steps=30, batch_size=32, seed=seed))
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(200, 2, 6, generator=gen)
    y = torch.zeros(200, dtype=torch.long)
    y[:20] = 1
    x[:20] += 2.0
    det.fit(x, y, progress=False)
    det.benign = torch.ones(2, 2)
    return det, x


def test_save_load_round_trip_is_exact(tmp_path):
    det, x = small_detector()
    det.set_threshold(0.7)
    det.save(tmp_path)
    loaded = Detector.load(tmp_path)
    assert torch.equal(loaded.score(x), det.score(x))
    assert loaded.config == det.config
    assert torch.equal(loaded.benign, det.benign)


def test_fit_is_repeatable_with_the_same_seed():
    a, x = small_detector(seed=3)
    b, _ = small_detector(seed=3)
    assert torch.equal(a.score(x), b.score(x))


def test_corrupt_weights_file_is_named(tmp_path):
    det, _ = small_detector()
    det.save(tmp_path)
    (tmp_path / "detector.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(DetectorFileError, match="detector.safetensors"):
        Detector.load(tmp_path)


def test_config_with_missing_field_is_named(tmp_path):
    det, _ = small_detector()
    det.save(tmp_path)
    raw = json.loads((tmp_path / "detector.json").read_text())
    del raw["heads"]
    (tmp_path / "detector.json").write_text(json.dumps(raw))
    with pytest.raises(DetectorFileError, match="heads"):
        Detector.load(tmp_path)


def test_features_from_another_model_are_refused():
    det, _ = small_detector()
    with pytest.raises(ShapeError, match="another model"):
        det.score(torch.rand(4, 10, 2, 12))  # 4 heads where the detector expects 2


def test_unknown_model_type_is_refused():
    class Config:
        model_type = "gpt2"

    class Fake(torch.nn.Module):
        config = Config()

    with pytest.raises(UnsupportedModelError, match="gpt2"):
        with attention_seam(Fake(), lambda layer, p: p):
            pass
    assert not is_registered()


def test_model_that_cannot_switch_attention_is_refused(monkeypatch):
    from transformers import BertConfig, BertForSequenceClassification

    model = BertForSequenceClassification(BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=8))
    monkeypatch.setattr(BertForSequenceClassification, "_can_set_attn_implementation", classmethod(lambda cls: False))
    with pytest.raises(UnsupportedModelError, match="AttentionInterface"):
        with attention_seam(model, lambda layer, p: p):
            pass


def test_bad_mode_and_mismatched_detector_are_refused():
    from transformers import ViTConfig, ViTForImageClassification

    det, _ = small_detector()
    vit = ViTForImageClassification(ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=8,
                                              num_hidden_layers=2, num_attention_heads=2, intermediate_size=8))
    with pytest.raises(AtPatchError, match="mode"):
        PatchedClassifier(vit, det, mode="flash")
    with pytest.raises(AtPatchError, match="model type 'bert'"):
        PatchedClassifier(vit, det)
