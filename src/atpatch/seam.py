"""The attention seam: one custom attention function registered with transformers.

Inside `attention_seam(model, handler)` every self-attention layer of `model` computes eager
attention, hands its probabilities to `handler(layer, probs)` and continues with what the handler
returns. A handler that returns the very tensor it got leaves the layer's output bit-identical to
the model's own eager attention (we reuse the model's eager function for that reason).
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

from .errors import ShapeError, UnsupportedModelError

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
    def __call__(self, layer: int, probs: torch.Tensor) -> torch.Tensor:
        """probs: [B, H, Q, K] post-softmax; return the same tensor or a patched one of that shape."""


@dataclass(frozen=True)
class _Active:
    layers: dict[int, int]  # id(attention module) -> layer index
    handler: AttentionHandler


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
            f"{sorted(ATTENTION_MODULES)}. Add its attention module class to atpatch.seam.ATTENTION_MODULES "
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


def _seam_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Eager attention that lets the active handler rewrite the probabilities.

    query/key/value: [B, H, T, D]; returns (output [B, Q, H, D] contiguous, probs [B, H, Q, K]).
    """
    output, probs = _native_eager(module)(
        module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
    )
    active = _ACTIVE.get()
    layer = None if active is None else active.layers.get(id(module))
    if layer is None:
        return output, probs
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


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(SEAM_NAME, _seam_attention)
    # Without the mask registration BERT silently drops the padding mask.
    AttentionMaskInterface.register(SEAM_NAME, eager_mask)


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
    token = _ACTIVE.set(_Active({id(m): i for i, m in enumerate(modules)}, handler))
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
