import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def adult_raw() -> Path:
    """data/raw/adult (Adult and COMPAS; what scripts/setup.sh fills), fetched when missing, else a
    sha256 check only."""
    from atpatch.scenarios.data.adult import fetch_adult

    raw = REPO / "data" / "raw" / "adult"
    fetch_adult(raw)
    return raw
