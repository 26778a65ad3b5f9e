"""The feature-token transformer of the tabular-fairness scenario (docs/scenarios.md).

One token per column: token 0 is a learned CLS, then one token per categorical column (an
`nn.Embedding` per column over that column's vocabulary, index 0 = unknown), then one per numeric
column (a learned vector times the standardised value, plus a learned per-column bias). The
tokens go through a `transformers.BertModel` (`inputs_embeds`); a linear head reads the CLS state.

BertModel adds a learned position embedding (one per token, i.e. per column: redundant with the
per-column embeddings but harmless, an extra per-column bias) and the token-type-0 embedding (one
constant vector, absorbed by the LayerNorm). There is no padding: every token is real, so the
model needs no attention mask and AtPatch's `TokenLayout(prefix=1)` (only CLS excluded) fits.

The config is a BertConfig subclass (model type `atpatch-feature-token`) that also stores the
encoding fitted on the training split (vocabularies, numeric mean/std, log1p columns), so a
saved directory is self-contained; importing this module registers it with AutoConfig,
AutoModelForSequenceClassification and AtPatch's attention seam (its layers are BERT's).

Inputs (batch-first, so PatchedClassifier can slice rows):
    cat_ids     LongTensor  [B, n_cat]
    num_values  FloatTensor [B, n_num]  (already standardised; `encode_frame` does it)
"""

from __future__ import annotations


import numpy as np
import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import (AutoConfig, AutoModelForSequenceClassification, BertConfig, BertModel, PreTrainedModel,
                          initialization as init)
from transformers.modeling_outputs import SequenceClassifierOutput

from atpatch.core.errors import AtPatchError, ShapeError, expect_shape
from atpatch.core.features import TokenLayout
from atpatch.core.seam import ATTENTION_MODULES

MODEL_TYPE = "atpatch-feature-token"
UNKNOWN = "<unk>"  # index 0 of every categorical vocabulary: a value not seen in training
TABULAR_LAYOUT = TokenLayout(prefix=1)  # CLS (position 0) is never a candidate; no padding, no special ids

# Defaults sized for ~1-2 min of training on the full Adult train split on 2 CPU cores.
DEFAULT_ARCHITECTURE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                            hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.0)


@strict
class FeatureTokenConfig(BertConfig):
    """BertConfig plus the column encoding. Token order: CLS, `categorical`..., `numeric`..."""

    model_type = MODEL_TYPE

    categorical: list[str] | None = None  # column names, in token order
    numeric: list[str] | None = None
    log_numeric: list[str] | None = None  # numeric columns transformed by log1p before standardising
    vocab: dict[str, list[str]] | None = None  # categorical column -> values; index 0 is UNKNOWN
    num_mean: list[float] | None = None  # per numeric column, after log1p where listed
    num_std: list[float] | None = None
    # Per numeric column, the smallest and largest raw value in training: the range served inputs
    # must keep to (None in a victim saved before they were recorded: no range is then enforced).
    num_min: list[float] | None = None
    num_max: list[float] | None = None
    vocab_size: int = 1  # BERT's word embeddings are unused (inputs_embeds); keep the table minimal
    type_vocab_size: int = 1
    pad_token_id: int | None = None

    def __post_init__(self, **kwargs):
        self.categorical = list(self.categorical or [])
        self.numeric = list(self.numeric or [])
        self.log_numeric = list(self.log_numeric or [])
        self.vocab = {k: list(v) for k, v in (self.vocab or {}).items()}
        self.num_mean = [float(v) for v in (self.num_mean or [0.0] * len(self.numeric))]
        self.num_std = [float(v) for v in (self.num_std or [1.0] * len(self.numeric))]
        self.num_min = None if self.num_min is None else [float(v) for v in self.num_min]
        self.num_max = None if self.num_max is None else [float(v) for v in self.num_max]
        super().__post_init__(**kwargs)

    @property
    def n_tokens(self) -> int:
        return 1 + len(self.categorical) + len(self.numeric)


def fit_encoding(frame, categorical, numeric, log_numeric=()) -> dict:
    """Vocabularies and standardisation statistics from a training frame (config keyword arguments)."""
    missing = [c for c in (*categorical, *numeric) if c not in frame.columns]
    if missing:
        raise AtPatchError(f"fit_encoding: columns {missing} not in the frame (columns: {list(frame.columns)})")
    bad = [c for c in log_numeric if c not in numeric]
    if bad:
        raise AtPatchError(f"fit_encoding: log_numeric columns {bad} are not numeric columns {list(numeric)}")
    vocab = {c: [UNKNOWN] + sorted(str(v) for v in frame[c].unique()) for c in categorical}
    mean, std, low, high = [], [], [], []
    for c in numeric:
        raw = frame[c].to_numpy(dtype=np.float64)
        x = np.log1p(np.maximum(raw, 0.0)) if c in log_numeric else raw
        mean.append(float(x.mean()))
        std.append(float(max(x.std(), 1e-6)))
        low.append(float(raw.min()))
        high.append(float(raw.max()))
    return dict(categorical=list(categorical), numeric=list(numeric), log_numeric=list(log_numeric),
                vocab=vocab, num_mean=mean, num_std=std, num_min=low, num_max=high)


def feature_token_config(train_frame, categorical=None, numeric=None, log_numeric=None, num_labels: int = 2,
                         **architecture) -> FeatureTokenConfig:
    """A config whose encoding is fitted on `train_frame` (Adult's feature columns by default)."""
    from atpatch.scenarios.data import adult

    encoding = fit_encoding(train_frame,
                            adult.FEATURE_CATEGORICAL if categorical is None else categorical,
                            adult.FEATURE_NUMERIC if numeric is None else numeric,
                            adult.LOG_NUMERIC if log_numeric is None else log_numeric)
    n_tokens = 1 + len(encoding["categorical"]) + len(encoding["numeric"])
    return FeatureTokenConfig(**encoding, max_position_embeddings=n_tokens, num_labels=num_labels,
                              **{**DEFAULT_ARCHITECTURE, **architecture})


def build_feature_token_model(train_frame, seed: int = 0, **kwargs) -> "FeatureTokenForClassification":
    """A freshly initialised (seeded) model whose encoding is fitted on `train_frame`."""
    config = feature_token_config(train_frame, **kwargs)
    torch.manual_seed(seed)
    return FeatureTokenForClassification(config)


def encode_frame(frame, config: FeatureTokenConfig) -> dict[str, torch.Tensor]:
    """DataFrame -> {"cat_ids": Long [N, n_cat], "num_values": Float [N, n_num]} with the config's encoding.

    A categorical value not seen in training maps to index 0 (UNKNOWN).
    """
    missing = [c for c in (*config.categorical, *config.numeric) if c not in frame.columns]
    if missing:
        raise AtPatchError(f"encode_frame: columns {missing} not in the frame (columns: {list(frame.columns)})")
    cats = []
    for c in config.categorical:
        index = {v: i for i, v in enumerate(config.vocab[c])}
        cats.append(np.fromiter((index.get(str(v), 0) for v in frame[c]), dtype=np.int64, count=len(frame)))
    nums = []
    for c, mean, std in zip(config.numeric, config.num_mean, config.num_std):
        x = frame[c].to_numpy(dtype=np.float64)
        x = np.log1p(np.maximum(x, 0.0)) if c in config.log_numeric else x
        nums.append((x - mean) / std)
    n = len(frame)
    cat_ids = torch.from_numpy(np.stack(cats, 1)) if cats else torch.zeros(n, 0, dtype=torch.long)
    num_values = torch.from_numpy(np.stack(nums, 1)).float() if nums else torch.zeros(n, 0)
    return {"cat_ids": cat_ids, "num_values": num_values}


def column_positions(config: FeatureTokenConfig) -> dict[str, int]:
    """Column name -> token position (0 is CLS)."""
    names = [*config.categorical, *config.numeric]
    return {name: 1 + i for i, name in enumerate(names)}


def token_layout(config: FeatureTokenConfig | None = None) -> TokenLayout:
    """AtPatch's TokenLayout for this model: CLS excluded, every column token a candidate."""
    return TABULAR_LAYOUT


class FeatureTokenForClassification(PreTrainedModel):
    """Feature tokens -> BertModel -> linear head on CLS. forward(cat_ids, num_values, labels=None)."""

    config_class = FeatureTokenConfig
    base_model_prefix = "bert"
    main_input_name = "cat_ids"
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = False
    _supports_attention_backend = True

    def __init__(self, config: FeatureTokenConfig):
        super().__init__(config)
        h = config.hidden_size
        missing = [c for c in config.categorical if c not in config.vocab]
        if missing:
            raise AtPatchError(f"FeatureTokenConfig: no vocabulary for categorical columns {missing}")
        if config.max_position_embeddings < config.n_tokens:
            raise AtPatchError(f"FeatureTokenConfig: max_position_embeddings {config.max_position_embeddings} < "
                               f"{config.n_tokens} tokens")
        self.cat_embeddings = nn.ModuleList(nn.Embedding(len(config.vocab[c]), h) for c in config.categorical)
        n_num = len(config.numeric)
        self.num_weight = nn.Parameter(torch.empty(n_num, h))  # token = value * weight + bias
        self.num_bias = nn.Parameter(torch.empty(n_num, h))
        self.cls_token = nn.Parameter(torch.empty(1, 1, h))
        self.bert = BertModel(config, add_pooling_layer=False)
        self.dropout = nn.Dropout(config.classifier_dropout if config.classifier_dropout is not None
                                  else config.hidden_dropout_prob)
        self.classifier = nn.Linear(h, config.num_labels)
        self.register_buffer("_vocab_sizes", torch.tensor([len(config.vocab[c]) for c in config.categorical],
                                                          dtype=torch.long), persistent=False)
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, FeatureTokenForClassification):
            std = self.config.initializer_range
            init.normal_(module.num_weight, mean=0.0, std=std)
            init.normal_(module.num_bias, mean=0.0, std=std)
            init.normal_(module.cls_token, mean=0.0, std=std)
            init.copy_(module._vocab_sizes, torch.tensor([len(self.config.vocab[c]) for c in self.config.categorical],
                                                         dtype=torch.long))

    def embed(self, cat_ids: torch.Tensor, num_values: torch.Tensor) -> torch.Tensor:
        """Token embeddings [B, 1 + n_cat + n_num, H] (before BERT's position embedding and LayerNorm)."""
        c = self.config
        expect_shape("cat_ids", cat_ids, (None, len(c.categorical)))
        expect_shape("num_values", num_values, (cat_ids.shape[0], len(c.numeric)))
        if cat_ids.numel() and ((cat_ids < 0) | (cat_ids >= self._vocab_sizes)).any():
            raise ShapeError(f"cat_ids: values outside the vocabularies (sizes {self._vocab_sizes.tolist()})")
        b = cat_ids.shape[0]
        parts = [self.cls_token.expand(b, 1, -1)]
        if c.categorical:
            parts.append(torch.stack([emb(cat_ids[:, i]) for i, emb in enumerate(self.cat_embeddings)], 1))
        if c.numeric:
            parts.append(num_values.to(self.num_weight.dtype)[..., None] * self.num_weight + self.num_bias)
        return torch.cat(parts, 1)

    def forward(self, cat_ids: torch.Tensor | None = None, num_values: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **kwargs) -> SequenceClassifierOutput:
        if cat_ids is None or num_values is None:
            raise AtPatchError("FeatureTokenForClassification needs cat_ids [B, n_cat] and num_values [B, n_num] "
                               "(see atpatch.scenarios.models.tabular.encode_frame)")
        kwargs.pop("attention_mask", None)  # every token is real
        out = self.bert(inputs_embeds=self.embed(cat_ids, num_values), **kwargs)
        logits = self.classifier(self.dropout(out.last_hidden_state[:, 0]))  # [B, C]
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits, labels.long())
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                        attentions=out.attentions)


def _register() -> None:
    AutoConfig.register(MODEL_TYPE, FeatureTokenConfig, exist_ok=True)
    AutoModelForSequenceClassification.register(FeatureTokenConfig, FeatureTokenForClassification, exist_ok=True)
    ATTENTION_MODULES.setdefault(MODEL_TYPE, "BertSelfAttention")  # the seam's adapter: BERT's layers


_register()
