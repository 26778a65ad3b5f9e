"""The attention patch (docs/method.md) as pure tensor functions.

Shapes: B batch, H heads, Q queries, K keys (Q == K for self-attention), L layers.
"""

from __future__ import annotations

import torch

from atpatch.core.errors import ShapeError, expect_shape

_TINY = 1e-12


def redistribute(
    probs: torch.Tensor, flagged: torch.Tensor, benign: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """Overwrite flagged key columns with the unified benign attention and rescale the rest.

    probs:   [B, H, Q, K] post-softmax attention of one layer (rows of real queries sum to 1).
    flagged: [B, K] bool, the key positions to patch (padding positions are ignored).
    benign:  [H] unified benign attention u[h] (length-scaled, about 1.0).
    valid:   [B, K] bool, real (unpadded) tokens.
    Returns [B, H, Q, K]. For an input with no flag the rows are returned bit for bit; otherwise,
    in every real query row, flagged columns get u/n (n real tokens) and the other real columns share
    the remaining mass in proportion to their old values. Guards: when |S|*u/n would reach 1 each
    flagged column gets 1/|S| (or 1/n when every column is flagged); when a row held all its mass on
    S the remainder is spread evenly. Padding rows and columns are left as they were.
    """
    b, h, q, k = probs.shape
    expect_shape("flagged", flagged, (b, k))
    expect_shape("valid", valid, (b, k))
    expect_shape("benign", benign, (h,))
    if q != k:
        raise ShapeError(f"probs: expected self-attention with Q == K, got Q={q}, K={k}")
    flagged = flagged.bool() & valid.bool()
    keep = valid.bool() & ~flagged  # [B, K]
    n = valid.sum(-1).to(probs.dtype)  # [B]
    s = flagged.sum(-1).to(probs.dtype)  # [B]
    n_keep = keep.sum(-1).to(probs.dtype)  # [B]

    value = benign.to(probs.dtype)[None, :] / n.clamp(min=1)[:, None]  # [B, H]
    # Guard |S| * u / n >= 1: cap at 1/|S| so the flagged mass never exceeds the row.
    value = torch.minimum(value, 1.0 / s.clamp(min=1)[:, None])
    # With nothing left to rescale, the flagged columns must carry the whole row.
    value = torch.where((n_keep == 0)[:, None], 1.0 / s.clamp(min=1)[:, None], value)
    rest_mass = (1.0 - s[:, None] * value).clamp(min=0.0)  # [B, H]

    keep4 = keep[:, None, None, :]  # [B, 1, 1, K]
    kept = torch.where(keep4, probs, torch.zeros((), dtype=probs.dtype))
    old_rest = kept.sum(-1, keepdim=True)  # [B, H, Q, 1]
    even = keep4.to(probs.dtype) / n_keep.clamp(min=1)[:, None, None, None]
    share = torch.where(old_rest > _TINY, kept / old_rest.clamp(min=_TINY), even)
    patched = share * rest_mass[:, :, None, None]
    patched = torch.where(flagged[:, None, None, :], value[:, :, None, None], patched)

    real_row = valid.bool()[:, None, :, None]  # [B, 1, Q, 1]
    touched = real_row & (s > 0)[:, None, None, None]
    return torch.where(touched, patched, probs)


def benign_attention(
    column_mass: torch.Tensor, candidate: torch.Tensor, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """Estimate u[l, h]: the mean length-scaled column mass that benign candidate tokens receive.

    column_mass: [N, K, L, H] length-scaled column means (features kind "mean") of clean inputs.
    candidate:   [N, K] bool, real non-special tokens.
    labels:      optional [N, K] fault labels; labelled tokens are left out.
    Returns [L, H].
    """
    expect_shape("candidate", candidate, tuple(column_mass.shape[:2]))
    mask = candidate.bool()
    if labels is not None:
        mask = mask & (labels == 0)
    if not mask.any():
        raise ShapeError("benign_attention: no benign candidate token to estimate u from")
    return column_mass[mask].mean(0)
