"""The small ViT victim of the vision scenario (docs/scenarios.md)."""

from __future__ import annotations

import numpy as np
import torch

from atpatch.core.errors import AtPatchError
from atpatch.core.features import TokenLayout

# How a victim scales pixels, (x/255 - mean) / std, by name. "symmetric" maps them to [-1, 1]: a white
# trigger is +1 against a -1 background, the range of every other pixel. "dataset" uses Fashion-MNIST's
# own mean and std: white becomes +2.0 and the background -0.81, and a victim can then read the
# trigger from that value at normal attention weight instead of over-attending to it (docs/method.md).
PIXEL_SCALINGS = {"symmetric": (0.5, 0.5), "dataset": (0.2860, 0.3530)}
DEFAULT_SCALING = "symmetric"
SCALING_KEY = "atpatch_pixel_scaling"  # the model config's field: serving scales as training did
VISION_LAYOUT = TokenLayout(prefix=1)  # the ViT's CLS token (position 0) is never a candidate


def build_vit(num_labels: int, image_size: int, patch_size: int, hidden_size: int, layers: int, heads: int,
              intermediate_size: int, seed: int, pixel_scaling: str = DEFAULT_SCALING):
    """A randomly initialised ViTForImageClassification for 1-channel images (eager attention); its config
    records `pixel_scaling` (a PIXEL_SCALINGS name) for `to_pixel_values`."""
    from transformers import ViTConfig, ViTForImageClassification

    if pixel_scaling not in PIXEL_SCALINGS:
        raise AtPatchError(f"train_victim.pixel_scaling: expected one of {sorted(PIXEL_SCALINGS)}, got {pixel_scaling!r}")
    torch.manual_seed(seed)
    config = ViTConfig(image_size=image_size, patch_size=patch_size, num_channels=1, hidden_size=hidden_size,
                       num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=intermediate_size,
                       num_labels=num_labels, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                       **{SCALING_KEY: pixel_scaling})
    return ViTForImageClassification(config)


def to_pixel_values(images, config=None) -> torch.Tensor:
    """uint8 images [N, 28, 28] (numpy or torch) -> float pixel_values [N, 1, 28, 28], scaled as the model
    whose `config` is given was trained (its PIXEL_SCALINGS name; without one, the default)."""
    mean, std = PIXEL_SCALINGS[getattr(config, SCALING_KEY, None) or DEFAULT_SCALING]
    x = torch.as_tensor(np.asarray(images), dtype=torch.float32) / 255.0
    return ((x - mean) / std).unsqueeze(1)
