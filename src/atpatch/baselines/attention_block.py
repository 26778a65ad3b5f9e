"""An input-level, attention-based defense: block the most attended input token when it is an outlier.

Each input is scored from the victim's own attention maps (one recorded eager forward,
`atpatch.core.features.record(..., keep_maps=True)`), over the positions that may be flagged (the
layout's candidates: no CLS, special or padding tokens):

- vision (`pixel_values`): attention rollout (Abnar and Zuidema, 2020): per layer the heads are
  fused (mean by default), the identity is added for the residual (0.5 A + 0.5 I, rows
  renormalised), the layers are multiplied from the first up; the score of a patch is the CLS
  row of the rollout. The top patch's pixels are filled with the clean per-channel mean (or 0).
- text (`input_ids`): the CLS row of the attention averaged over heads and layers; the top token is
  removed (the rest shifts left, a pad token goes at the end).
- tabular (`cat_ids`, `num_values`, the feature-token model): as text; the top column is blocked
  by setting it to "unknown" (categorical index 0) or to the training mean (numeric 0.0).

Same detection budget as AtPatch: an input is touched only when its top score is an outlier among
its own candidates, z = (max - mean) / std, above a threshold calibrated on clean inputs exactly
as AtPatch's detector is (`Detector.calibrate`): at most floor(fpr * N) of the N clean calibration
inputs exceed it; `fpr` should be AtPatch's calibration FPR. Touched inputs are predicted again,
the others keep the recorded forward's prediction. `gate: always` blocks the top token of every
input instead (no budget). `Defended.flagged` holds the last predict's touched inputs.

Uses: calib_inputs (clean; default clean_inputs) to calibrate, layout (default layout_for(model)).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from atpatch.core.errors import AtPatchError
from atpatch.eval.evaluation import Inputs, n_rows, rows
from atpatch.core.features import TokenLayout, record
from atpatch.baselines import Defended, Timer, merged, need

NAME = "attention_block"
USES = ("calib_inputs", "clean_inputs", "layout")
DEFAULTS = {
    "fpr": 0.005,          # AtPatch's calibration FPR (params.yaml train_detector.calibration_fpr)
    "gate": "outlier",     # outlier | always
    "score": "auto",       # auto (vision: rollout; text/tabular: cls) | rollout | cls
    "head_fusion": "mean",  # mean | max | min (rollout)
    "fill": "mean",        # vision: mean (per-channel clean mean) | zero
    "batch_size": 256,
}


def modality(inputs: Inputs) -> str:
    if "pixel_values" in inputs:
        return "vision"
    if "input_ids" in inputs:
        return "text"
    if "cat_ids" in inputs:
        return "tabular"
    raise AtPatchError(f"{NAME}: inputs {sorted(inputs)} are neither pixel_values, input_ids nor cat_ids")


def rollout(maps: dict[int, torch.Tensor], head_fusion: str = "mean") -> torch.Tensor:
    """Attention rollout [B, K, K] from maps layer -> [B, H, K, K] (Abnar and Zuidema, 2020)."""
    fuse = {"mean": lambda a: a.mean(1), "max": lambda a: a.amax(1), "min": lambda a: a.amin(1)}[head_fusion]
    result = None
    for layer in sorted(maps):
        a = fuse(maps[layer].double())
        a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], dtype=a.dtype)
        a = a / a.sum(-1, keepdim=True)
        result = a if result is None else a @ result
    return result.float()


def cls_attention(maps: dict[int, torch.Tensor]) -> torch.Tensor:
    """[B, K]: the CLS (query 0) row averaged over heads and layers."""
    return torch.stack([maps[layer][:, :, 0, :].mean(1) for layer in sorted(maps)]).mean(0)


def scores(model, inputs: Inputs, layout: TokenLayout, kind: str, head_fusion: str, batch: int):
    """(top position [N], outlier z [N], logits [N, C]) for every input, batch by batch."""
    tops, zs, logits = [], [], []
    for s in range(0, n_rows(inputs), batch):
        rec = record(model, rows(inputs, s, s + batch), layout, keep_maps=True)
        score = rollout(rec.maps, head_fusion)[:, 0, :] if kind == "rollout" else cls_attention(rec.maps)
        cand = rec.candidate
        if not bool(cand.any(-1).all()):
            raise AtPatchError(f"{NAME}: an input has no candidate position (layout {layout})")
        count = cand.sum(-1).clamp(min=1).to(score.dtype)
        mean = (score * cand).sum(-1) / count
        std = (((score - mean[:, None]) ** 2 * cand).sum(-1) / count).sqrt()
        top = score.masked_fill(~cand, -math.inf).argmax(-1)
        tops.append(top)
        zs.append((score.gather(1, top[:, None])[:, 0] - mean) / (std + 1e-12))
        logits.append(rec.logits)
    return torch.cat(tops), torch.cat(zs), torch.cat(logits)


def calibrate(z_clean: torch.Tensor, fpr: float) -> float:
    """Threshold such that at most floor(fpr * N) clean inputs have z above it (as Detector.calibrate)."""
    ranked = z_clean.sort(descending=True).values
    allowed = int(math.floor(fpr * len(ranked)))
    return float(ranked[allowed]) if allowed < len(ranked) else -math.inf


def block(model, inputs: Inputs, positions: torch.Tensor, prefix: int, fill: torch.Tensor | None) -> Inputs:
    """Inputs with token `positions[i]` of row i blocked (masked patch / removed token / unknown column)."""
    kind = modality(inputs)
    out = {k: v.clone() for k, v in inputs.items()}
    if kind == "vision":
        x = out["pixel_values"]
        ps = model.config.patch_size
        ps = ps[0] if isinstance(ps, (tuple, list)) else ps
        grid_w = x.shape[-1] // ps
        for i, pos in enumerate(positions.tolist()):
            r, c = divmod(pos - prefix, grid_w)
            x[i, :, r * ps:(r + 1) * ps, c * ps:(c + 1) * ps] = 0.0 if fill is None else fill[:, None, None]
    elif kind == "text":
        pad = getattr(model.config, "pad_token_id", None) or 0
        k = out["input_ids"].shape[1]
        for name, v in out.items():
            if v.dim() != 2 or v.shape[1] != k:
                continue
            for i, pos in enumerate(positions.tolist()):
                v[i, pos:-1] = inputs[name][i, pos + 1:].clone()
                v[i, -1] = pad if name == "input_ids" else 0
    else:
        n_cat = out["cat_ids"].shape[1]
        for i, pos in enumerate(positions.tolist()):
            col = pos - 1  # token 0 is CLS
            if col < n_cat:
                out["cat_ids"][i, col] = 0
            else:
                out["num_values"][i, col - n_cat] = 0.0
    return out


def apply(model, repair: dict, params: dict | None = None, seed: int = 0) -> Defended:
    from atpatch.ops.patching import layout_for

    p = merged(DEFAULTS, params)
    calib = repair.get("calib_inputs")
    if calib is None:
        calib = need(repair, "clean_inputs", method=NAME)[0]
    layout = repair.get("layout") or layout_for(model)
    if p["gate"] not in ("outlier", "always"):
        raise AtPatchError(f"{NAME}: gate must be outlier or always, got {p['gate']!r}")
    kind_of_input = modality(calib)
    kind = p["score"] if p["score"] != "auto" else ("rollout" if kind_of_input == "vision" else "cls")
    model.eval()
    with Timer() as timer:
        _, z_clean, _ = scores(model, calib, layout, kind, p["head_fusion"], p["batch_size"])
        threshold = -math.inf if p["gate"] == "always" else calibrate(z_clean, p["fpr"])
        fill = None
        if kind_of_input == "vision" and p["fill"] == "mean":
            fill = calib["pixel_values"].float().mean((0, 2, 3))
    touched = float((z_clean > threshold).float().mean())
    changes = {"modality": kind_of_input, "score": kind, "threshold_z": threshold, "fpr": p["fpr"],
               "calib_inputs": n_rows(calib), "calib_touched_rate": touched,
               "fill": None if fill is None else fill.tolist(), "params": p}
    defended = Defended(NAME, None, timer.seconds, changes, model)

    def predict(inputs: Inputs, sensitive=None) -> np.ndarray:
        top, z, logits = scores(model, inputs, layout, kind, p["head_fusion"], p["batch_size"])
        labels = logits.argmax(-1)
        flagged = z > threshold
        if bool(flagged.any()):
            idx = flagged.nonzero()[:, 0]
            blocked = block(model, {k: v[idx] for k, v in inputs.items()}, top[idx], layout.prefix, fill)
            with torch.no_grad():
                for s in range(0, len(idx), p["batch_size"]):
                    labels[idx[s:s + p["batch_size"]]] = model(**rows(blocked, s, s + p["batch_size"])).logits.argmax(-1)
        defended.flagged = flagged.numpy()
        return labels.numpy()

    defended.predict_fn = predict
    return defended
