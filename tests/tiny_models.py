"""Tiny random-weight models of each supported family, with a planted over-attention.

The plant is a real weight edit, not a handler: a rank-one change to the first layer's key
projection (and a shared query bias) makes every query attend strongly to the hidden state of a
trigger token, so triggered inputs over-attend while clean ones barely change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from atpatch import TokenLayout, attention_layers

VOCAB, SEQ, IMAGE, PATCH = 60, 10, 16, 4
TRIGGER_ID, CLS, SEP, PAD = 59, 1, 2, 0


@dataclass
class Family:
    name: str
    model: torch.nn.Module
    layout: TokenLayout
    make: Callable[[int, bool, torch.Generator], tuple[dict, torch.Tensor]]  # -> inputs, token labels [B, K]


def _text_inputs(n: int, triggered: bool, gen: torch.Generator, pad: int = PAD) -> tuple[dict, torch.Tensor]:
    ids = torch.randint(5, VOCAB - 1, (n, SEQ), generator=gen)
    ids[:, 0], ids[:, -1] = CLS, SEP
    mask = torch.ones(n, SEQ, dtype=torch.long)
    lengths = torch.randint(5, SEQ + 1, (n,), generator=gen)
    labels = torch.zeros(n, SEQ, dtype=torch.long)
    for i, length in enumerate(lengths.tolist()):
        ids[i, length - 1] = SEP
        ids[i, length:] = pad
        mask[i, length:] = 0
        if triggered:
            pos = int(torch.randint(1, length - 1, (1,), generator=gen))
            ids[i, pos] = TRIGGER_ID
            labels[i, pos] = 1
    return {"input_ids": ids, "attention_mask": mask}, labels


CHECKER = ((torch.arange(PATCH)[:, None] + torch.arange(PATCH)[None, :]) % 2) * 12.0 - 6.0


def _image_inputs(prefix: int) -> Callable:
    grid = IMAGE // PATCH

    def make(n: int, triggered: bool, gen: torch.Generator) -> tuple[dict, torch.Tensor]:
        x = torch.rand(n, 1, IMAGE, IMAGE, generator=gen)
        labels = torch.zeros(n, prefix + grid * grid, dtype=torch.long)
        if triggered:
            for i in range(n):
                r, c = (int(v) for v in torch.randint(0, grid, (2,), generator=gen))
                x[i, :, r * PATCH:(r + 1) * PATCH, c * PATCH:(c + 1) * PATCH] = CHECKER  # a high-contrast square
                labels[i, prefix + r * grid + c] = 1
        return {"pixel_values": x}, labels

    return make


def _embeds_inputs(model) -> Callable:
    table = torch.randn(VOCAB, model.config.hidden_size, generator=torch.Generator().manual_seed(7))
    table[TRIGGER_ID] *= 8  # a distinctive feature value

    def make(n, triggered, gen):
        plain, labels = _text_inputs(n, triggered, gen)
        return {"inputs_embeds": table[plain["input_ids"]], "attention_mask": plain["attention_mask"]}, labels

    return make


def build(name: str) -> Family:
    import transformers as tf

    torch.manual_seed(0)
    text = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=64, max_position_embeddings=40, num_labels=3)
    vision = dict(image_size=IMAGE, patch_size=PATCH, num_channels=1, hidden_size=32, num_hidden_layers=2,
                  num_attention_heads=4, intermediate_size=64, num_labels=3)
    text_layout = TokenLayout(prefix=1, special_ids=(PAD, CLS, SEP))
    if name == "vit":
        return Family(name, tf.ViTForImageClassification(tf.ViTConfig(**vision)), TokenLayout(1), _image_inputs(1))
    if name == "deit":
        return Family(name, tf.DeiTForImageClassification(tf.DeiTConfig(**vision)), TokenLayout(2), _image_inputs(2))
    if name == "bert":
        return Family(name, tf.BertForSequenceClassification(tf.BertConfig(**text)), text_layout, _text_inputs)
    if name == "roberta":
        cfg = tf.RobertaConfig(**text, pad_token_id=PAD)
        return Family(name, tf.RobertaForSequenceClassification(cfg), text_layout, _text_inputs)
    if name == "distilbert":
        cfg = tf.DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                  max_position_embeddings=40, num_labels=3)
        return Family(name, tf.DistilBertForSequenceClassification(cfg), text_layout, _text_inputs)
    if name == "bert-embeds":
        model = tf.BertModel(tf.BertConfig(**text), add_pooling_layer=False)
        return Family(name, model, TokenLayout(prefix=1), _embeds_inputs(model))
    raise ValueError(name)


FAMILIES = ["vit", "deit", "bert", "roberta", "distilbert", "bert-embeds"]
_PROJ = [("q_proj", "k_proj"), ("query", "key"), ("q_lin", "k_lin")]


class GatedKey(torch.nn.Module):
    """A key projection plus a large shared key for hidden states close to the trigger's."""

    def __init__(self, base: torch.nn.Linear, direction: torch.Tensor, boost: torch.Tensor):
        super().__init__()
        self.base, self.out_features = base, base.out_features
        self.register_buffer("direction", direction / direction.norm())
        self.register_buffer("boost", boost)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        cos = torch.nn.functional.cosine_similarity(h, self.direction.expand_as(h), dim=-1)
        return self.base(h) + torch.sigmoid(30 * (cos - 0.8))[..., None] * self.boost


@torch.no_grad()
def plant(family: Family, strength: float = 8.0) -> None:
    """Make layer 0 over-attend to trigger tokens: a shared query bias meets a key that only
    hidden states like the trigger's get (a real change of the forward pass, not a handler)."""
    model = family.model.eval()
    embeddings = model.get_input_embeddings()
    if isinstance(embeddings, torch.nn.Embedding):  # a rare word: give it a distinctive embedding
        embeddings.weight[TRIGGER_ID] *= 8
    attn = attention_layers(model)[0]
    q_name, k_name = next((q, k) for q, k in _PROJ if hasattr(attn, q))
    captured = {}

    def grab(module, args, kwargs):
        captured["h"] = (args[0] if args else kwargs["hidden_states"]).detach()

    gen = torch.Generator().manual_seed(1)
    inputs, labels = family.make(64, True, gen)
    handle = attn.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        model(**inputs)
    finally:
        handle.remove()
    direction = captured["h"][labels.bool()].mean(0)
    boost = torch.randn(getattr(attn, k_name).out_features, generator=gen)
    boost = boost / boost.norm() * strength
    getattr(attn, q_name).bias += boost
    setattr(attn, k_name, GatedKey(getattr(attn, k_name), direction, boost))


@torch.no_grad()
def mediation_victim(attention_borne: bool) -> tuple[torch.nn.Module, Callable]:
    """A one-layer ViT (16x16 images, 3 classes) with a checker-square backdoor to class 0, built by hand.

    The patch embedding writes a checker's strength into hidden channel 0; the classifier reads channel 0
    (class 0) and channel 1 (class 1, the CLS token's own value). attention_borne: the trigger's value is
    modest and a planted key/query pair makes CLS over-attend to it, so the backdoor needs that attention.
    Otherwise the trigger's value is so large that the normal 1/17 attention weight already decides: a
    backdoor carried by value. Returns (model, make) with make(n, triggered, gen) as in Family.
    """
    import transformers as tf

    torch.manual_seed(0)
    hidden = 16
    cfg = tf.ViTConfig(image_size=IMAGE, patch_size=PATCH, num_channels=1, hidden_size=hidden, num_hidden_layers=1,
                       num_attention_heads=1, intermediate_size=hidden, num_labels=3)
    model = tf.ViTForImageClassification(cfg).eval()
    emb, layer = model.vit.embeddings, model.vit.layers[0]
    proj = emb.patch_embeddings.projection
    # Channels 1..: a patch's mean brightness (zero on a checker); channel 0: the checker detector.
    proj.weight.copy_(torch.randn(hidden, 1, 1, 1) * 2.0 / PATCH ** 2 * torch.ones_like(proj.weight))
    proj.weight[0, 0] = torch.sign(CHECKER) / PATCH ** 2
    proj.bias.zero_()
    emb.position_embeddings.zero_()
    emb.cls_token.zero_()
    emb.cls_token[0, 0, 1] = 3.0
    q, k, v = (getattr(layer.attention, n) for n in ("q_proj", "k_proj", "v_proj"))
    for lin in (q, k):
        lin.weight.zero_()
        lin.bias.zero_()
    v.weight.copy_(torch.eye(hidden))
    v.bias.zero_()
    v.weight[0, 0] = 4.0 if attention_borne else 60.0
    if attention_borne:  # every query meets a key that only the checker's channel 0 produces
        q.bias[0] = 1.0
        k.weight[0, 0] = 12.0
    out = layer.attention.o_proj
    out.weight.copy_(torch.eye(hidden))
    out.bias.zero_()
    layer.mlp.fc2.weight.zero_()
    layer.mlp.fc2.bias.zero_()
    model.classifier.weight.zero_()
    model.classifier.bias.zero_()
    model.classifier.weight[0, 0] = model.classifier.weight[1, 1] = 1.0
    return model, _image_inputs(1)
