"""The attention seam: one custom attention function registered with transformers.

Inside `attention_seam(model, handler)` every self-attention layer of `model` still computes its
output with the model's own attention implementation (its "native" one: eager, SDPA, ...). At the
layers the handler reads (`handler.layers_needed`, default all) the seam also computes the attention
probabilities, hands them to `handler(layer, probs)` and, for the inputs whose probabilities the
handler changed, recomputes the output from the new probabilities. A handler that returns the very
tensor it got therefore leaves the model's output bit-identical to the model run without the seam,
and a layer no handler reads costs what it costs the user (SDPA never exposes its probabilities, so
those are computed beside it only where needed).
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import threading
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

import torch
from torch import nn

from atpatch.core.errors import ShapeError, UnsupportedModelError

SEAM_NAME = "atpatch"

# model_type -> class name of the module that calls the attention interface (one per layer).
ATTENTION_MODULES: dict[str, str] = {
    "vit": "ViTAttention",
    "deit": "DeiTAttention",
    "bert": "BertSelfAttention",
    "roberta": "RobertaSelfAttention",
    "distilbert": "DistilBertSelfAttention",
}


class AttentionHandler(Protocol):
    """A callable; it may also have `layers_needed`, the layer indices it reads (None or absent: all)."""

    def __call__(self, layer: int, probs: torch.Tensor) -> torch.Tensor:
        """probs: [B, H, Q, K] post-softmax; return the same tensor or a patched one of that shape."""


@dataclass(frozen=True)
class _Active:
    layers: dict[int, int]  # id(attention module) -> layer index
    handler: AttentionHandler
    native: str  # the model's attention implementation outside the seam
    needed: frozenset[int] | None  # layers whose probabilities the handler reads (None: all)


_ACTIVE: contextvars.ContextVar[_Active | None] = contextvars.ContextVar("atpatch_seam", default=None)
_LOCK = threading.Lock()
_USERS = 0  # open seams; the registration lives exactly as long as one is open


def attention_layers(model: nn.Module) -> list[nn.Module]:
    """The attention modules of `model`, in layer order. Raises UnsupportedModelError if none."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in ATTENTION_MODULES:
        raise UnsupportedModelError(
            f"model type {model_type!r} has no AtPatch adapter; supported: "
            f"{sorted(ATTENTION_MODULES)}. Add its attention module class to atpatch.core.seam.ATTENTION_MODULES "
            "if it uses transformers' AttentionInterface."
        )
    wanted = ATTENTION_MODULES[model_type]
    found = [m for m in model.modules() if type(m).__name__ == wanted]
    if not found:
        raise UnsupportedModelError(f"{type(model).__name__}: no {wanted} module found for model type {model_type!r}")
    return found


def _native_eager(module: nn.Module) -> Callable:
    """The eager attention function of the module's own modeling file (what 'eager' would run)."""
    fn = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if fn is None:
        raise UnsupportedModelError(f"{type(module).__module__} defines no eager_attention_forward")
    return fn


def _native_function(module: nn.Module, native: str) -> Callable:
    """The attention function the model runs outside the seam (its own eager one for "eager")."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if native in ("eager", SEAM_NAME) or native not in ALL_ATTENTION_FUNCTIONS:
        return _native_eager(module)
    return ALL_ATTENTION_FUNCTIONS[native]


def _probabilities(query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None,
                   scaling: float | None) -> torch.Tensor:
    """The eager attention probabilities [B, H, Q, K], for an additive float or a boolean keep mask
    (the same operations as the eager functions, so both give the same bits)."""
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        mask = attention_mask[:, :, :, : key.shape[-2]]
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min) if mask.dtype == torch.bool else scores + mask
    return torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)


def _seam_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """The model's own attention, with the probabilities of the layers the handler reads handed to it.

    query/key/value: [B, H, T, D]; returns (output [B, Q, H, D] contiguous, probs [B, H, Q, K] or None).
    """
    active = _ACTIVE.get()
    native = "eager" if active is None else active.native
    layer = None if active is None else active.layers.get(id(module))
    run = _native_function(module, native)
    if layer is None or (active.needed is not None and layer not in active.needed):
        return run(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    if run is _native_eager(module):
        output, probs = run(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    else:
        output, _ = run(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
        probs = _probabilities(query, key, attention_mask, scaling)
    new_probs = active.handler(layer, probs)  # layers.{layer}.attn.pattern
    if new_probs is probs:
        return output, probs
    if new_probs.shape != probs.shape:
        raise ShapeError(f"layers.{layer}.attn.pattern: handler returned {tuple(new_probs.shape)}, expected {tuple(probs.shape)}")
    # Only inputs whose rows changed are recomputed, so the others keep the native output bit for bit.
    changed = (new_probs != probs).flatten(1).any(-1)  # [B]
    output = output.clone()
    output[changed] = torch.matmul(new_probs[changed], value[changed]).transpose(1, 2).to(output.dtype)
    return output, new_probs


def _seam_mask(*args, **kwargs):
    """The attention mask in the format of the model's native implementation (additive for eager,
    boolean or none for SDPA), so that the native function gets exactly what it gets without the seam."""
    from transformers.masking_utils import AttentionMaskInterface

    active = _ACTIVE.get()
    native = "eager" if active is None or active.native not in AttentionMaskInterface._global_mapping else active.native
    return AttentionMaskInterface._global_mapping[native](*args, **kwargs)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(SEAM_NAME, _seam_attention)
    # Without the mask registration BERT silently drops the padding mask.
    AttentionMaskInterface.register(SEAM_NAME, _seam_mask)


def _unregister() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface._global_mapping.pop(SEAM_NAME, None)
    AttentionMaskInterface._global_mapping.pop(SEAM_NAME, None)


def is_registered() -> bool:
    """True while a seam is open (the custom attention function is registered with transformers)."""
    from transformers import AttentionInterface

    return SEAM_NAME in AttentionInterface._global_mapping


@contextlib.contextmanager
def attention_seam(model: nn.Module, handler: AttentionHandler) -> Iterator[list[nn.Module]]:
    """Route `model`'s attention through `handler` for the duration of the block.

    Restores the model's previous attention implementation on exit, also on exceptions, and
    removes the registration when the last open seam closes. Yields the attention modules.
    """
    global _USERS
    modules = attention_layers(model)
    if not type(model)._can_set_attn_implementation():
        raise UnsupportedModelError(
            f"{type(model).__name__} cannot switch its attention implementation (it does not use "
            "transformers' AttentionInterface); AtPatch needs that to read the attention probabilities"
        )
    previous = model.config._attn_implementation
    with _LOCK:
        if _USERS == 0:
            _register()
        _USERS += 1
    needed = getattr(handler, "layers_needed", None)
    token = _ACTIVE.set(_Active({id(m): i for i, m in enumerate(modules)}, handler, previous,
                                None if needed is None else frozenset(needed)))
    try:
        model.set_attn_implementation(SEAM_NAME)
        if model.config._attn_implementation != SEAM_NAME:
            raise UnsupportedModelError(f"{type(model).__name__} refused attention implementation {SEAM_NAME!r}")
        yield modules
    finally:
        _ACTIVE.reset(token)
        try:
            model.set_attn_implementation(previous)
        finally:
            with _LOCK:
                _USERS -= 1
                if _USERS == 0:
                    _unregister()
