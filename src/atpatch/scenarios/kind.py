"""The typed interface every scenario kind implements (one module per kind, `conventions.KIND_MODULES`).

A kind knows its data, its victim and its inputs; stages, evaluators, serving, the CLI and the
benchmarks only call these members. `kind_module` checks a kind against its protocol when it loads
it, so a missing member is one clear error, not an AttributeError deep in a stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch

from atpatch.core.features import TokenLayout


@runtime_checkable
class ScenarioKind(Protocol):
    INPUT_KIND: str                  # the serving input kind: image | text | tabular
    TEST_SPLITS: dict[str, str]      # short name (`atpatch inspect --split`) -> generated split

    def generate(self, params: dict, root: str | Path = ".") -> dict:
        """Write the generated splits (validated, atomically); return their summary."""

    def train_victim(self, params: dict, log: Callable) -> torch.nn.Module:
        """The trained victim."""

    def layout(self, model=None, params: dict | None = None) -> TokenLayout:
        """Which token positions are real and which may be flagged."""

    def debug_set(self, params: dict, model) -> dict:
        """The debugging split as model inputs, per-token fault labels, faulty and calibration masks."""

    def debug_labels(self, params: dict) -> np.ndarray:
        """True class labels of the debugging split, in debug_set's order."""

    def test_sets(self, params: dict, model=None) -> dict:
        """The evaluation inputs and labels (the evaluator of the kind's family reads them)."""

    def test_frame(self, params: dict, split: str, rows: slice = slice(None)) -> pd.DataFrame:
        """Rows of a test split as the served model's input, plus their `label`."""

    def input_example(self, params: dict, rows: int = 2) -> pd.DataFrame:
        """A few rows of the served model's input (the registered signature)."""


@runtime_checkable
class BackdoorKind(ScenarioKind, Protocol):
    def target_label(self, params: dict) -> int:
        """The attack's target class."""


@runtime_checkable
class FairnessKind(ScenarioKind, Protocol):
    def protected(self, params: dict) -> list[str]:
        """The protected attributes evaluated; the first is gated."""

    def debug_frame(self, params: dict) -> pd.DataFrame:
        """The debugging split's rows, with their protected values."""

    def counterfactual_sets(self, params: dict, model, frame: pd.DataFrame, attribute: str) -> list[dict]:
        """Model inputs of `frame` with `attribute` set to each other value."""


def members(protocol: type) -> set[str]:
    """The attributes and methods a protocol declares (its own and its parents')."""
    kinds = [c for c in protocol.__mro__ if c in (ScenarioKind, BackdoorKind, FairnessKind)]
    return {n for c in kinds for n in [*vars(c).get("__annotations__", {}), *vars(c)] if not n.startswith("_")}


def missing_members(kind, protocol: type) -> list[str]:
    """Members of `protocol` that `kind` (a module) lacks."""
    return sorted(n for n in members(protocol) if not hasattr(kind, n))
