"""Stage `fetch`: download and verify Fashion-MNIST into `fetch.dest` (default data/raw/fashion-mnist)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from atpatch.data.fetch import fetch_fashion_mnist
from atpatch.io import load_params


def main(params_path: str | Path = "params.yaml", root: str | Path = ".", params: dict | None = None) -> dict[str, str]:
    """Fetch into `root / fetch.dest`; `params` (the whole params mapping) overrides the file."""
    cfg = (params if params is not None else load_params(path=Path(root) / params_path))
    section = cfg.get("fetch")
    if section is None:
        raise SystemExit(f"{params_path}: section 'fetch' is missing")
    dest = Path(root) / section.get("dest", "data/raw/fashion-mnist")
    t0 = time.perf_counter()
    hashes = fetch_fashion_mnist(dest)
    print(f"fetch: {len(hashes)} files verified in {dest} ({time.perf_counter() - t0:.1f} s)")
    return hashes


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--root", default=".")
    a = ap.parse_args()
    main(a.params, a.root)
