"""No defense: the victim as is (the reference row of every comparison)."""

from __future__ import annotations

from atpatch.baselines import Defended, merged, plain_predictor

NAME = "none"
USES: tuple[str, ...] = ()
DEFAULTS = {"batch_size": 256}


def apply(model, repair: dict | None = None, params: dict | None = None, seed: int = 0) -> Defended:
    p = merged(DEFAULTS, params)
    model.eval()
    return Defended(NAME, plain_predictor(model, p["batch_size"]), 0.0, {"params": p}, model)
