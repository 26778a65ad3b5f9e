"""Backdoor triggers for 28x28 grey images, and per-token labels for the ViT debugging set.

Coordinates: `x` is the column, `y` the row of the trigger square's top-left pixel.
"""

from __future__ import annotations

import numpy as np

from atpatch.core.errors import AtPatchError

IMAGE_SIZE = 28
PATTERNS = ("white", "checker")
POSITIONS = ("corner", "random")


def _pattern(size: int, pattern: str) -> np.ndarray:
    """The trigger square, uint8 [size, size]."""
    if pattern == "white":
        return np.full((size, size), 255, np.uint8)
    if pattern == "checker":
        r, c = np.indices((size, size))
        # Top-left pixel white so that even a 1x1 trigger is visible.
        return np.where((r + c) % 2 == 0, 255, 0).astype(np.uint8)
    raise AtPatchError(f"trigger.pattern: expected one of {PATTERNS}, got {pattern!r}")


def apply_badnets(images: np.ndarray, xs: np.ndarray, ys: np.ndarray, size: int, pattern: str) -> np.ndarray:
    """Stamp a `size`x`size` square at (xs[i], ys[i]) on each image.

    images: uint8 [N, H, W]; xs, ys: int [N]. Returns a new uint8 [N, H, W] array (input untouched).
    """
    if images.ndim != 3 or len(xs) != len(images) or len(ys) != len(images):
        raise AtPatchError(
            f"apply_badnets: expected images [N,H,W] with N positions, got images {images.shape}, "
            f"xs {np.shape(xs)}, ys {np.shape(ys)}"
        )
    h, w = images.shape[1:]
    xs, ys = np.asarray(xs), np.asarray(ys)
    if len(xs) and (xs.min() < 0 or ys.min() < 0 or xs.max() + size > w or ys.max() + size > h):
        raise AtPatchError(f"apply_badnets: a {size}x{size} trigger does not fit inside {h}x{w} at some position")
    square = _pattern(size, pattern)
    out = images.copy()
    # One vectorised assignment per distinct position (corner triggers: a single one).
    pos = np.stack([xs, ys], axis=1)
    for x, y in np.unique(pos, axis=0):
        sel = (xs == x) & (ys == y)
        out[sel, y : y + size, x : x + size] = square
    return out


def blend_pattern(pattern_seed: int, shape: tuple[int, int] = (IMAGE_SIZE, IMAGE_SIZE)) -> np.ndarray:
    """The fixed random-noise image used by the Blend trigger, uint8 `shape`."""
    return np.random.default_rng(pattern_seed).integers(0, 256, size=shape, dtype=np.uint8)


def apply_blend(images: np.ndarray, alpha: float, pattern_seed: int) -> np.ndarray:
    """Blend trigger: (1 - alpha) * image + alpha * noise over the whole image.

    images: uint8 [N, H, W]. Returns uint8 [N, H, W] (rounded, clipped to 0..255).
    """
    if not 0.0 < alpha <= 1.0:
        raise AtPatchError(f"trigger.blend_alpha: expected 0 < alpha <= 1, got {alpha}")
    noise = blend_pattern(pattern_seed, images.shape[1:]).astype(np.float32)
    mixed = (1.0 - alpha) * images.astype(np.float32) + alpha * noise
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def trigger_positions(
    n: int, size: int, position: str, rng: np.random.Generator, image_size: int = IMAGE_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners (xs, ys), int64 [n] each, for `n` triggers of side `size`.

    "corner": bottom-right, x = y = image_size - size for all. "random": uniform over every
    position where the square fits (draws from `rng` only in this case).
    """
    if not 1 <= size <= image_size:
        raise AtPatchError(f"trigger.size: expected 1..{image_size}, got {size}")
    if position == "corner":
        full = np.full(n, image_size - size, np.int64)
        return full, full.copy()
    if position == "random":
        xs = rng.integers(0, image_size - size + 1, size=n, dtype=np.int64)
        ys = rng.integers(0, image_size - size + 1, size=n, dtype=np.int64)
        return xs, ys
    raise AtPatchError(f"trigger.position: expected one of {POSITIONS}, got {position!r}")


def token_labels(
    xs: np.ndarray, ys: np.ndarray, size: int, patch_size: int, image_size: int = IMAGE_SIZE, min_overlap: int = 1
) -> np.ndarray:
    """Per-token fault labels for a ViT with a CLS token, int8 [N, 1 + (image_size // patch_size) ** 2].

    Token 0 (CLS) is always 0. Patch token `1 + row * grid + col` is 1 when the trigger square
    at (xs[i], ys[i]) covers at least `min_overlap` pixels of that patch. A row with x < 0 or
    y < 0 has no trigger (all zeros).
    """
    if image_size % patch_size != 0:
        raise AtPatchError(f"patch_size: expected a divisor of image size {image_size}, got {patch_size}")
    if min_overlap < 1:
        raise AtPatchError(f"debug.min_overlap: expected >= 1 pixel, got {min_overlap}")
    xs, ys = np.asarray(xs, np.int64), np.asarray(ys, np.int64)
    grid = image_size // patch_size
    starts = np.arange(grid, dtype=np.int64) * patch_size  # [grid]

    def overlap_1d(p: np.ndarray) -> np.ndarray:
        # [N, grid]: pixels shared by [p, p + size) and each patch's [start, start + patch_size).
        lo = np.maximum(p[:, None], starts[None, :])
        hi = np.minimum(p[:, None] + size, starts[None, :] + patch_size)
        return np.clip(hi - lo, 0, None)

    area = overlap_1d(ys)[:, :, None] * overlap_1d(xs)[:, None, :]  # [N, rows, cols]
    has_trigger = (xs >= 0) & (ys >= 0)
    patches = (area >= min_overlap) & has_trigger[:, None, None]
    out = np.zeros((len(xs), 1 + grid * grid), np.int8)
    out[:, 1:] = patches.reshape(len(xs), grid * grid)
    return out


def whole_image_labels(triggered: np.ndarray, patch_size: int, image_size: int = IMAGE_SIZE) -> np.ndarray:
    """Per-token labels of a trigger spread over the whole image (Blend), int8 [N, 1 + grid ** 2]: every
    patch token of a triggered row is 1, CLS and untriggered rows 0. No single column carries it."""
    if image_size % patch_size != 0:
        raise AtPatchError(f"patch_size: expected a divisor of image size {image_size}, got {patch_size}")
    grid = image_size // patch_size
    out = np.zeros((len(triggered), 1 + grid * grid), np.int8)
    out[np.asarray(triggered, bool), 1:] = 1
    return out
