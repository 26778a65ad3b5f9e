"""The vision-backdoor scenario: BadNets/Blend on Fashion-MNIST, a small ViT trained here.

Implements BackdoorKind (atpatch.scenarios.kind).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atpatch.scenarios.data.fashion_mnist import load_split
from atpatch.scenarios.data.triggers import (IMAGE_SIZE, apply_badnets, apply_blend, token_labels, trigger_positions,
                                   whole_image_labels)
from atpatch.core.errors import AtPatchError
from atpatch.io import atomic_dir, write_json_atomic
from atpatch.scenarios.models.vit import DEFAULT_SCALING, VISION_LAYOUT, build_vit, to_pixel_values
from atpatch.scenarios import checks

INPUT_KIND = "image"


def layout(model=None, params: dict | None = None):
    """Token layout: the CLS token (position 0) is never a candidate."""
    return VISION_LAYOUT

# Independent random streams per purpose: changing e.g. the debug sizes does not move the
# poisoned images. Each stream is default_rng(SeedSequence([seed, STREAM])).
STREAM_POISON, STREAM_TRAIN_POS, STREAM_TEST_POS, STREAM_DEBUG = 1, 2, 3, 4
SPLITS = ("train", "test_clean", "test_triggered", "debug")


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream]))


def _limit(images: np.ndarray, labels: np.ndarray, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    return (images, labels) if limit is None else (images[:limit], labels[:limit])


def apply_trigger(images: np.ndarray, trig: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply the configured trigger to uint8 [N, 28, 28]; returns (images, xs, ys), xs/ys int64 [N]
    (-1 for blend, which has no location)."""
    n = len(images)
    if trig["kind"] == "badnets":
        xs, ys = trigger_positions(n, trig["size"], trig["position"], rng)
        return apply_badnets(images, xs, ys, trig["size"], trig["pattern"]), xs, ys
    if trig["kind"] == "blend":
        none = np.full(n, -1, np.int64)
        return apply_blend(images, trig["blend_alpha"], trig.get("blend_seed", 1)), none, none.copy()
    raise AtPatchError(f"generate.trigger.kind: expected 'badnets' or 'blend', got {trig['kind']!r}")


def build_train(images: np.ndarray, labels: np.ndarray, g: dict, seed: int) -> dict[str, np.ndarray]:
    """Poison exactly round(poison_rate * N) non-target images: trigger on, label := target."""
    target = g["target_label"]
    candidates = np.flatnonzero(labels != target)
    n_poison = round(g["poison_rate"] * len(images))
    if n_poison > len(candidates):
        raise AtPatchError(f"generate.poison_rate: {n_poison} poisoned images needed, only {len(candidates)} non-target")
    idx = np.sort(_rng(seed, STREAM_POISON).choice(candidates, size=n_poison, replace=False))
    images, labels = images.copy(), labels.copy()
    images[idx], _, _ = apply_trigger(images[idx], g["trigger"], _rng(seed, STREAM_TRAIN_POS))
    labels[idx] = target
    poisoned = np.zeros(len(images), bool)
    poisoned[idx] = True
    return {"image": images, "label": labels, "poisoned": poisoned}


def build_test_triggered(images: np.ndarray, labels: np.ndarray, g: dict, seed: int) -> dict[str, np.ndarray]:
    """Test images whose true label is not the target, trigger applied; label keeps the truth."""
    keep = labels != g["target_label"]
    timg, xs, ys = apply_trigger(images[keep], g["trigger"], _rng(seed, STREAM_TEST_POS))
    return {"image": timg, "label": labels[keep], "trigger_x": xs, "trigger_y": ys}


def trigger_token_labels(xs: np.ndarray, ys: np.ndarray, triggered: np.ndarray, g: dict) -> np.ndarray:
    """Per-token fault labels int8 [N, 1 + grid**2]: the patches a BadNets square covers (at least
    `debug.min_overlap` pixels), or every patch of a Blend-triggered image (the blend is everywhere)."""
    if g["trigger"]["kind"] == "blend":
        return whole_image_labels(triggered, g["patch_size"], IMAGE_SIZE)
    return token_labels(xs, ys, g["trigger"]["size"], g["patch_size"], IMAGE_SIZE, g["debug"]["min_overlap"])


def build_debug(images: np.ndarray, labels: np.ndarray, poisoned: np.ndarray, g: dict, seed: int) -> dict[str, np.ndarray]:
    """Debugging set from unpoisoned training images: triggered + clean rows (part 'fit') and
    clean calibration rows (part 'calib'), with per-token labels int8 [N, 1 + grid**2]
    (`trigger_token_labels`: Blend labels every patch, a limit case with no single column to patch)."""
    d, trig = g["debug"], g["trigger"]
    n_trig, n_clean, n_calib = d["n_triggered"], d["n_clean"], d["n_calib"]
    pool = np.flatnonzero(~poisoned)
    need = n_trig + n_clean + n_calib
    if need > len(pool):
        raise AtPatchError(f"generate.debug: {need} images needed, only {len(pool)} unpoisoned training images")
    rng = _rng(seed, STREAM_DEBUG)
    idx = rng.permutation(pool)[:need]
    img = images[idx].copy()
    xs = np.full(need, -1, np.int64)
    ys = np.full(need, -1, np.int64)
    img[:n_trig], xs[:n_trig], ys[:n_trig] = apply_trigger(img[:n_trig], trig, rng)
    triggered = np.arange(need) < n_trig
    part = np.where(np.arange(need) < n_trig + n_clean, "fit", "calib")
    tl = trigger_token_labels(xs, ys, triggered, g)
    return {"image": img, "label": labels[idx], "token_labels": tl, "triggered": triggered, "part": part,
            "trigger_x": xs, "trigger_y": ys}


def _features(split: str, n_tokens: int) -> Any:
    from datasets import Array2D, Features, Sequence, Value

    f = {"image": Array2D((IMAGE_SIZE, IMAGE_SIZE), "uint8"), "label": Value("int64")}
    if split == "train":
        f["poisoned"] = Value("bool")
    if split == "debug":
        f.update(token_labels=Sequence(Value("int8"), length=n_tokens), triggered=Value("bool"), part=Value("string"))
    if split in ("test_triggered", "debug"):
        f.update(trigger_x=Value("int64"), trigger_y=Value("int64"))
    return Features(f)


def generate(params: dict, root: str | Path = ".") -> dict:
    """Build, validate and write every split under `root / generate.out`; return the summary."""
    from datasets import Dataset, disable_progress_bars

    disable_progress_bars()
    t0 = time.perf_counter()
    root = Path(root)
    seed, g = int(params["seed"]), params["generate"]
    raw = root / params["fetch"]["dest"]

    docs = checks.docs_dir(params, "generate", root)
    read = {split: load_split(raw, split) for split in ("train", "test")}
    for split, (images, labels) in read.items():
        checks.raw_images(f"{raw}/{split}", images, labels, IMAGE_SIZE, docs)
    tr_img, tr_lab = _limit(*read["train"], g.get("train_limit"))
    te_img, te_lab = _limit(*read["test"], g.get("test_limit"))

    splits: dict[str, dict[str, np.ndarray]] = {}
    splits["train"] = build_train(tr_img, tr_lab, g, seed)
    splits["test_clean"] = {"image": te_img, "label": te_lab}
    splits["test_triggered"] = build_test_triggered(te_img, te_lab, g, seed)
    if g.get("debug"):
        splits["debug"] = build_debug(tr_img, tr_lab, splits["train"]["poisoned"], g, seed)

    out = root / g["out"]
    checks.image_splits(str(out), splits, g, IMAGE_SIZE, docs)

    n_tokens = 1 + (IMAGE_SIZE // g["patch_size"]) ** 2
    summary = {"seed": seed, "trigger": g["trigger"], "target_label": g["target_label"],
               "rows": {k: int(len(v["label"])) for k, v in splits.items()},
               "poisoned": int(splits["train"]["poisoned"].sum()), "n_tokens": n_tokens}
    with atomic_dir(out) as tmp:
        for name, cols in splits.items():
            ds = Dataset.from_dict({k: v for k, v in cols.items()}, features=_features(name, n_tokens))
            ds.save_to_disk(str(tmp / name))
        write_json_atomic(tmp / "summary.json", summary)
    print(f"generate: {summary['rows']} ({summary['poisoned']} poisoned) -> {out} in {time.perf_counter() - t0:.1f} s")
    return summary


def _split(params: dict, name: str):
    from datasets import load_from_disk

    path = Path(params["generate"]["out"]) / name
    if not path.is_dir():
        raise AtPatchError(f"{path}: split {name!r} not found; run stage generate first")
    return load_from_disk(str(path)).with_format("numpy")


def train_victim(params: dict, log) -> torch.nn.Module:
    """The ViT of `train_victim.architecture`, trained on the poisoned training split."""
    from atpatch.scenarios.training import train_classifier

    p, seed = params["train_victim"], params["seed"]
    train_set = _split(params, "train")
    model = build_vit(num_labels=10, image_size=IMAGE_SIZE, patch_size=params["generate"]["patch_size"], seed=seed,
                      pixel_scaling=p.get("pixel_scaling", DEFAULT_SCALING), **p["architecture"])
    model.set_attn_implementation("eager")
    inputs = {"pixel_values": to_pixel_values(train_set["image"], model.config)}
    train_classifier(model, inputs, torch.as_tensor(train_set["label"]), p, seed, log)
    return model


def debug_set(params: dict, model) -> dict:
    """The debugging split as model inputs, per-token labels, triggered and calibration masks."""
    debug = _split(params, "debug")
    return {"inputs": {"pixel_values": to_pixel_values(debug["image"], model.config)},
            "token_labels": torch.from_numpy(np.stack(debug["token_labels"]).astype(np.int8)),
            "triggered": torch.from_numpy(np.asarray(debug["triggered"], dtype=bool)),
            "calib": torch.from_numpy(np.asarray(debug["part"]) == "calib")}


def debug_labels(params: dict) -> np.ndarray:
    """True labels of the debugging split, in debug_set's order."""
    return np.asarray(_split(params, "debug")["label"])


def target_label(params: dict) -> int:
    """The attack's target class."""
    return int(params["generate"]["target_label"])


def test_sets(params: dict, model=None) -> dict:
    """Clean and triggered test inputs with labels; the triggered set's true trigger tokens (pixels scaled as
    `model` was trained; without a model, the default scaling)."""
    g = params["generate"]
    clean, trig = _split(params, "test_clean"), _split(params, "test_triggered")
    labels = trigger_token_labels(trig["trigger_x"], trig["trigger_y"], np.ones(len(trig["label"]), bool), g)
    config = getattr(model, "config", None)
    return {"x_clean": {"pixel_values": to_pixel_values(clean["image"], config)}, "y_clean": clean["label"],
            "x_trig": {"pixel_values": to_pixel_values(trig["image"], config)}, "y_trig": trig["label"],
            "tokens_trig": labels, "target": target_label(params), "show_trig": trig["image"],
            "show_clean": clean["image"]}


# Test splits a user can pick rows from (`atpatch inspect --split`): short name -> generated split.
TEST_SPLITS = {"clean": "test_clean", "triggered": "test_triggered"}


def test_frame(params: dict, split: str, rows: slice = slice(None)):
    """Rows of a test split as the pyfunc input (column `image`, 784 ints per row) plus their `label`."""
    import pandas as pd

    data = _split(params, TEST_SPLITS[split])[rows]
    return pd.DataFrame({"image": [img.reshape(-1).astype(int).tolist() for img in data["image"]],
                         "label": data["label"].astype(int)})


def input_example(params: dict, rows: int = 2):
    """`rows` clean test images as the pyfunc input."""
    return test_frame(params, "clean", slice(0, rows))[["image"]]
