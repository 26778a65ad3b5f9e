"""The small ViT victim of the vision scenario (DESIGN.md section 6)."""

from __future__ import annotations

import numpy as np
import torch

from ..features import TokenLayout

# Pixels map to [-1, 1] ((x/255 - 0.5) / 0.5): a white trigger is +1 against a -1 background, the
# same range as every other pixel. With the data set's own mean and std (0.286, 0.353) white
# becomes +2.0 and the background -0.81, and the victim learns the trigger from that value instead
# of through over-attention (docs/method.md, "Attention mediation"; benchmarks/victim_recipes.py).
PIXEL_MEAN, PIXEL_STD = 0.5, 0.5
VISION_LAYOUT = TokenLayout(prefix=1)  # the ViT's CLS token (position 0) is never a candidate


def build_vit(num_labels: int, image_size: int, patch_size: int, hidden_size: int, layers: int, heads: int,
              intermediate_size: int, seed: int):
    """A randomly initialised ViTForImageClassification for 1-channel images (eager attention)."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    config = ViTConfig(image_size=image_size, patch_size=patch_size, num_channels=1, hidden_size=hidden_size,
                       num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=intermediate_size,
                       num_labels=num_labels, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return ViTForImageClassification(config)


def to_pixel_values(images) -> torch.Tensor:
    """uint8 images [N, 28, 28] (numpy or torch) -> normalised float pixel_values [N, 1, 28, 28]."""
    x = torch.as_tensor(np.asarray(images), dtype=torch.float32) / 255.0
    return ((x - PIXEL_MEAN) / PIXEL_STD).unsqueeze(1)
