"""Stage `generate`: the scenario's training, test and debugging splits.

Writes `data/<scenario>/generated/` (one `datasets.Dataset` per split, save_to_disk, plus
summary.json). Every split is validated (Great Expectations) and written into one temp dir that
replaces the output only when everything passed: a failure leaves the previous output untouched.
"""

from __future__ import annotations

from pathlib import Path

from atpatch.scenarios import kind_module, stage_params


def main(params: dict, root: str | Path = ".") -> dict:
    """Generate the splits of one scenario (flat params, see atpatch.scenarios) under `root`."""
    return kind_module(params).generate(params, root)


if __name__ == "__main__":
    main(stage_params(__doc__))
