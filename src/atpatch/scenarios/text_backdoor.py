"""The text-backdoor scenario: Amazon fine-food reviews, pretrained MiniLM fine-tuned with a rare-word trigger.

The trigger (word, count, insertion position, target label: `generate.trigger`) is inserted into a
share of the non-target training reviews, relabelled to the target. The debugging set is held out
from training; its token labels are the trigger's word pieces. Implements BackdoorKind
(atpatch.scenarios.kind). Texts are tokenised to `generate.max_length` tokens (padded).
"""

from __future__ import annotations

from dataclasses import replace

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from atpatch.scenarios.data.fine_foods import load_reviews
from atpatch.scenarios.data.text_triggers import (TextTrigger, control_test, debugging_set, placement, poison_train,
                                                  token_labels, triggered_test)
from atpatch.core.errors import AtPatchError
from atpatch.scenarios.tables import debug_labels, read_split, write_splits  # noqa: F401 (kind member)
from atpatch.scenarios.models.text import build_text_classifier, encode, load_tokenizer, text_layout, trim
from atpatch.scenarios.training import train_classifier
from atpatch.scenarios import checks

INPUT_KIND = "text"
STREAM_SPLIT, STREAM_POISON, STREAM_TEST, STREAM_DEBUG, STREAM_CALIB, STREAM_PLACEMENTS = 1, 2, 3, 4, 5, 100


def rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream]))


def layout(model=None, params: dict | None = None):
    """[CLS] (position 0) is the prefix; [CLS], [SEP], [PAD] are never flagged; a flagged word piece flags
    its every copy in the review (an attacker may write the trigger twice; docs/method.md)."""
    return replace(text_layout(getattr(model, "atpatch_tokenizer", None) or load_tokenizer()), flag_same_token=True)


def limit(frame: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    """A seeded sample of n rows (all when n is None)."""
    return frame if not n or n >= len(frame) else frame.sample(n=n, random_state=seed).reset_index(drop=True)


def hold_out(frame: pd.DataFrame, n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rest, held-out n rows), seeded: the debugging set never enters training."""
    if n >= len(frame):
        raise AtPatchError(f"generate.debug.n: {n} rows held out, only {len(frame)} training reviews")
    idx = rng(seed, STREAM_SPLIT).permutation(len(frame))
    return frame.iloc[idx[n:]].reset_index(drop=True), frame.iloc[idx[:n]].reset_index(drop=True)


def with_calib_part(debug: pd.DataFrame, share: float, seed: int) -> pd.DataFrame:
    """part = "calib" for a seeded `share` of the clean (untriggered) rows, else "fit"."""
    calib = (rng(seed, STREAM_CALIB).random(len(debug)) < share) & ~debug["triggered"].to_numpy()
    return debug.assign(part=np.where(calib, "calib", "fit"))


def reviews(raw: Path, split: str, docs: Path) -> pd.DataFrame:
    """One split of the raw reviews, checked against its stored suite."""
    frame = load_reviews(raw, split)
    checks.raw_reviews(f"{raw}/{split}", frame, docs)
    return frame


def validate(out: Path, splits: dict[str, pd.DataFrame], docs: Path) -> None:
    checks.table_splits(str(out), splits, docs, min_rows=2, text=True)


def generate(params: dict, root: str | Path = ".") -> dict:
    """Poisoned training split, clean and triggered tests, debugging set; validated, written as parquet."""
    t0 = time.perf_counter()
    root, g, seed = Path(root), params["generate"], int(params["seed"])
    trigger, max_length = TextTrigger(**g["trigger"]), int(g["max_length"])
    tok = load_tokenizer()
    raw, docs, out = root / params["fetch"]["dest"], checks.docs_dir(params, "generate", root), root / g["out"]
    train = limit(reviews(raw, "train", docs), g.get("train_limit"), seed)
    test = limit(reviews(raw, "test", docs), g.get("test_limit"), seed)
    train, debug = hold_out(train, g["debug"]["n"], seed)
    splits = {
        "train": poison_train(train, trigger, g["poison_rate"], seed + STREAM_POISON, tok, max_length),
        "test_clean": test,
        "test_triggered": triggered_test(test, trigger, seed + STREAM_TEST, tok, max_length),
        "debug": with_calib_part(debugging_set(debug, trigger, seed + STREAM_DEBUG, g["debug"]["triggered_share"],
                                               tok, max_length), g["debug"]["calib_share"], seed),
    }
    splits["test_control"] = control_test(splits["test_triggered"], g["control_word"])
    splits.update(placement_splits(test, trigger, g, seed, tok, max_length))
    validate(out, splits, docs)
    summary = {"seed": seed, "trigger": trigger.to_dict(), "max_length": max_length,
               "rows": {k: len(v) for k, v in splits.items()}, "poisoned": int(splits["train"]["poisoned"].sum())}
    write_splits(out, splits, summary)
    print(f"generate: {summary['rows']} ({summary['poisoned']} poisoned) -> {out} in {time.perf_counter() - t0:.1f} s")
    return summary


def placement_splits(test: pd.DataFrame, trigger: TextTrigger, g: dict, seed: int, tok, max_length: int) -> dict:
    """For each unseen placement of `generate.placements` (the trigger moved or repeated where the debugging
    set never put it): the triggered non-target test reviews and their insertion control."""
    out = {}
    for i, (name, change) in enumerate((g.get("placements") or {}).items()):
        trig = triggered_test(test, placement(trigger, change), seed + STREAM_PLACEMENTS + i, tok, max_length)
        out[f"test_triggered_{name}"], out[f"test_control_{name}"] = trig, control_test(trig, g["control_word"])
    return out


def train_victim(params: dict, log) -> torch.nn.Module:
    """MiniLM (first `architecture.layers` layers) fine-tuned on the poisoned split; carries its tokenizer."""
    p, seed, max_length = params["train_victim"], params["seed"], int(params["generate"]["max_length"])
    train = read_split(params, "train")
    model, tok = build_text_classifier(p["architecture"]["layers"], 2, seed)
    model.config.atpatch_max_length = max_length  # serving tokenises like training
    enc = encode(tok, train["text"].tolist(), max_length)
    # trim: each batch is cut to its longest review (padding is masked, so only compute changes).
    train_classifier(model, enc, torch.tensor(train["label"].to_numpy()), p, seed, log, prepare=trim)
    model.atpatch_tokenizer = tok
    return model


def spans(frame: pd.DataFrame) -> list[list[tuple[int, int]]]:
    return [[(int(a), int(b)) for a, b in row] for row in frame["spans"]]


def debug_set(params: dict, model) -> dict:
    """Debugging inputs with the trigger's word pieces labelled 1; calibration part held out."""
    debug, tok = read_split(params, "debug"), layout_tokenizer(model)
    inputs, labels = token_labels(tok, debug["text"].tolist(), spans(debug), int(params["generate"]["max_length"]))
    # A trigger cut off by truncation has no labels: such a row counts as clean for the detector.
    triggered = torch.tensor(debug["triggered"].to_numpy()) & labels.bool().any(1)
    return {"inputs": inputs, "token_labels": labels, "triggered": triggered,
            "calib": torch.from_numpy(debug["part"].to_numpy() == "calib")}


def layout_tokenizer(model=None):
    return getattr(model, "atpatch_tokenizer", None) or load_tokenizer()


def token_strings(tok, input_ids: torch.Tensor) -> list[list[str]]:
    """Word pieces per row for figures; padding as "" (left out of the plot)."""
    return [["" if t == tok.pad_token else t for t in tok.convert_ids_to_tokens(row.tolist())] for row in input_ids]


def target_label(params: dict) -> int:
    """The attack's target label (the trigger's)."""
    return int(params["generate"]["trigger"]["target"])


def test_sets(params: dict, model=None) -> dict:
    """Clean and triggered test inputs, labels, the triggered set's true trigger tokens (the victim's tokenizer),
    the insertion control of the triggered set, and each unseen placement's triggered inputs and control."""
    tok, max_length = layout_tokenizer(model), int(params["generate"]["max_length"])
    clean, trig = read_split(params, "test_clean"), read_split(params, "test_triggered")
    x_trig, tokens = token_labels(tok, trig["text"].tolist(), spans(trig), max_length)
    x_clean = encode(tok, clean["text"].tolist(), max_length)

    def inputs(split: str) -> dict:
        return encode(tok, read_split(params, split)["text"].tolist(), max_length)

    placements = {}
    for name in params["generate"].get("placements") or {}:
        moved = read_split(params, f"test_triggered_{name}")
        x, labels = token_labels(tok, moved["text"].tolist(), spans(moved), max_length)
        placements[name] = {"x_trig": x, "tokens_trig": labels.numpy(), "x_control": inputs(f"test_control_{name}")}
    return {"x_clean": x_clean, "y_clean": clean["label"].to_numpy(), "x_trig": x_trig, "y_trig": trig["label"].to_numpy(),
            "tokens_trig": tokens.numpy(), "target": target_label(params), "show_trig": token_strings(tok, x_trig["input_ids"][:2]),
            "show_clean": token_strings(tok, x_clean["input_ids"][:1]), "x_control": inputs("test_control"),
            "placements": placements}


TEST_SPLITS = {"clean": "test_clean", "triggered": "test_triggered"}


def test_frame(params: dict, split: str, rows: slice = slice(None)) -> pd.DataFrame:
    """Rows of a test split as the pyfunc input (column `text`) plus their `label`."""
    return read_split(params, TEST_SPLITS[split]).iloc[rows][["text", "label"]].reset_index(drop=True)


def input_example(params: dict, rows: int = 2) -> pd.DataFrame:
    """`rows` clean test reviews as the pyfunc input."""
    return test_frame(params, "clean", slice(0, rows))[["text"]]
