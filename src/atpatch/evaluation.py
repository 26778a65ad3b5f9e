"""Batched inference for the evaluate stage: predictions, flags, scores and latency.

Shapes: N inputs, K tokens, C classes.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm


@dataclass
class Predictions:
    """labels [N]; flagged [N, K] bool (empty for unpatched); scores [N, K]; candidate [N, K]."""

    labels: np.ndarray
    flagged: np.ndarray | None = None
    scores: np.ndarray | None = None
    logits: np.ndarray | None = None


def predict_plain(model, x: torch.Tensor, batch: int, desc: str, key: str = "pixel_values") -> Predictions:
    """Labels of an unpatched model (as configured) over x [N, ...]."""
    out = []
    with torch.no_grad():
        for start in tqdm(range(0, len(x), batch), desc=desc, leave=False):
            out.append(model(**{key: x[start:start + batch]}).logits)
    logits = torch.cat(out)
    return Predictions(logits.argmax(-1).numpy(), logits=logits.numpy())


def predict_patched(patched, x: torch.Tensor, batch: int, desc: str, key: str = "pixel_values") -> Predictions:
    """Labels, flags and position scores of a PatchedClassifier over x [N, ...]."""
    logits, flags, scores = [], [], []
    for start in tqdm(range(0, len(x), batch), desc=desc, leave=False):
        out = patched(**{key: x[start:start + batch]})
        logits.append(out.logits)
        flags.append(out.flagged)
        scores.append(out.scores)
    logits = torch.cat(logits)
    return Predictions(logits.argmax(-1).numpy(), torch.cat(flags).numpy(), torch.cat(scores).numpy(), logits.numpy())


def predict_oracle(model, x: torch.Tensor, flags: torch.Tensor, benign: torch.Tensor, layers, batch: int,
                   key: str = "pixel_values") -> Predictions:
    """Labels when the *known* fault tokens (flags [N, K]) are patched: the patch's ceiling,
    independent of the detector. Tells whether a backdoor runs through over-attention at all."""
    from .patched import _Redistributor
    from .seam import attention_seam

    out = []
    with torch.no_grad():
        for start in tqdm(range(0, len(x), batch), desc="oracle", leave=False):
            chunk, f = x[start:start + batch], flags[start:start + batch]
            valid = torch.ones(f.shape, dtype=torch.bool)
            with attention_seam(model, _Redistributor(f, valid, benign, tuple(layers))):
                out.append(model(**{key: chunk}).logits.argmax(-1))
    return Predictions(torch.cat(out).numpy())


def median_latency(fn: Callable[[torch.Tensor], object], x: torch.Tensor, batch: int, repeats: int) -> float:
    """Median seconds per call of fn on batches of x (one warm-up call first)."""
    batches = [x[i:i + batch] for i in range(0, len(x) - batch + 1, batch)] or [x]
    fn(batches[0])
    times = []
    with torch.no_grad():
        for i in range(repeats):
            chunk = batches[i % len(batches)]
            start = time.perf_counter()
            fn(chunk)
            times.append(time.perf_counter() - start)
    return statistics.median(times)
