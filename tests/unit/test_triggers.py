"""Trigger stamping, positions and per-token labels (pure numpy)."""

import numpy as np
import pytest

from atpatch.scenarios.data.triggers import apply_badnets, apply_blend, token_labels, trigger_positions
from atpatch.core.errors import AtPatchError


def test_corner_position_is_bottom_right():
    xs, ys = trigger_positions(5, 4, "corner", np.random.default_rng(0))
    assert xs.tolist() == [24] * 5 and ys.tolist() == [24] * 5


def test_random_positions_fit_and_are_seeded():
    xs, ys = trigger_positions(1000, 5, "random", np.random.default_rng(1))
    assert xs.min() >= 0 and ys.min() >= 0 and xs.max() <= 23 and ys.max() <= 23
    assert len(np.unique(xs)) > 10  # actually spread
    xs2, ys2 = trigger_positions(1000, 5, "random", np.random.default_rng(1))
    assert np.array_equal(xs, xs2) and np.array_equal(ys, ys2)


def test_unknown_position_raises():
    with pytest.raises(AtPatchError, match="trigger.position"):
        trigger_positions(1, 4, "middle", np.random.default_rng(0))


def test_badnets_white_pixels_only_in_square():
    imgs = np.full((2, 28, 28), 7, np.uint8)
    out = apply_badnets(imgs, np.array([24, 0]), np.array([24, 3]), 4, "white")
    assert (imgs == 7).all()  # input untouched
    assert (out[0, 24:, 24:] == 255).all() and out[0].sum() == 16 * 255 + (784 - 16) * 7
    assert (out[1, 3:7, 0:4] == 255).all() and (out[1, :3] == 7).all() and (out[1, 7:] == 7).all()


def test_badnets_checker_pattern():
    out = apply_badnets(np.zeros((1, 28, 28), np.uint8), np.array([10]), np.array([20]), 3, "checker")
    assert out[0, 20:23, 10:13].tolist() == [[255, 0, 255], [0, 255, 0], [255, 0, 255]]
    assert out.sum() == 5 * 255


def test_badnets_out_of_bounds_raises():
    with pytest.raises(AtPatchError, match="does not fit"):
        apply_badnets(np.zeros((1, 28, 28), np.uint8), np.array([25]), np.array([0]), 4, "white")


def test_blend_is_deterministic_and_bounded():
    imgs = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    a, b = apply_blend(imgs, 0.2, 5), apply_blend(imgs, 0.2, 5)
    assert a.dtype == np.uint8 and np.array_equal(a, b)
    assert np.abs(a.astype(int) - imgs.astype(int)).max() <= 52  # at most alpha * 255, rounded


def test_token_labels_corner_trigger_hits_last_patch():
    tl = token_labels(np.array([24]), np.array([24]), size=4, patch_size=4, image_size=28, min_overlap=4)
    assert tl.shape == (1, 50) and tl.dtype == np.int8
    assert np.flatnonzero(tl[0]).tolist() == [1 + 6 * 7 + 6]  # CLS is token 0


def test_token_labels_straddling_trigger_and_min_overlap():
    # A 4x4 square at (x=2, y=5): rows 5..8 cover patch rows 1 (3 px) and 2 (1 px);
    # cols 2..5 cover patch cols 0 (2 px) and 1 (2 px). Overlaps: 6, 6, 2, 2 pixels.
    tl = token_labels(np.array([2]), np.array([5]), size=4, patch_size=4, image_size=28, min_overlap=1)
    assert np.flatnonzero(tl[0]).tolist() == [1 + 7 + 0, 1 + 7 + 1, 1 + 14 + 0, 1 + 14 + 1]
    tl4 = token_labels(np.array([2]), np.array([5]), size=4, patch_size=4, image_size=28, min_overlap=4)
    assert np.flatnonzero(tl4[0]).tolist() == [1 + 7 + 0, 1 + 7 + 1]


def test_token_labels_no_trigger_and_cls_always_zero():
    tl = token_labels(np.array([-1, 0]), np.array([-1, 0]), size=28, patch_size=7, image_size=28, min_overlap=1)
    assert tl.shape == (2, 17)
    assert tl[0].sum() == 0
    assert tl[1, 0] == 0 and tl[1, 1:].all()


def test_token_labels_rejects_bad_patch_size():
    with pytest.raises(AtPatchError, match="patch_size"):
        token_labels(np.array([0]), np.array([0]), size=4, patch_size=5, image_size=28)
