"""PatchedClassifier: a model + detector that hot-fixes over-attention during the forward pass.

Two modes (docs/method.md):
- "two-pass": an unpatched forward records features; only inputs with a flag run again, patched.
- "online": each detector layer scores the current map inside the forward; flags accumulate and
  every patched layer from then on is redistributed.
Inputs with nothing flagged return the model's own logits bit for bit in both modes: those of its
attention implementation as loaded (SDPA, eager, ...), which the seam keeps at every layer (atpatch.core.seam).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from atpatch.core.detector import Detector
from atpatch.core.errors import AtPatchError
from atpatch.core.features import Recorder, TokenLayout, column_features, model_output
from atpatch.core.patch import redistribute
from atpatch.core.seam import attention_layers, attention_seam

MODES = ("two-pass", "online")
BENIGN_VALUES = ("unified", "uniform", "zero")
# The shipped patch when none is configured (params.yaml's `patch:` keys left unset).
PATCH_DEFAULTS = {"mode": MODES[0], "patch_layers": None, "benign_value": BENIGN_VALUES[0]}


def shipped_patch(params: dict) -> dict:
    """The patch a scenario ships (mode, benign value, layers): its params' `patch` section over PATCH_DEFAULTS."""
    return {**PATCH_DEFAULTS, **(params.get("patch") or {})}


@dataclass
class PatchedOutput:
    """logits [B, C] (last hidden state for a bare encoder); flagged [B, K] bool positions; patched_layers [B, L] bool; scores [B, K]."""

    logits: torch.Tensor
    flagged: torch.Tensor
    patched_layers: torch.Tensor
    scores: torch.Tensor


def _select(inputs: dict, index: torch.Tensor) -> dict:
    """The rows `index` of every batched tensor in `inputs`."""
    return {k: v[index] if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


class Redistributor:
    """Handler for the second pass: patch fixed flags at the patched layers."""

    def __init__(self, flags, valid, benign, patch_layers):
        self.flags, self.valid, self.benign, self.patch_layers = flags, valid, benign, patch_layers
        self.layers_needed = tuple(patch_layers)  # the seam leaves the other layers native

    def __call__(self, layer: int, probs: torch.Tensor) -> torch.Tensor:
        if layer not in self.patch_layers:
            return probs
        return redistribute(probs, self.flags, self.benign[layer], self.valid)


class _OnlinePatcher:
    """Handler for online mode: score at detector layers, patch at patched layers."""

    def __init__(self, owner: "PatchedClassifier", inputs: dict):
        self.owner, self.inputs = owner, inputs
        self.flags = self.valid = self.candidate = self.running = self.patched = None
        self.layers_needed = tuple(sorted(set(owner.detector.config.layers) | set(owner.patch_layers)))

    def _start(self, probs: torch.Tensor) -> None:
        b, k = probs.shape[0], probs.shape[-1]
        self.valid, self.candidate = self.owner.layout.masks(self.inputs, b, k)
        self.flags = torch.zeros(b, k, dtype=torch.bool)
        self.running = torch.full((b, k), -torch.inf)
        self.patched = torch.zeros(b, self.owner.num_layers, dtype=torch.bool)

    def __call__(self, layer: int, probs: torch.Tensor) -> torch.Tensor:
        if self.flags is None:
            self._start(probs)
        det = self.owner.detector
        slot = det.slot_of(layer)
        if slot is not None:
            feats = column_features(probs.detach(), self.valid, tuple(det.config.kinds))  # [B, K, F]
            self.running = torch.maximum(self.running, det.layer_logit(feats, slot))
            self.flags |= self.owner.layout.group_flags(det.flags(self.running) & self.candidate, self.candidate,
                                                        self.inputs.get("input_ids"))
        if layer not in self.owner.patch_layers or not self.flags.any():
            return probs
        self.patched[:, layer] = self.flags.any(-1)
        return redistribute(probs, self.flags, self.owner.benign[layer], self.valid)


class PatchedClassifier(nn.Module):
    """Wraps a Hugging Face classifier and a fitted, calibrated Detector.

    Call it like the model (`patched(**inputs)`); returns PatchedOutput.
    patch_layers: model layers to redistribute (default: all). benign_value: "unified" (u[l, h],
    the default), "uniform" (u = 1, i.e. 1/n) or "zero" (drop the column) — the latter two are ablations.
    """

    def __init__(self, model: nn.Module, detector: Detector, mode: str = "two-pass",
                 patch_layers: list[int] | None = None, benign_value: str = "unified"):
        super().__init__()
        if mode not in MODES:
            raise AtPatchError(f"mode: expected one of {MODES}, got {mode!r}")
        if benign_value not in BENIGN_VALUES:
            raise AtPatchError(f"benign_value: expected one of {BENIGN_VALUES}, got {benign_value!r}")
        self.model, self.detector, self.mode = model.eval(), detector.eval(), mode
        self.num_layers = len(attention_layers(model))
        self.patch_layers = tuple(range(self.num_layers)) if patch_layers is None else tuple(patch_layers)
        if detector.config.model_type != model.config.model_type:
            raise AtPatchError(f"detector was trained for model type {detector.config.model_type!r}, "
                               f"the model is {model.config.model_type!r}")
        self.layout = TokenLayout.from_dict(detector.config.layout)
        self.benign_value = benign_value  # kept so that the same patch can be rebuilt elsewhere (shard workers)
        self.benign = self._benign_table(benign_value)

    def _benign_table(self, benign_value: str) -> torch.Tensor:
        """[L, H] values to write into flagged columns (times 1/n)."""
        u = self.detector.benign
        if u.numel() == 0:
            raise AtPatchError("detector has no unified benign attention: estimate it (atpatch.benign_attention) "
                               "and assign detector.benign before patching")
        if u.shape[0] != self.num_layers:
            raise AtPatchError(f"detector.benign: expected {self.num_layers} layers, got shape {tuple(u.shape)}")
        return {"unified": u, "uniform": torch.ones_like(u), "zero": torch.zeros_like(u)}[benign_value]

    @torch.no_grad()
    def forward(self, **inputs) -> PatchedOutput:
        return self._online(inputs) if self.mode == "online" else self._two_pass(inputs)

    def _two_pass(self, inputs: dict) -> PatchedOutput:
        det = self.detector
        recorder = Recorder(self.layout, inputs, tuple(det.config.layers), tuple(det.config.kinds))
        with attention_seam(self.model, recorder):
            logits = model_output(self.model(**inputs))
        position_logits = det.logits(recorder.stacked())  # [B, K]
        scores = torch.sigmoid(position_logits).masked_fill(~recorder.candidate, 0.0)
        flags = self.layout.group_flags(det.flags(position_logits) & recorder.candidate, recorder.candidate,
                                        inputs.get("input_ids"))
        hit = flags.any(-1)
        patched = torch.zeros(len(hit), self.num_layers, dtype=torch.bool)
        if hit.any():
            index = torch.nonzero(hit).squeeze(1)
            handler = Redistributor(flags[index], recorder.valid[index], self.benign, self.patch_layers)
            with attention_seam(self.model, handler):
                second = model_output(self.model(**_select(inputs, index)))
            logits = logits.clone()
            logits[index] = second
            patched[index[:, None], torch.tensor(self.patch_layers, dtype=torch.long)] = True
        return PatchedOutput(logits, flags, patched, scores)

    def _online(self, inputs: dict) -> PatchedOutput:
        handler = _OnlinePatcher(self, inputs)
        with attention_seam(self.model, handler):
            logits = model_output(self.model(**inputs))
        scores = torch.sigmoid(handler.running).masked_fill(~handler.candidate, 0.0)
        return PatchedOutput(logits, handler.flags, handler.patched, scores)


def attention_before_after(patched: PatchedClassifier, inputs: dict, flagged: torch.Tensor):
    """Per-layer length-scaled column mass [L, K] (mean over heads) of the first input, before and after
    redistribution.

    "After" patches `flagged` at the patched layers (what two-pass mode runs); equal to "before"
    when nothing is flagged.
    """
    from atpatch.core.features import record

    def mass(rec) -> torch.Tensor:
        return torch.stack([rec.maps[layer][0].sum(1).mean(0) for layer in sorted(rec.maps)])  # [L, K]

    before = record(patched.model, inputs, patched.layout, keep_maps=True)
    if not bool(flagged.any()):
        return mass(before), mass(before)
    after = Recorder(patched.layout, inputs, keep_maps=True)
    fix = Redistributor(flagged, before.valid, patched.benign, patched.patch_layers)
    with attention_seam(patched.model, lambda layer, probs: after(layer, fix(layer, probs))), torch.no_grad():
        patched.model(**inputs)
    return mass(before), mass(after)
