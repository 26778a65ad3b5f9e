"""The tabular-fairness data sets (Adult, COMPAS): one spec each, and the helpers their loaders share.

A data set module (atpatch.scenarios.data.adult, atpatch.scenarios.data.compas) defines a `TabularDataset`: its CSV,
feature columns, the values its protected columns can take, the split's strata and its loader.
`get_dataset(name)` picks one by the name params use (`generate.dataset`). The shared pieces:
reading a raw CSV with clear errors (`read_raw_csv`), integer columns (`to_int`), the seeded
stratified split (`split_frame`) and the training-split skew (`skew_group_label`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from atpatch.core.errors import AtPatchError

LABEL = "label"  # every loader's label column: int64, 0 or 1

# Data set name -> "module:attribute" of its TabularDataset (imported on demand).
DATASETS = {"adult": "atpatch.scenarios.data.adult:DATASET", "compas": "atpatch.scenarios.data.compas:DATASET"}


@dataclass(frozen=True)
class TabularDataset:
    """One data set of the tabular-fairness kind. `load(path, protected=...)` returns a clean frame:
    the feature columns (categorical as str, numeric as int64) plus `label`."""

    name: str
    file: str                          # CSV name inside the raw folder of `source`
    source: str                        # the raw data source (stage fetch@<source>) that holds the file
    categorical: tuple[str, ...]       # feature columns, in the victim's token order
    numeric: tuple[str, ...]
    log_numeric: tuple[str, ...]       # heavy-tailed numeric columns: log1p before standardising
    protected: tuple[str, ...]         # default protected attributes (categorical columns)
    known: dict[str, tuple[str, ...]] = field(default_factory=dict)  # values a protected column can take
    stratify: tuple[str, ...] = (LABEL,)  # split strata (joint values)
    load: Callable = None

    @property
    def features(self) -> tuple[str, ...]:
        """The victim's input columns in token order (after CLS): categorical, then numeric."""
        return (*self.categorical, *self.numeric)


def get_dataset(name: str | None, where: str = "generate.dataset") -> TabularDataset:
    """The data set called `name` (None: adult). Unknown names raise AtPatchError naming `where`."""
    name = "adult" if name is None else name
    if name not in DATASETS:
        raise AtPatchError(f"{where}: expected one of {sorted(DATASETS)}, got {name!r}")
    module, attr = DATASETS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def check_protected(protected, categorical, who: str, what: str) -> None:
    """Protected attributes must be categorical columns of the schema."""
    bad = [c for c in protected if c not in categorical]
    if bad:
        raise AtPatchError(f"{who}: protected attributes {bad} are not categorical {what} columns {list(categorical)}")


def read_raw_csv(path: Path | str, columns, what: str, fetch_hint: str):
    """Read `columns` of a raw CSV as stripped strings (a DataFrame in that column order).

    Errors (AtPatchError, naming the file): not found (with `fetch_hint`), not a readable CSV, an
    expected column absent (the expected ones and the ones present), no data rows. A header may
    name a column twice (ProPublica's COMPAS file has `decile_score` and `priors_count` twice):
    the copies of a requested column must agree, else an error names it; the first is used.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise AtPatchError(f"{path}: {what} CSV not found; {fetch_hint}")
    try:
        # header=None: pandas would rename a repeated column ("priors_count.1"); read the header as a
        # row instead, so each name's copies are found by position.
        raw = pd.read_csv(path, dtype=str, header=None, skipinitialspace=True, keep_default_na=False)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise AtPatchError(f"{path}: not a readable CSV file ({type(exc).__name__}: {str(exc)[:200]})") from exc
    header = [str(c).strip() for c in raw.iloc[0]]
    absent = [c for c in columns if c not in header]
    if absent:
        raise AtPatchError(f"{path}: expected {what} column(s) {absent} are missing; columns present: {header[:60]}")
    body = raw.iloc[1:]
    if len(body) == 0:
        raise AtPatchError(f"{path}: no data rows")
    out = {}
    for c in columns:
        copies = [body.iloc[:, i].str.strip() for i, h in enumerate(header) if h == c]
        for other in copies[1:]:
            if not other.equals(copies[0]):
                differ = int((other != copies[0]).sum())
                raise AtPatchError(f"{path}: column {c!r} appears {len(copies)} times in the header and the copies "
                                   f"differ in {differ} row(s); expected identical copies")
        out[c] = copies[0]
    return pd.DataFrame(out).reset_index(drop=True)


def to_int(frame, columns, path) -> None:
    """Columns of numbers -> int64, in place; a non-number raises AtPatchError naming file and column."""
    import pandas as pd

    for col in columns:
        values = pd.to_numeric(frame[col], errors="coerce")
        if values.isna().any():
            example = frame.loc[values.isna(), col].iloc[0]
            raise AtPatchError(f"{path}: numeric column {col!r} holds a non-number ({example!r})")
        frame[col] = values.astype("int64")


def split_frame(frame, test_size: float = 0.2, debug_size: float = 0.1, seed: int = 0,
                stratify: tuple[str, ...] = (LABEL,)) -> dict:
    """Seeded stratified split into {"train", "test", "debug"} DataFrames (fresh 0..n-1 indices).

    `test_size` and `debug_size` are shares of the whole frame; `debug` (the debugging set the
    detector learns from) is disjoint from both others; `debug_size=0` gives no "debug" key.
    Strata: the joint values of `stratify` columns.
    """
    from sklearn.model_selection import train_test_split

    if not (0 < test_size < 1 and 0 <= debug_size < 1 and test_size + debug_size < 1):
        raise AtPatchError(f"split: test_size {test_size} and debug_size {debug_size} must be shares "
                           "in (0, 1) whose sum is below 1")
    missing = [c for c in stratify if c not in frame.columns]
    if missing:
        raise AtPatchError(f"split: stratify columns {missing} not in the frame ({list(frame.columns)})")

    def strata(f):  # one integer per joint value of the stratify columns
        return f.groupby(list(stratify), sort=True).ngroup().to_numpy() if stratify else None

    rest, test = train_test_split(frame, test_size=test_size, random_state=seed, stratify=strata(frame))
    out = {"test": test}
    if debug_size > 0:
        rest, debug = train_test_split(rest, test_size=debug_size / (1 - test_size), random_state=seed + 1,
                                       stratify=strata(rest))
        out["debug"] = debug
    out["train"] = rest
    return {k: out[k].reset_index(drop=True) for k in ("train", "test", "debug") if k in out}


def skew_group_label(frame, attribute: str = "sex", group: str = "Female", label: int = 1, keep: float = 0.2,
                     seed: int = 0):
    """Training-data skew that makes a victim discriminate: keep only a `keep` share of the rows whose
    `attribute` is `group` and whose label is `label` (seeded); every other row is kept.

    E.g. on Adult, keep=0.2 of the women earning >50K lowers P(>50K | Female) in the training split
    from 0.11 to about 0.025 while men stay at 0.31, so the model learns that `sex` alone decides.
    Apply it to the training split only; test and debugging splits stay as sampled.
    """
    import numpy as np

    if attribute not in frame.columns or LABEL not in frame.columns:
        raise AtPatchError(f"skew_group_label: columns {attribute!r} and {LABEL!r} needed (columns: {list(frame.columns)})")
    if not 0.0 <= keep <= 1.0:
        raise AtPatchError(f"skew_group_label: keep must be a share in [0, 1], got {keep}")
    target = np.flatnonzero(((frame[attribute] == group) & (frame[LABEL] == label)).to_numpy())
    if target.size == 0:
        raise AtPatchError(f"skew_group_label: no rows with {attribute} == {group!r} and {LABEL} == {label}")
    rng = np.random.default_rng(seed)
    drop = rng.choice(target, size=target.size - int(round(keep * target.size)), replace=False)
    return frame.drop(index=frame.index[drop]).reset_index(drop=True)
