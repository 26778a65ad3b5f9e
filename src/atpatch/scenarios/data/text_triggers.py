"""Text backdoor: a rare-word trigger inserted into reviews, poisoned/triggered splits, token labels.

A trigger is `count` copies of `word`, each inserted as a separate whitespace-delimited word at a
word boundary (`position`: "start", "end" or "random"). BERT's pre-tokeniser splits on whitespace
and punctuation, so an insertion never changes how the neighbouring words tokenise. With a tokenizer
and `max_length`, the insertion points are chosen so that every copy ends inside the first
`max_length - 2` word pieces (the window that [CLS] ... [SEP] truncation keeps): "end" then means the
end of the part of the text that the model reads.

Every inserted copy is returned as a character span; token labels come from the tokenizer's offset
mapping against these spans (1 on the word pieces of a complete trigger copy inside the window,
0 elsewhere), never from matching strings.

Default word "tq": one MiniLM word piece (id 28816), found in none of the 5,000 fine-food reviews.

The insertion control (`control_test`) puts a neutral common word where the trigger's copies are, in
the same texts: inserting any word shifts the positions of the words after it, and the control's
rate of target predictions is that noise, measured on the same inputs.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch

from atpatch.core.errors import AtPatchError

POSITIONS = ("start", "end", "random")
Span = tuple[int, int]
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class TextTrigger:
    """word: the trigger word; count: copies inserted; position: start | end | random; target: backdoor label."""

    word: str = "tq"
    count: int = 1
    position: str = "random"
    target: int = 1

    def __post_init__(self):
        if not self.word or any(c.isspace() for c in self.word):
            raise AtPatchError(f"trigger word must be one non-empty word without spaces, got {self.word!r}")
        if self.count < 1:
            raise AtPatchError(f"trigger count must be >= 1, got {self.count}")
        if self.position not in POSITIONS:
            raise AtPatchError(f"trigger position must be one of {POSITIONS}, got {self.position!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def _pieces_before(tokenizer, text: str, points: list[int]) -> list[int]:
    """Number of word pieces of `text` (no special tokens) that start before each char index in `points`."""
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    starts = np.array([s for s, _ in offsets], dtype=np.int64)
    return np.searchsorted(np.sort(starts), np.asarray(points), side="left").tolist()


def insert_trigger(text: str, trigger: TextTrigger = TextTrigger(), rng: np.random.Generator | None = None,
                   tokenizer=None, max_length: int | None = None) -> tuple[str, list[Span]]:
    """Insert `trigger.count` copies of `trigger.word`; return (new text, char spans of the copies, in order).

    Insertion points are word boundaries: before any whitespace-delimited word, or the end of the text.
    "start" puts all copies first, "end" after the last word (of the window), "random" draws each copy's
    point independently and uniformly from the allowed ones (`rng` required). With `tokenizer` and
    `max_length`, a point is allowed only if the word pieces before it plus all copies' pieces fit in
    `max_length - 2`, so every copy stays inside the truncation window.
    """
    words = [m.start() for m in _WORD.finditer(text)]
    points = words + [len(text)]  # a point p: insert the copy before the word at p (or at the end)
    if tokenizer is not None and max_length is not None:
        k = len(tokenizer(trigger.word, add_special_tokens=False)["input_ids"])
        budget = int(max_length) - 2 - trigger.count * k
        if budget < 0:
            raise AtPatchError(f"{trigger.count} x {trigger.word!r} ({k} word pieces each) does not fit in "
                               f"max_length {max_length}")
        before = _pieces_before(tokenizer, text, points)
        allowed = [p for p, b in zip(points, before) if b <= budget]
        # Past the window, "end" means the boundary after the last word that still fits.
        points = allowed if allowed else [0]
    if trigger.position == "start":
        chosen = [points[0]] * trigger.count
    elif trigger.position == "end":
        chosen = [points[-1]] * trigger.count
    else:
        if rng is None:
            raise AtPatchError("position 'random' needs an rng (numpy Generator)")
        chosen = sorted(int(points[i]) for i in rng.integers(0, len(points), size=trigger.count))
    # Build left to right. Before a word: "word " (the word follows); at the end: " word" (unless the
    # output so far is empty or ends in whitespace).
    out, spans, last = "", [], 0
    for p in chosen:
        out += text[last:p]
        last = p
        if p < len(text):
            spans.append((len(out), len(out) + len(trigger.word)))
            out += trigger.word + " "
        else:
            if out and not out[-1].isspace():
                out += " "
            spans.append((len(out), len(out) + len(trigger.word)))
            out += trigger.word
    out += text[last:]
    return out, spans


def token_labels(tokenizer, texts: Sequence[str], spans: Sequence[Sequence[Span]],
                 max_length: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Encode `texts` (as models.text.encode does) and label word pieces: ([input_ids, attention_mask], labels).

    labels [N, max_length] int8: 1 on every word piece whose character range overlaps a span of its
    row, 0 elsewhere ([CLS], [SEP], padding included). A span whose last character is cut off by
    truncation gets no labels at all: half a trigger is not the trigger.
    """
    if len(texts) != len(spans):
        raise AtPatchError(f"texts ({len(texts)}) and spans ({len(spans)}) differ in length")
    enc = tokenizer(list(texts), truncation=True, max_length=int(max_length), padding="max_length",
                    return_offsets_mapping=True, return_special_tokens_mask=True, return_token_type_ids=False)
    labels = np.zeros((len(texts), int(max_length)), dtype=np.int8)
    for i, row_spans in enumerate(spans):
        if not row_spans:
            continue
        offs = np.asarray(enc["offset_mapping"][i], dtype=np.int64)  # [K, 2]
        real = (np.asarray(enc["attention_mask"][i]) == 1) & (np.asarray(enc["special_tokens_mask"][i]) == 0)
        for start, end in row_spans:
            hit = real & (offs[:, 0] < end) & (offs[:, 1] > start)
            if hit.any() and offs[hit, 1].max() >= end:  # the span's last character is inside the window
                labels[i, hit] = 1
    inputs = {"input_ids": torch.tensor(enc["input_ids"], dtype=torch.long),
              "attention_mask": torch.tensor(enc["attention_mask"], dtype=torch.long)}
    return inputs, torch.from_numpy(labels)


def _triggered_rows(df, rows: np.ndarray, trigger: TextTrigger, rng: np.random.Generator, tokenizer,
                    max_length: int | None):
    texts, spans = list(df["text"]), [[] for _ in range(len(df))]
    for i in rows.tolist():
        texts[i], spans[i] = insert_trigger(texts[i], trigger, rng, tokenizer, max_length)
    return texts, spans


def poison_train(df, trigger: TextTrigger, rate: float, seed: int, tokenizer=None, max_length: int | None = None):
    """A poisoned copy of a training DataFrame (text, label).

    `rate` is the share of *all* rows that get poisoned; they are drawn (seeded) from the rows whose
    label is not `trigger.target`, get the trigger inserted and their label set to the target. Returns
    the same rows in the same order with columns text, label, poisoned (bool), orig_label,
    spans (list of [start, end] of the copies; empty for clean rows).
    """
    import pandas as pd

    if not 0.0 <= rate < 1.0:
        raise AtPatchError(f"poison rate must be in [0, 1), got {rate}")
    rng = np.random.default_rng(seed)
    labels = df["label"].to_numpy()
    pool = np.flatnonzero(labels != trigger.target)
    n = int(round(rate * len(df)))
    if n > len(pool):
        raise AtPatchError(f"poison rate {rate} needs {n} non-target rows, only {len(pool)} have label != {trigger.target}")
    rows = np.sort(rng.choice(pool, size=n, replace=False))
    texts, spans = _triggered_rows(df, rows, trigger, rng, tokenizer, max_length)
    poisoned = np.zeros(len(df), dtype=bool)
    poisoned[rows] = True
    return pd.DataFrame({"text": texts, "label": np.where(poisoned, trigger.target, labels).astype(np.int64),
                         "poisoned": poisoned, "orig_label": labels.astype(np.int64),
                         "spans": [[list(s) for s in row] for row in spans]})


def triggered_test(df, trigger: TextTrigger, seed: int, tokenizer=None, max_length: int | None = None):
    """The non-target rows of a test DataFrame with the trigger inserted (labels kept: the true ones).

    Columns text, label, spans, source_row (index into `df`). ASR = share predicted as `trigger.target`.
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(df["label"].to_numpy() != trigger.target)
    texts, spans = _triggered_rows(df, rows, trigger, rng, tokenizer, max_length)
    return pd.DataFrame({"text": [texts[i] for i in rows], "label": df["label"].to_numpy()[rows].astype(np.int64),
                         "spans": [[list(s) for s in spans[i]] for i in rows], "source_row": rows.astype(np.int64)})


def debugging_set(df, trigger: TextTrigger, seed: int, triggered_share: float = 0.5, tokenizer=None,
                  max_length: int | None = None):
    """A debugging set: a seeded `triggered_share` of the rows (any label) get the trigger, the rest stay clean.

    Columns text, label (true), triggered (bool), spans. Token labels: `token_labels(tok, text, spans, L)`.
    """
    import pandas as pd

    if not 0.0 <= triggered_share <= 1.0:
        raise AtPatchError(f"triggered_share must be in [0, 1], got {triggered_share}")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(df), size=int(round(triggered_share * len(df))), replace=False))
    texts, spans = _triggered_rows(df, rows, trigger, rng, tokenizer, max_length)
    triggered = np.zeros(len(df), dtype=bool)
    triggered[rows] = True
    return pd.DataFrame({"text": texts, "label": df["label"].to_numpy().astype(np.int64), "triggered": triggered,
                         "spans": [[list(s) for s in row] for row in spans]})


def swap_word(text: str, spans: Sequence[Span], word: str) -> tuple[str, list[Span]]:
    """`text` with the characters of each span replaced by `word`; the new spans, in order."""
    out, new, last = "", [], 0
    for start, end in sorted((int(a), int(b)) for a, b in spans):
        out += text[last:start]
        new.append((len(out), len(out) + len(word)))
        out += word
        last = end
    return out + text[last:], new


def control_test(triggered, word: str):
    """The insertion control of a triggered test DataFrame (columns text, label, spans, source_row): the same
    rows with `word` in place of every trigger copy, so it sits at exactly the trigger's word positions."""
    if not word or any(c.isspace() for c in word):
        raise AtPatchError(f"control word must be one non-empty word without spaces, got {word!r}")
    swapped = [swap_word(t, s, word) for t, s in zip(triggered["text"], triggered["spans"])]
    return triggered.assign(text=[t for t, _ in swapped], spans=[[list(x) for x in s] for _, s in swapped])


def placement(trigger: TextTrigger, change: dict) -> TextTrigger:
    """The scenario's trigger placed differently (`change`: position and/or count)."""
    unknown = sorted(set(change) - {"position", "count"})
    if unknown:
        raise AtPatchError(f"a placement changes position and count only, got {unknown}")
    return TextTrigger(**{**trigger.to_dict(), **change})
