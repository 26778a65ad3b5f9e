"""Input dicts (name -> tensor, one row per input), as the victims take them."""

from __future__ import annotations

import numpy as np
import torch


def take(inputs: dict, idx) -> dict:
    idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
    return {k: v[idx] for k, v in inputs.items()}


def n_of(inputs: dict | None) -> int:
    return 0 if inputs is None else len(next(iter(inputs.values())))
