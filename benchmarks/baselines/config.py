"""How the benchmark is invoked, where it reads its params and where it writes its results."""

from __future__ import annotations

from pathlib import Path

from atpatch.core.errors import AtPatchError

REPO = Path(__file__).resolve().parents[2]
COMMAND = "python -m benchmarks.baselines"  # from the repository root; recorded with the arguments in each result
CONFIG = REPO / "benchmarks" / "baselines.yaml"
RESULTS = REPO / "benchmarks" / "results"
MARKDOWN = REPO / "benchmarks" / "BASELINES.md"


def load_config(path: Path = CONFIG) -> dict:
    import yaml

    from .ablations import ABLATIONS

    cfg = yaml.safe_load(Path(path).read_text())
    unknown = set(cfg["ablations"]) - set(ABLATIONS)
    if unknown:
        raise AtPatchError(f"{path}: unknown ablations {sorted(unknown)} (known: {list(ABLATIONS)})")
    return cfg
