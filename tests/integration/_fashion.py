"""Shared helper: the real Fashion-MNIST files, fetched once into the repo's data/raw cache."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RAW = REPO / "data" / "raw" / "fashion-mnist"


def fashion_dir() -> Path:
    """Fetch (quick when already there: sha256 check only) and return the raw folder."""
    from atpatch.scenarios.data.fetch import fetch_fashion_mnist

    fetch_fashion_mnist(RAW)
    return RAW
