"""COMPAS (ProPublica's compas-scores-two-years): loader for the tabular-fairness kind.

The raw file `propublica-recidivism.csv` (7,214 rows, 53 columns) comes with Adult out of PyPI's
`fairness==0.1.8` wheel: stage fetch@adult puts both into data/raw/adult (atpatch.scenarios.data.adult).

`load_compas` applies ProPublica's standard filter (their analysis notebook): the COMPAS screening
within 30 days of the arrest (`days_b_screening_arrest` in [-30, 30]; rows without it dropped),
`is_recid != -1` (no recidivism record), `c_charge_degree != "O"` (ordinary traffic offences) and
`score_text != "N/A"`: 6,172 rows. Features are what a user would expect of a recidivism model,
never COMPAS's own output (`decile_score`, `score_text`): categorical sex, race, age_cat,
c_charge_degree; numeric age, priors_count, juv_fel_count, juv_misd_count, juv_other_count.
Label `two_year_recid` (1 = reoffended within two years).
"""

from __future__ import annotations

from pathlib import Path

from atpatch.scenarios.data.tabular import LABEL, TabularDataset, check_protected, read_raw_csv, to_int
from atpatch.core.errors import AtPatchError

COMPAS_FILE = "propublica-recidivism.csv"
CATEGORICAL: tuple[str, ...] = ("sex", "race", "age_cat", "c_charge_degree")
NUMERIC: tuple[str, ...] = ("age", "priors_count", "juv_fel_count", "juv_misd_count", "juv_other_count")
# Counts with heavy tails (priors up to 38, juvenile counts mostly 0): log1p before standardising.
LOG_NUMERIC: tuple[str, ...] = ("priors_count", "juv_fel_count", "juv_misd_count", "juv_other_count")
FILTER: tuple[str, ...] = ("days_b_screening_arrest", "is_recid", "score_text")  # read to filter, then dropped
RAW_LABEL = "two_year_recid"
COLUMNS: tuple[str, ...] = CATEGORICAL + NUMERIC + FILTER + (RAW_LABEL,)
PROTECTED: tuple[str, ...] = ("race", "sex")
MAX_SCREENING_DAYS = 30
# Race: Asian (31 rows after the filter) and Native American (11) join "Other" (343). A group of a few
# rows leaves its embedding barely trained, so counterfactuals into it (tabular counterfactuals try
# every other value) would measure noise, and its DP/EO terms would rest on a handful of test rows.
# African-American (3,175), Caucasian (2,103), Hispanic (509) stay as they are.
RACE_MERGE = {"Asian": "Other", "Native American": "Other"}
RACES: tuple[str, ...] = ("African-American", "Caucasian", "Hispanic", "Other")
SEXES: tuple[str, ...] = ("Female", "Male")


def load_compas(path: Path | str, protected: tuple[str, ...] = PROTECTED):
    """Read COMPAS's CSV into a clean DataFrame: the feature columns plus `label` (int64, 1 = reoffended).

    ProPublica's filter (module docstring), race's small groups merged into "Other", numeric columns
    int64. The duplicated header names (`decile_score`, `priors_count` appear twice) are handled by
    `read_raw_csv`: `priors_count`'s two copies must be identical (they are), `decile_score` is not
    read. Raises AtPatchError naming the file (and the column) when the file is missing, not a CSV,
    lacks a column or holds a value of the wrong kind.
    """
    import pandas as pd

    path = Path(path)
    check_protected(protected, CATEGORICAL, "load_compas", "COMPAS")
    frame = read_raw_csv(path, COLUMNS, "COMPAS", f"run `python -m atpatch.scenarios.data.adult {path.parent}` (it fetches "
                                                  "COMPAS with Adult; scripts/setup.sh does)")
    days = pd.to_numeric(frame["days_b_screening_arrest"].where(frame["days_b_screening_arrest"] != ""),
                         errors="coerce")
    odd = frame["days_b_screening_arrest"].ne("") & days.isna()
    if odd.any():
        raise AtPatchError(f"{path}: numeric column 'days_b_screening_arrest' holds a non-number "
                           f"({frame.loc[odd, 'days_b_screening_arrest'].iloc[0]!r})")
    keep = (days.between(-MAX_SCREENING_DAYS, MAX_SCREENING_DAYS) & frame["is_recid"].ne("-1")
            & frame["c_charge_degree"].ne("O") & frame["score_text"].ne("N/A"))
    frame = frame.loc[keep, [*CATEGORICAL, *NUMERIC, RAW_LABEL]].reset_index(drop=True)
    if len(frame) == 0:
        raise AtPatchError(f"{path}: no rows left after ProPublica's filter (days_b_screening_arrest in "
                           f"[-{MAX_SCREENING_DAYS}, {MAX_SCREENING_DAYS}], is_recid != -1, c_charge_degree != 'O', "
                           "score_text != 'N/A')")
    for col in CATEGORICAL:
        if frame[col].eq("").any():
            raise AtPatchError(f"{path}: categorical column {col!r} has empty values")
    frame["race"] = frame["race"].replace(RACE_MERGE)
    for col, expected in (("sex", SEXES), ("race", RACES)):
        unknown = sorted(set(frame[col].unique()) - set(expected))
        if unknown:
            raise AtPatchError(f"{path}: column {col!r} has values {unknown[:5]}; expected {list(expected)}")
    to_int(frame, NUMERIC, path)
    raw = frame.pop(RAW_LABEL)
    unknown = sorted(set(raw.unique()) - {"0", "1"})
    if unknown:
        raise AtPatchError(f"{path}: column {RAW_LABEL!r} has values {unknown[:5]}; expected '0' or '1'")
    frame[LABEL] = (raw == "1").astype("int64")
    return frame


DATASET = TabularDataset(
    name="compas", file=COMPAS_FILE, source="adult", categorical=CATEGORICAL, numeric=NUMERIC,
    log_numeric=LOG_NUMERIC, protected=PROTECTED, known={"sex": SEXES, "race": RACES},
    stratify=(LABEL, "race"), load=load_compas)
