"""Batched inference for the evaluate stage: predictions, flags, scores and latency.

Inputs are dicts of batch-first tensors (the model's keyword inputs, e.g. {"pixel_values": ...} or
{"input_ids": ..., "attention_mask": ...}). Shapes: N inputs, K tokens, C classes.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from atpatch.eval import rowwise

Inputs = dict[str, torch.Tensor]


def n_rows(inputs: Inputs) -> int:
    return len(next(iter(inputs.values())))


def rows(inputs: Inputs, start: int, stop: int | None = None) -> Inputs:
    """Rows start:stop of every tensor (stop None: one row less slicing code at call sites)."""
    return {k: v[start:stop] for k, v in inputs.items()}


def batches(inputs: Inputs, batch: int, desc: str):
    """Consecutive row slices of `batch` inputs, with a progress bar."""
    for start in tqdm(range(0, n_rows(inputs), batch), desc=desc, leave=False):
        yield start, rows(inputs, start, start + batch)


@dataclass
class Predictions:
    """labels [N]; flagged [N, K] bool (empty for unpatched); scores [N, K]; candidate [N, K]."""

    labels: np.ndarray
    flagged: np.ndarray | None = None
    scores: np.ndarray | None = None
    logits: np.ndarray | None = None


def predict_plain(model, inputs: Inputs, batch: int, desc: str) -> Predictions:
    """Labels and logits of an unpatched model (as configured); sharded inside rowwise.sharded."""
    return rowwise.run(_predict_plain, {"inputs": inputs}, model=model, batch=batch, desc=desc)


def _predict_plain(model, inputs: Inputs, batch: int, desc: str) -> Predictions:
    out = []
    with torch.no_grad():
        for _, chunk in batches(inputs, batch, desc):
            out.append(model(**chunk).logits)
    logits = torch.cat(out)
    return Predictions(logits.argmax(-1).numpy(), logits=logits.numpy())


def predict_patched(patched, inputs: Inputs, batch: int, desc: str) -> Predictions:
    """Labels, flags and position scores of a PatchedClassifier; sharded inside rowwise.sharded."""
    return rowwise.run(_predict_patched, {"inputs": inputs}, patched=patched, batch=batch, desc=desc)


def _predict_patched(patched, inputs: Inputs, batch: int, desc: str) -> Predictions:
    logits, flags, scores = [], [], []
    for _, chunk in batches(inputs, batch, desc):
        out = patched(**chunk)
        logits.append(out.logits)
        flags.append(out.flagged)
        scores.append(out.scores)
    logits = torch.cat(logits)
    return Predictions(logits.argmax(-1).numpy(), torch.cat(flags).numpy(), torch.cat(scores).numpy(), logits.numpy())


def predict_oracle(model, inputs: Inputs, flags: torch.Tensor, benign: torch.Tensor, layers, batch: int) -> Predictions:
    """Labels when the *known* fault tokens (flags [N, K]) are patched: the patch's ceiling,
    independent of the detector. Tells whether a backdoor runs through over-attention at all.
    Sharded inside rowwise.sharded."""
    return rowwise.run(_predict_oracle, {"inputs": inputs, "flags": torch.as_tensor(flags)}, model=model,
                       benign=benign, layers=tuple(layers), batch=batch)


def _predict_oracle(model, inputs: Inputs, flags: torch.Tensor, benign: torch.Tensor, layers, batch: int) -> Predictions:
    from atpatch.core.patched import Redistributor
    from atpatch.core.seam import attention_seam

    out = []
    with torch.no_grad():
        for start, chunk in batches(inputs, batch, "oracle"):
            f = flags[start:start + batch]
            mask = chunk.get("attention_mask")
            valid = torch.ones(f.shape, dtype=torch.bool) if mask is None else mask.bool()
            with attention_seam(model, Redistributor(f, valid, benign, tuple(layers))):
                out.append(model(**chunk).logits.argmax(-1))
    return Predictions(torch.cat(out).numpy())


def median_latencies(fns: dict[str, Callable[..., object]], inputs: Inputs, batch: int, repeats: int) -> dict[str, float]:
    """Median seconds per call of each fn(**chunk), on full batches of the inputs, measured round robin:
    every repeat times each fn once on the same batch, so load from other processes hits them alike and
    their ratios stay fair (one warm-up call each first)."""
    n = n_rows(inputs)
    chunks = [rows(inputs, i, i + batch) for i in range(0, n - batch + 1, batch)] or [inputs]
    times: dict[str, list[float]] = {name: [] for name in fns}
    with torch.no_grad():
        for fn in fns.values():
            fn(**chunks[0])
        for i in range(repeats):
            chunk = chunks[i % len(chunks)]
            for name, fn in fns.items():
                start = time.perf_counter()
                fn(**chunk)
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}
