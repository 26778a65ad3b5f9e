"""Raw data sources by name: the fetch function that puts each into data/raw/<name>, verified.

Each fetcher skips the download when its files are present with the pinned sha256, writes
atomically, and raises AtPatchError with a clear message when it cannot.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from atpatch.core.errors import AtPatchError

FETCHERS = {
    "fashion-mnist": "atpatch.scenarios.data.fetch:fetch_fashion_mnist",
    "fine-foods": "atpatch.scenarios.data.sources:fetch_reviews_and_names",
    "adult": "atpatch.scenarios.data.adult:fetch_adult",
}


def fetch_source(name: str, dest: Path | str) -> dict[str, str]:
    """Fetch source `name` into `dest`; return file name -> sha256."""
    if name not in FETCHERS:
        raise AtPatchError(f"data source {name!r}: unknown (known: {sorted(FETCHERS)})")
    module, func = FETCHERS[name].split(":")
    return getattr(importlib.import_module(module), func)(Path(dest))


def fetch_reviews_and_names(dest: Path | str) -> dict[str, str]:
    """The fine-food reviews, and the first-name lists (npm) under names/: the text scenarios' source."""
    from atpatch.scenarios.data.fine_foods import fetch_fine_foods
    from atpatch.scenarios.data.gendered import fetch_names

    dest = Path(dest)
    return {**fetch_fine_foods(dest), **{f"names/{k}": v for k, v in fetch_names(dest / "names").items()}}
