"""Amazon fine-food reviews (4,000 train / 1,000 test) from Debian's `r-cran-modeldata` package.

The R package ships its data sets as an R lazy-load database (`data/Rdata.rdx` index +
`data/Rdata.rdb` blobs); R itself is not needed: PyPI `rdata` parses the serialised objects
`training_data` and `testing_data` (columns product, review, score in {great, other}). They are
written as `train.csv` / `test.csv` (columns product, review, score) plus a manifest
`fine_foods.json` with the sha256 of the source files (pinned) and of the CSVs (checked on reuse).
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import struct
import warnings
import zlib
from pathlib import Path

from atpatch.scenarios.data.fetch import extracted_deb, sha256_file, verify_sha256
from atpatch.core.errors import AtPatchError
from atpatch.io import write_bytes_atomic, write_json_atomic

PACKAGE = "r-cran-modeldata"
RDATA_DIR = Path("usr/lib/R/site-library/modeldata/data")

# sha256 of the lazy-load database in r-cran-modeldata 1.1.0-1 (Debian bookworm).
MODELDATA_SHA256: dict[str, str] = {
    "Rdata.rdx": "c23e1be60f2730fb526ce158a307e154c91a953169fcb8e73350c4e032e14538",
    "Rdata.rdb": "2ecef5e8da0f782ae4e3f65d928fe769702accffd8981cc358a3097f6736f58f",
}

# split -> (R object name, file written, expected rows)
SPLITS: dict[str, tuple[str, str, int]] = {
    "train": ("training_data", "train.csv", 4000),
    "test": ("testing_data", "test.csv", 1000),
}
COLUMNS = ("product", "review", "score")
LABELS = {"great": 1, "other": 0}
MANIFEST = "fine_foods.json"


# ------------------------------------------------------------------------------ R lazy-load reading


def _rdata():
    try:
        import rdata
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise AtPatchError("reading the fine-food reviews needs the PyPI package 'rdata' (pip install rdata)") from exc
    return rdata


def _convert(rdata, raw: bytes, what: str):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Unknown file type: assumed RDS": lazy-load blobs have no header
            return rdata.conversion.convert(rdata.parser.parse_data(raw))
    except Exception as exc:  # rdata raises assorted errors on bad input
        raise AtPatchError(f"{what}: not a readable R serialisation ({type(exc).__name__}: {exc})") from exc


def _decompress(chunk: bytes, what: str) -> bytes:
    """One lazy-load blob: 4-byte big-endian length, then a type byte (Z/2/0) or a zlib stream."""
    if len(chunk) < 5:
        raise AtPatchError(f"{what}: blob of {len(chunk)} bytes is too short")
    size = struct.unpack(">I", chunk[:4])[0]
    kind = chunk[4:5]
    try:
        if kind == b"Z":
            raw = lzma.decompress(chunk[5:], format=lzma.FORMAT_RAW,
                                  filters=[{"id": lzma.FILTER_LZMA2, "dict_size": 1 << 26}])
        elif kind == b"2":
            raw = bz2.decompress(chunk[5:])
        elif kind == b"0":
            raw = chunk[5:]
        else:
            raw = zlib.decompress(chunk[4:])
    except (lzma.LZMAError, OSError, zlib.error, ValueError) as exc:
        raise AtPatchError(f"{what}: blob does not decompress ({exc})") from exc
    if len(raw) != size:
        raise AtPatchError(f"{what}: blob decompressed to {len(raw)} bytes, its header says {size}")
    return raw


def read_lazyload(rdx: Path | str, rdb: Path | str, name: str):
    """Object `name` of an R lazy-load database (`.rdx` index + `.rdb` blobs), converted by `rdata`."""
    rdata = _rdata()
    rdx, rdb = Path(rdx), Path(rdb)
    try:
        index = _convert(rdata, gzip.decompress(rdx.read_bytes()), str(rdx))
    except (OSError, EOFError) as exc:
        raise AtPatchError(f"{rdx}: not a gzip-compressed R index ({exc})") from exc
    variables = index.get("variables") if isinstance(index, dict) else None
    if not variables or name not in variables:
        raise AtPatchError(f"{rdx}: no object '{name}' in the index (has {sorted(map(str, variables or {}))[:50]})")
    offset, length = (int(v) for v in variables[name])
    with open(rdb, "rb") as fh:
        fh.seek(offset)
        chunk = fh.read(length)
    if len(chunk) != length:
        raise AtPatchError(f"{rdb}: object '{name}' needs bytes {offset}..{offset + length}, file is shorter")
    return _convert(rdata, _decompress(chunk, f"{rdb}[{name}]"), f"{rdb}[{name}]")


def _frame_csv(df, name: str, rows: int, source: str) -> bytes:
    """Check an R data frame (columns, labels, rows) and render it as CSV bytes."""
    import pandas as pd

    if not isinstance(df, pd.DataFrame) or tuple(df.columns) != COLUMNS:
        got = list(df.columns) if isinstance(df, pd.DataFrame) else type(df).__name__
        raise AtPatchError(f"{source}: '{name}' expected a data frame with columns {list(COLUMNS)}, got {got}")
    if len(df) != rows:
        raise AtPatchError(f"{source}: '{name}' expected {rows} rows, got {len(df)}")
    out = pd.DataFrame({c: df[c].astype(str).to_numpy(dtype=object) for c in COLUMNS})
    bad = sorted(set(out["score"]) - set(LABELS))
    if bad:
        raise AtPatchError(f"{source}: '{name}' has scores {bad}; expected only {sorted(LABELS)}")
    return out.to_csv(index=False, lineterminator="\n").encode("utf-8")


# ------------------------------------------------------------------------------ fetch


def _present(dest: Path) -> dict[str, str] | None:
    """The manifest's file hashes when every file is there and verified, else None."""
    try:
        manifest = json.loads((dest / MANIFEST).read_text(encoding="utf-8"))
        if manifest["source"]["sha256"] != MODELDATA_SHA256:
            return None
        files = manifest["files"]
        if sorted(files) != sorted(f for _, f, _ in SPLITS.values()):
            return None
        if all(sha256_file(dest / f) == s for f, s in files.items()):
            return dict(files)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def fetch_fine_foods(dest: Path | str) -> dict[str, str]:
    """Write `train.csv`, `test.csv` and the manifest `fine_foods.json` into `dest`; return file -> sha256.

    Skips the download when the manifest and both CSVs are present and their hashes match. Otherwise
    downloads `r-cran-modeldata` (apt-get download + dpkg -x, into a temp dir), checks the pinned
    sha256 of `Rdata.rdx`/`Rdata.rdb`, reads `training_data`/`testing_data` and writes every file
    atomically (manifest last, so a crash leaves no manifest that vouches for missing files).
    Raises AtPatchError on a download, hash or format failure.
    """
    dest = Path(dest)
    found = _present(dest)
    if found is not None:
        return found
    with extracted_deb(PACKAGE, "the Amazon fine-food reviews") as (root, deb_name):
        data = root / RDATA_DIR
        for name, expected in MODELDATA_SHA256.items():
            if not (data / name).is_file():
                raise AtPatchError(f"{deb_name}: expected file {RDATA_DIR / name} inside the package, not found")
            verify_sha256(data / name, expected, deb_name)
        blobs = {file: _frame_csv(read_lazyload(data / "Rdata.rdx", data / "Rdata.rdb", obj), obj, rows, deb_name)
                 for obj, file, rows in SPLITS.values()}
    dest.mkdir(parents=True, exist_ok=True)
    for file, blob in blobs.items():
        write_bytes_atomic(dest / file, blob)
    files = {file: sha256_file(dest / file) for file in blobs}
    write_json_atomic(dest / MANIFEST, {"source": {"package": PACKAGE, "deb": deb_name, "path": str(RDATA_DIR),
                                                   "sha256": MODELDATA_SHA256},
                                        "files": files})
    return files


# ------------------------------------------------------------------------------ load


def load_reviews(dest: Path | str, split: str):
    """DataFrame with columns text (str) and label (int64: great -> 1, other -> 0) of one split.

    `split` is "train" or "test". Raises AtPatchError naming the file when it is missing, is not a
    CSV with columns product, review, score, or holds an empty review or an unknown score.
    """
    import pandas as pd

    if split not in SPLITS:
        raise AtPatchError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    path = Path(dest) / SPLITS[split][1]
    if not path.is_file():
        raise AtPatchError(f"{path}: not found; run atpatch.scenarios.data.fine_foods.fetch_fine_foods({str(dest)!r}) first")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise AtPatchError(f"{path}: not a readable CSV ({type(exc).__name__}: {exc})") from exc
    missing = [c for c in ("review", "score") if c not in df.columns]
    if missing:
        raise AtPatchError(f"{path}: columns {missing} missing (has {list(df.columns)}); expected {list(COLUMNS)}")
    bad = sorted(set(df["score"]) - set(LABELS))
    if bad:
        rows = df.index[~df["score"].isin(list(LABELS))][:5].tolist()
        raise AtPatchError(f"{path}: unknown scores {bad[:5]} (data rows {rows}); expected only {sorted(LABELS)}")
    empty = df.index[df["review"].str.strip() == ""].tolist()
    if empty:
        raise AtPatchError(f"{path}: empty review text in data rows {empty[:5]}")
    return pd.DataFrame({"text": df["review"].astype(object), "label": df["score"].map(LABELS).astype("int64")})


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Fetch the Amazon fine-food reviews (Debian r-cran-modeldata).")
    ap.add_argument("--dest", default="data/raw/fine-foods")
    a = ap.parse_args(argv)
    files = fetch_fine_foods(a.dest)
    print(f"fetch: {len(files)} fine-food review files verified in {a.dest}")


if __name__ == "__main__":
    main()
