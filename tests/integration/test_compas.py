"""COMPAS on the real file (fetched with Adult by fetch@adult): loader, errors, the data set choice."""

from pathlib import Path

import pandas as pd
import pytest

from atpatch.scenarios.data.compas import CATEGORICAL, COMPAS_FILE, DATASET, NUMERIC, RACES, load_compas
from atpatch.scenarios.data.tabular import LABEL, get_dataset, split_frame
from atpatch.core.errors import AtPatchError


@pytest.fixture(scope="session")
def compas_csv(adult_raw) -> Path:
    return adult_raw / COMPAS_FILE


@pytest.fixture(scope="module")
def compas(compas_csv):
    return load_compas(compas_csv)


def _raw(path: Path, rows: int | None = None) -> list[str]:
    lines = path.read_text().splitlines()
    return lines if rows is None else lines[:rows + 1]


def test_load_real_file(compas, compas_csv):
    assert len(_raw(compas_csv)) - 1 == 7_214
    assert compas.shape == (6_172, len(CATEGORICAL) + len(NUMERIC) + 1)  # ProPublica's filter: 7,214 -> 6,172
    assert list(compas.columns) == [*CATEGORICAL, *NUMERIC, LABEL]
    assert not {"decile_score", "score_text", "two_year_recid"} & set(compas.columns)  # COMPAS's own output: never
    assert set(compas[LABEL].unique()) == {0, 1} and 0.45 < compas[LABEL].mean() < 0.46
    assert all(compas[c].dtype == "int64" for c in NUMERIC)
    assert set(compas["race"]) == set(RACES) and set(compas["sex"]) == {"Female", "Male"}
    assert set(compas["c_charge_degree"]) == {"F", "M"}
    assert set(compas["age_cat"]) == {"Less than 25", "25 - 45", "Greater than 45"}
    assert compas["race"].value_counts().to_dict() == {"African-American": 3_175, "Caucasian": 2_103, "Hispanic": 509,
                                                       "Other": 343 + 31 + 11}  # Asian, Native American merged
    rates = compas.groupby("race")[LABEL].mean()
    assert rates["African-American"] > rates["Caucasian"] + 0.1


def test_duplicated_header_names_are_checked(compas_csv, tmp_path):
    """priors_count appears twice: identical copies are fine, differing ones are an error naming the column."""
    lines = _raw(compas_csv, 40)
    header = lines[0].split(",")
    assert header.count("priors_count") == 2 and header.count("decile_score") == 2
    second = [i for i, h in enumerate(header) if h == "priors_count"][1]
    assert len(load_compas(_write(tmp_path / "ok.csv", lines))) > 0
    fields = lines[1].split(",")
    fields[second] = str(int(fields[second]) + 1)
    with pytest.raises(AtPatchError, match=r"bad\.csv: column 'priors_count' appears 2 times in the header and the "
                                           r"copies differ in 1 row"):
        load_compas(_write(tmp_path / "bad.csv", [lines[0], ",".join(fields), *lines[2:]]))


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_filter_drops_what_propublica_drops(compas_csv, tmp_path):
    lines = _raw(compas_csv)
    header = lines[0].split(",")
    col = {h: header.index(h) for h in ("days_b_screening_arrest", "is_recid", "c_charge_degree", "score_text")}
    raw = pd.read_csv(compas_csv, dtype=str, keep_default_na=False)
    kept = raw.index[raw["days_b_screening_arrest"].isin(["0", "-1"]) & raw["is_recid"].ne("-1")
                     & raw["c_charge_degree"].isin(["F", "M"]) & raw["score_text"].ne("N/A")][:5].tolist()
    rows = [lines[i + 1].split(",") for i in kept]
    for fields, (name, value) in zip(rows[1:], [("days_b_screening_arrest", "31"), ("days_b_screening_arrest", ""),
                                                ("is_recid", "-1"), ("c_charge_degree", "O")]):
        fields[col[name]] = value
    frame = load_compas(_write(tmp_path / "few.csv", [lines[0], *(",".join(f) for f in rows)]))
    assert len(frame) == 1 and frame["age"].iloc[0] == int(raw.loc[kept[0], "age"])


def test_missing_file_error(tmp_path):
    with pytest.raises(AtPatchError, match=r"nope\.csv: COMPAS CSV not found; run `python -m atpatch.scenarios.data.adult"):
        load_compas(tmp_path / "nope.csv")


def test_missing_column_error_names_file_field_and_present(compas_csv, tmp_path):
    lines = _raw(compas_csv, 5)
    bad = _write(tmp_path / "bad.csv", [lines[0].replace(",two_year_recid", ",recid_2y"), *lines[1:]])
    with pytest.raises(AtPatchError, match=r"bad\.csv: expected COMPAS column\(s\) \['two_year_recid'\] are missing; "
                                           r"columns present: \[.*'recid_2y'\]"):
        load_compas(bad)


def test_bad_values_and_protected_errors(compas_csv, tmp_path):
    lines = _raw(compas_csv, 40)
    header = lines[0].split(",")
    fields = lines[1].split(",")
    fields[header.index("two_year_recid")] = "maybe"
    with pytest.raises(AtPatchError, match=r"label\.csv: column 'two_year_recid' has values \['maybe'\]"):
        load_compas(_write(tmp_path / "label.csv", [lines[0], ",".join(fields), *lines[2:]]))
    with pytest.raises(AtPatchError, match=r"protected attributes \['age'\] are not categorical COMPAS columns"):
        load_compas(compas_csv, protected=("age",))


def test_split_and_dataset_choice(compas):
    s = split_frame(compas, 0.2, 0.1, seed=0, stratify=DATASET.stratify)
    assert {k: len(v) for k, v in s.items()} == {"train": 4_319, "test": 1_235, "debug": 618}
    for k in ("test", "debug"):
        assert abs((s[k]["race"] == "African-American").mean() - (s["train"]["race"] == "African-American").mean()) < 0.01
    assert get_dataset("compas") is DATASET and get_dataset(None).name == "adult"
    assert DATASET.features == (*CATEGORICAL, *NUMERIC) and DATASET.source == "adult"
    with pytest.raises(AtPatchError, match=r"generate\.dataset: expected one of \['adult', 'compas'\], got 'german'"):
        get_dataset("german")


def test_scenario_kind_picks_the_dataset():
    from atpatch.scenarios import scenario_params
    from atpatch.scenarios.tabular import dataset

    from atpatch.io import load_params

    shipped = load_params(path=Path(__file__).resolve().parents[2] / "params.yaml")
    base = shipped["scenarios"]["tabular-fairness"]  # every other stage section as shipped

    def scenario(source: str, generate: dict) -> dict:
        return {**base, "source": source, "generate": generate}

    params = {"defaults": shipped["defaults"], "scenarios": {
        "c": scenario("adult", {"dataset": "compas"}), "a": scenario("adult", {}),
        "x": scenario("adult", {"dataset": "nope"}), "y": scenario("fine-foods", {"dataset": "compas"})}}
    assert dataset(scenario_params(params, "c")).name == "compas"
    assert dataset(scenario_params(params, "a")).name == "adult"
    with pytest.raises(AtPatchError, match=r"scenarios\.x\.generate\.dataset: expected one of \['adult', 'compas'\], "
                                           r"got 'nope'"):
        dataset(scenario_params(params, "x"))
    with pytest.raises(AtPatchError, match=r"scenarios\.y\.source: data set 'compas' comes from source 'adult', "
                                           r"got 'fine-foods'"):
        dataset(scenario_params(params, "y"))
