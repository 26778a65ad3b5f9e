"""Gendered words: counterfactual swaps, masks, token labels, the skewed split, counterfactual labels."""

import re

import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from atpatch.scenarios.data.gendered import (DEFAULT_LEXICON, FUNCTION_WORDS, GENDER_PAIRS, ONE_WAY, GenderLexicon,
                                   counterfactual_labels, gendered_mask, gendered_spans, gendered_token_labels,
                                   has_gendered, load_names, skewed_split, swap_gender, text_gender)
from atpatch.core.errors import AtPatchError
from tiny_patch import text_tokenizer

PAIR_WORDS = sorted({w for p in GENDER_PAIRS for w in p} | set(ONE_WAY))
NEUTRAL = ["tea", "the", "good", "dog", "to", "and", "it", "cat", "heal", "shell", "history", "manly", "MEN's",
           "hero", "sheet", "human", "Hiss", "a"]
SEPS = [" ", "  ", ", ", ". ", "! ", "'", "-", "\n", "; "]


def _case(word, style):
    return {"lower": word, "title": word[:1].upper() + word[1:], "upper": word.upper()}[style]


words = st.one_of(st.sampled_from(NEUTRAL),
                  st.tuples(st.sampled_from(PAIR_WORDS), st.sampled_from(["lower", "title", "upper"])).map(
                      lambda t: _case(*t)))
texts = st.lists(st.tuples(words, st.sampled_from(SEPS)), max_size=25).map(lambda ws: "".join(w + s for w, s in ws))


def _split(text):
    """Alternating non-word / word chunks (words = maximal runs of letters)."""
    return re.split(r"([A-Za-z]+)", text)


@settings(max_examples=300, deadline=None)
@given(texts)
def test_swap_changes_only_the_gendered_words(text):
    swapped = swap_gender(text)
    a, b = _split(text), _split(swapped)
    assert len(a) == len(b)
    gendered = {(s, e) for s, e in gendered_spans(text)}
    pos = 0
    for i, (x, y) in enumerate(zip(a, b)):
        if i % 2 == 0 or (pos, pos + len(x)) not in gendered:
            assert x == y  # separators and every other word untouched
        else:
            assert x.lower() != y.lower() and y.lower() in DEFAULT_LEXICON._gender
            assert DEFAULT_LEXICON._gender[y.lower()] != DEFAULT_LEXICON._gender[x.lower()]
            if x.islower():
                assert y.islower()
            elif x.isupper():
                assert y.isupper()
            else:
                assert y[:1].isupper() and y[1:].islower()
        pos += len(x)


def _ambiguous_him(text):
    """'him' or 'hers' before a content word: where swapping twice is not the identity (module doc)."""
    return any(not m.group(2) or m.group(2).lower() not in FUNCTION_WORDS
               for m in re.finditer(r"\b(?:him|hers)\b(\s+([A-Za-z][A-Za-z'-]*))?", text, re.IGNORECASE) if m.group(1))


@settings(max_examples=300, deadline=None)
@given(texts)
def test_swapping_twice_is_identity_on_pair_words(text):
    if _ambiguous_him(text) or any(re.search(rf"\b{w}\b", text, re.IGNORECASE) for w in ONE_WAY):
        return
    assert swap_gender(swap_gender(text)) == text


@pytest.mark.parametrize("text, expected", [
    ("She loves her dog.", "He loves his dog."),
    ("I gave it to her.", "I gave it to him."),
    ("I gave her a box", "I gave him a box"),
    ("HIS tea is his.", "HER tea is hers."),
    ("My husband's mom, Mrs. Lee", "My wife's dad, Mr. Lee"),
    ("the woman and the man", "the man and the woman"),
    ("Shelly hid the sheet; history", "Shelly hid the sheet; history"),  # no partial-word matches
    ("he'll take HIMSELF", "she'll take HERSELF"),
    ("Ms. Jones", "Mr. Jones"),
])
def test_swap_examples(text, expected):
    assert swap_gender(text) == expected


def test_masks_spans_and_text_gender():
    texts = ["my wife loves it", "no people here", "He and she", "the shell of a man"]
    assert gendered_mask(texts).tolist() == [True, False, True, True]
    assert has_gendered("Sherry tea") is False
    assert gendered_spans("my wife loves him") == [(3, 7), (14, 17)]
    assert [text_gender(t) for t in texts] == ["female", "none", "mixed", "male"]


def test_names_are_title_case_and_paired():
    lex = GenderLexicon(female_names=["Mary", "Ann"], male_names=["Bob", "Tom", "He"])  # "He" is a pair word
    assert lex.female_names == ("Ann", "Mary") and lex.male_names == ("Bob", "Tom")
    assert swap_gender("Mary and Bob, mary and bob", lex) == "Tom and Ann, mary and bob"
    assert swap_gender(swap_gender("Mary met Tom", lex), lex) == "Mary met Tom"
    assert text_gender("Ann", lex) == "female" and text_gender("Tom", lex) == "male"


def test_load_names_drops_shared_and_checks_format(tmp_path):
    (tmp_path / "female.txt").write_text("Mary\nRobin\nAnne-Marie\n")
    (tmp_path / "male.txt").write_text("Bob\nRobin\n")
    female, male = load_names(tmp_path)
    assert female == {"Mary"} and male == {"Bob"}
    (tmp_path / "male.txt").write_text("Bob\n42\n")
    with pytest.raises(AtPatchError, match=r"male.txt: expected one first name a line"):
        load_names(tmp_path)
    with pytest.raises(AtPatchError, match="fetch_names"):
        load_names(tmp_path / "nowhere")


def _frame():
    texts = (["she liked it"] * 10 + ["he liked it"] * 10 + ["plain text"] * 10 + ["he and she"] * 4)
    labels = [1] * 6 + [0] * 4 + [0] * 6 + [1] * 4 + [0, 1] * 5 + [0, 1, 0, 1]
    return pd.DataFrame({"text": texts, "label": labels})


@pytest.mark.parametrize("mode", ["relabel", "swap", "drop"])
def test_skewed_split_full_skew_makes_gender_predict_label(mode):
    df = _frame()
    out = skewed_split(df, skew=1.0, seed=0, mode=mode, female_label=0)
    single = out[out.gender.isin(["female", "male"])]
    assert ((single.gender == "female") == (single.label == 0)).all()
    assert out[out.gender.isin(["none", "mixed"])].shape[0] == 14  # never touched
    assert out.changed.sum() == (12 if mode != "drop" else 0)
    assert len(out) == (34 if mode != "drop" else 22)


def test_skewed_split_zero_skew_is_identity_and_checks_params():
    df = _frame()
    out = skewed_split(df, skew=0.0, seed=0)
    assert (out.text == df.text).all() and (out.label == df.label).all() and not out.changed.any()
    half = skewed_split(df, skew=0.5, seed=1)
    assert 0 < half.changed.sum() < 12
    with pytest.raises(AtPatchError, match="skew"):
        skewed_split(df, skew=1.5, seed=0)
    with pytest.raises(AtPatchError, match="mode"):
        skewed_split(df, skew=0.5, seed=0, mode="flip")


def _tokenizer():
    return text_tokenizer(["he", "she", "my", "wife", "tea"])


def test_gendered_token_labels_and_counterfactual_flips():
    tok = _tokenizer()
    texts = ["my wife likes tea", "tea tea", "he said so", "grandmother"]
    inputs, labels = gendered_token_labels(tok, texts, 16)
    marked = [tok.convert_ids_to_tokens(ids[lab.bool()].tolist()) for ids, lab in zip(inputs["input_ids"], labels)]
    assert marked[0] == tok.tokenize("wife") and marked[1] == [] and marked[2] == tok.tokenize("he")
    assert marked[3] == tok.tokenize("grandmother")

    class ByFirstToken(torch.nn.Module):
        """Predicts 1 when a female word piece is present (a maximally unfair 'model')."""

        config = type("C", (), {"num_labels": 2})()
        female = set(tok.convert_tokens_to_ids(tok.tokenize("wife she grandmother")))

        def forward(self, input_ids, attention_mask):
            hit = torch.tensor([[int(i) in self.female for i in row] for row in input_ids]).any(-1)
            return type("O", (), {"logits": torch.stack([~hit, hit], -1).float()})()

    out = counterfactual_labels(ByFirstToken(), tok, texts, 16)
    assert out["gendered"].tolist() == [True, False, True, True]
    assert out["flipped"].tolist() == [True, False, True, True]
    assert torch.equal(out["token_labels"], labels)
