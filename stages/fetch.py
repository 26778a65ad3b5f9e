"""Stage `fetch`: download and verify one raw data source into data/raw/<source>.

Usage: python stages/fetch.py --source fashion-mnist (default: every source in params.yaml).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from atpatch.scenarios.data.sources import fetch_source
from atpatch.io import load_params
from atpatch.conventions import raw_dir


def main(sources: list[str], root: str | Path = ".") -> None:
    for name in sources:
        t0 = time.perf_counter()
        dest = Path(root) / raw_dir(name)
        hashes = fetch_source(name, dest)
        print(f"fetch {name}: {len(hashes)} files verified in {dest} ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--source", action="append", help="a name under params.yaml's sources (repeatable)")
    a = ap.parse_args()
    main(a.source or load_params("sources", a.params))
