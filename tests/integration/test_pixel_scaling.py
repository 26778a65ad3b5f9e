"""A vision victim's pixel scaling is part of the model: saved in its config, used by every consumer."""

import numpy as np
import pytest

from atpatch.core.errors import AtPatchError
from atpatch.scenarios.models.loading import load_classifier
from atpatch.scenarios.models.vit import build_vit, to_pixel_values
from atpatch.ops.serving.pyfunc_model import image_inputs

WHITE = np.full((1, 28, 28), 255, np.uint8)
BLACK = np.zeros((1, 28, 28), np.uint8)


def test_scaling_travels_with_the_saved_victim(tmp_path):
    build_vit(10, 28, 4, 16, 1, 2, 32, seed=0, pixel_scaling="dataset").save_pretrained(tmp_path)
    loaded = load_classifier(tmp_path)
    assert float(to_pixel_values(WHITE, loaded.config).max()) == pytest.approx((1 - 0.2860) / 0.3530)
    assert float(to_pixel_values(BLACK, loaded.config).min()) == pytest.approx(-0.2860 / 0.3530)
    served = image_inputs(WHITE, loaded)["pixel_values"]  # serving scales as training did
    assert served.equal(to_pixel_values(WHITE, loaded.config))


def test_default_scaling_is_symmetric():
    assert float(to_pixel_values(WHITE).max()) == 1.0 and float(to_pixel_values(BLACK).min()) == -1.0
    model = build_vit(10, 28, 4, 16, 1, 2, 32, seed=0)
    assert to_pixel_values(WHITE, model.config).equal(to_pixel_values(WHITE))


def test_unknown_scaling_is_refused():
    with pytest.raises(AtPatchError, match="pixel_scaling: expected one of"):
        build_vit(10, 28, 4, 16, 1, 2, 32, seed=0, pixel_scaling="imagenet")
