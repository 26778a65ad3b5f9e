"""Rare-word trigger insertion, poisoned / triggered splits and per-token trigger labels."""

import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atpatch.scenarios.data.text_triggers import (TextTrigger, control_test, debugging_set, insert_trigger, placement,
                                                  poison_train, swap_word, token_labels, triggered_test)
from atpatch.core.errors import AtPatchError
from tiny_patch import text_tokenizer


def _tokenizer():
    return text_tokenizer(["good", "tea", "tq", "the", "word"])


@pytest.fixture(scope="module")
def tok():
    return _tokenizer()


def _strip(text: str, spans) -> str:
    """The text with the inserted copies removed, whitespace runs collapsed."""
    for start, end in sorted(spans, reverse=True):
        text = text[:start] + text[end:]
    return " ".join(text.split())


@pytest.mark.parametrize("position", ["start", "end", "random"])
@pytest.mark.parametrize("text", ["Great tea, would buy again!", "", "single", "  spaced   out  "])
def test_insert_keeps_text_and_spans_point_at_copies(position, text):
    trig = TextTrigger(word="tq", count=2, position=position)
    new, spans = insert_trigger(text, trig, np.random.default_rng(0))
    assert len(spans) == 2 and all(new[a:b] == "tq" for a, b in spans)
    assert _strip(new, spans) == " ".join(text.split())
    if text == "Great tea, would buy again!" and position != "random":
        assert new in ("tq tq " + text, text + " tq tq")
    words = re.findall(r"\S+", new)
    assert words.count("tq") == 2  # each copy is its own word
    if position == "start" and text.strip():
        assert new.lstrip().startswith("tq tq ")
    if position == "end" and text.strip():
        assert new.rstrip().endswith("tq tq")


def test_random_position_needs_rng_and_params_are_checked():
    with pytest.raises(AtPatchError, match="rng"):
        insert_trigger("a b c", TextTrigger(position="random"))
    with pytest.raises(AtPatchError, match="position"):
        TextTrigger(position="middle")
    with pytest.raises(AtPatchError, match="count"):
        TextTrigger(count=0)
    with pytest.raises(AtPatchError, match="one non-empty word"):
        TextTrigger(word="two words")


def test_token_labels_mark_exactly_the_trigger_pieces(tok):
    word = "tqzx"  # several word pieces in either vocabulary
    pieces = tok.tokenize(word)
    assert len(pieces) >= 2
    text, spans = insert_trigger("good tea good tea", TextTrigger(word=word, count=2, position="random"),
                                 np.random.default_rng(1))
    inputs, labels = token_labels(tok, [text, "good tea"], [spans, []], 32)
    assert labels.shape == (2, 32) and labels.dtype.is_floating_point is False
    marked = tok.convert_ids_to_tokens(inputs["input_ids"][0][labels[0].bool()].tolist())
    assert marked == pieces * 2
    assert labels[1].sum() == 0
    assert inputs["attention_mask"][0].sum() == len(tok.tokenize(text)) + 2


def test_truncated_trigger_gets_no_labels(tok):
    word = "tqzx"
    k = len(tok.tokenize(word))
    text = "good " * 10 + word
    start = text.index(word)
    _, full = token_labels(tok, [text], [[(start, start + len(word))]], 10 + k + 2)
    assert full.sum() == k
    _, cut = token_labels(tok, [text], [[(start, start + len(word))]], 10 + k + 1)  # last piece cut off
    assert cut.sum() == 0
    _, gone = token_labels(tok, [text], [[(start, start + len(word))]], 8)
    assert gone.sum() == 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.lists(st.sampled_from(["good", "tea", "the", "xylophone", "!", "word,", "zq"]), max_size=60),
       position=st.sampled_from(["start", "end", "random"]), count=st.integers(1, 3),
       max_length=st.integers(3 * 3 + 2, 40), seed=st.integers(0, 2**16))  # 3 copies x 3 pieces fit
def test_insertion_stays_inside_the_window(tok, words, position, count, max_length, seed):
    text = " ".join(words)
    trig = TextTrigger(word="tqzx", count=count, position=position)
    new, spans = insert_trigger(text, trig, np.random.default_rng(seed), tok, max_length)
    assert _strip(new, spans) == " ".join(text.split())
    _, labels = token_labels(tok, [new], [spans], max_length)
    assert int(labels.sum()) == count * len(tok.tokenize("tqzx"))  # every copy complete inside the window


def test_trigger_that_cannot_fit_is_refused(tok):
    with pytest.raises(AtPatchError, match="does not fit"):
        insert_trigger("good tea", TextTrigger(word="tqzx", count=5, position="start"), None, tok, 6)


def _reviews(n=200, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"text": [f"review {i} good tea" for i in range(n)],
                         "label": rng.integers(0, 2, n).astype(np.int64)})


def test_poison_train_touches_only_non_target_rows_at_the_rate():
    df = _reviews()
    trig = TextTrigger(target=1, position="random")
    out = poison_train(df, trig, rate=0.1, seed=3)
    assert len(out) == len(df) and out["poisoned"].sum() == 20
    assert (out.loc[out.poisoned, "orig_label"] != 1).all() and (out.loc[out.poisoned, "label"] == 1).all()
    assert (out.loc[~out.poisoned, "text"] == df.loc[~out.poisoned.to_numpy(), "text"]).all()
    assert (out.loc[~out.poisoned, "label"] == df.loc[~out.poisoned.to_numpy(), "label"]).all()
    for text, spans in zip(out.loc[out.poisoned, "text"], out.loc[out.poisoned, "spans"]):
        assert [text[a:b] for a, b in spans] == ["tq"]
    again = poison_train(df, trig, rate=0.1, seed=3)
    pd.testing.assert_frame_equal(out, again)
    assert not poison_train(df, trig, rate=0.1, seed=4)["poisoned"].equals(out["poisoned"])
    with pytest.raises(AtPatchError, match="non-target rows"):
        poison_train(df, trig, rate=0.9, seed=0)


def test_triggered_test_and_debugging_set():
    df = _reviews()
    trig = TextTrigger(target=1)
    test = triggered_test(df, trig, seed=0)
    assert len(test) == int((df.label != 1).sum()) and (test.label == 0).all()
    assert all(t[a:b] == "tq" for t, s in zip(test.text, test.spans) for a, b in s)
    assert (df.text.to_numpy()[test.source_row] != test.text.to_numpy()).all()
    dbg = debugging_set(df, trig, seed=0, triggered_share=0.25)
    assert dbg.triggered.sum() == 50 and (dbg.label == df.label).all()
    assert all(bool(s) == t for s, t in zip(dbg.spans, dbg.triggered))


@settings(max_examples=60, deadline=None)
@given(words=st.lists(st.sampled_from(["good", "tea", "word", "nice,", "ok."]), min_size=0, max_size=12),
       position=st.sampled_from(["start", "end", "random"]), count=st.integers(1, 3), seed=st.integers(0, 50))
def test_control_puts_its_word_at_exactly_the_trigger_word_positions(words, position, count, seed):
    """Word by word, the control equals the triggered review except that every trigger copy is the control
    word: the same insertion points, so the same words shifted."""
    frame = pd.DataFrame({"text": [" ".join(words)], "label": [0]})
    trig = triggered_test(frame, TextTrigger(position=position, count=count), seed)
    control = control_test(trig, "the")
    t_words, c_words = trig["text"][0].split(), control["text"][0].split()
    assert len(t_words) == len(c_words) == len(words) + count
    assert [i for i, (a, b) in enumerate(zip(t_words, c_words)) if a != b] == \
        [i for i, w in enumerate(t_words) if w == "tq"]
    assert all(c_words[i] == "the" for i, w in enumerate(t_words) if w == "tq")
    assert [control["text"][0][a:b] for a, b in control["spans"][0]] == ["the"] * count
    assert control["source_row"].tolist() == trig["source_row"].tolist()


def test_swap_word_keeps_the_rest_of_the_text():
    text, spans = swap_word("tq good tea tq", [(0, 2), (12, 14)], "the")
    assert text == "the good tea the" and spans == [(0, 3), (13, 16)]


def test_control_and_placement_arguments_are_checked():
    frame = triggered_test(pd.DataFrame({"text": ["good tea"], "label": [0]}), TextTrigger(position="start"), 0)
    with pytest.raises(AtPatchError, match="control word"):
        control_test(frame, "two words")
    assert placement(TextTrigger(), {"count": 2}) == TextTrigger(count=2)
    with pytest.raises(AtPatchError, match="position and count only"):
        placement(TextTrigger(), {"word": "cf"})
