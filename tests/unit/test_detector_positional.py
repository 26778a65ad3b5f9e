"""Positional features: a column's features as z-scores against clean inputs at the same position."""

import pytest
import torch

from atpatch.core.detector import Detector, DetectorConfig
from atpatch.core.errors import ShapeError

K, L, H = 5, 2, 2  # tokens, detector layers, heads; kinds mean+max -> F = 4


def detector(positions: int = K) -> Detector:
    return Detector(DetectorConfig(layers=[0, 1], heads=H, kinds=["mean", "max"], model_type="vit",
                                   positions=positions, steps=30, batch_size=16))


def clean_features(n: int = 64) -> torch.Tensor:
    """Position p always receives about p + 1: a position-dependent baseline."""
    base = torch.arange(1, K + 1, dtype=torch.float32)[None, :, None, None]
    return base + 0.1 * torch.randn(n, K, L, 2 * H, generator=torch.Generator().manual_seed(0))


def test_prepare_adds_positional_z_scores():
    det = detector()
    feats = clean_features()
    det.fit_positions(feats, torch.ones(len(feats), K, dtype=torch.bool))
    prepared = det.prepare(feats)
    assert prepared.shape == (64, K, L, 4 * H)
    assert torch.equal(prepared[..., : 2 * H], feats)
    z = prepared[..., 2 * H:]
    assert z.mean().abs() < 0.05 and (z.std() - 1).abs() < 0.1  # every position centred on its own baseline
    # The same value is ordinary at the last position and extreme at the first.
    probe = torch.full((1, K, L, 2 * H), float(K))
    z_probe = det.prepare(probe)[0, :, 0, 2 * H]
    assert z_probe[-1].abs() < 1 and z_probe[0] > 10


def test_layer_logit_matches_logits_and_fit_uses_prepared_features():
    det = detector()
    feats = clean_features()
    det.fit_positions(feats, torch.ones(len(feats), K, dtype=torch.bool))
    labels = torch.zeros(len(feats), K, dtype=torch.long)
    labels[:, 2] = 1
    det.fit(det.prepare(feats).reshape(-1, L, 4 * H), labels.reshape(-1), progress=False)
    with torch.no_grad():
        both = det.logits(feats)
        per_layer = torch.stack([det.layer_logit(feats[:, :, i], i) for i in range(L)], -1).amax(-1)
    assert torch.allclose(both, per_layer, atol=1e-6)


def test_positional_detector_needs_its_token_count_and_round_trips(tmp_path):
    det = detector()
    det.fit_positions(clean_features(), torch.ones(64, K, dtype=torch.bool))
    with pytest.raises(ShapeError, match="standardises 5 token positions, the input has 4"):
        det.logits(torch.zeros(1, K - 1, L, 2 * H))
    det.benign = torch.ones(3, H)
    det.save(tmp_path)
    loaded = Detector.load(tmp_path)
    assert torch.equal(loaded.position_mean, det.position_mean) and loaded.config.positions == K


def test_off_by_default_is_the_identity():
    det = detector(positions=0)
    feats = clean_features()
    assert det.prepare(feats) is feats and det.position_mean.numel() == 0
