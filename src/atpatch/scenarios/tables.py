"""Generated splits stored as parquet tables (the tabular and text kinds): one writer, one reader.

A kind's `generate` hands its named splits and a summary to `write_splits`, which writes
`<name>.parquet` for each plus `summary.json` into one atomic directory (a failed run leaves the
previous splits in place). `read_split` reads one back or fails naming the missing file.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from atpatch.core.errors import AtPatchError
from atpatch.io import atomic_dir, write_json_atomic


def write_splits(out: Path | str, splits: dict[str, pd.DataFrame], summary: dict) -> None:
    with atomic_dir(out) as tmp:
        for name, split in splits.items():
            split.to_parquet(tmp / f"{name}.parquet", index=False)
        write_json_atomic(tmp / "summary.json", summary)


def read_split(params: dict, name: str) -> pd.DataFrame:
    """The split `name` of the scenario's generate output."""
    path = Path(params["generate"]["out"]) / f"{name}.parquet"
    if not path.is_file():
        raise AtPatchError(f"{path}: split {name!r} not found; run stage generate first")
    # Read the bytes first: the file is never left open while the stage goes on (DVC may swap it).
    return pd.read_parquet(io.BytesIO(path.read_bytes()))


def debug_frame(params: dict) -> pd.DataFrame:
    """The debugging split's rows (the table kinds' debug_set reads them in this order)."""
    return read_split(params, "debug")


def debug_labels(params: dict) -> np.ndarray:
    """True labels of the debugging split, in debug_set's order."""
    return debug_frame(params)["label"].to_numpy()
