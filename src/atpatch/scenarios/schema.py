"""The params schema (pydantic): every stage section of a scenario, after the `defaults:` merge.

An unknown key is an error naming it and the closest valid key; a bad value is one line naming the
key, the value and what is allowed, raised when a stage reads its params (`scenario_params`), before it
does any work. `generate` is checked by each kind itself (its keys differ per kind).
"""

from __future__ import annotations

import difflib
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from atpatch.conventions import FAIRNESS_KINDS
from atpatch.core.errors import AtPatchError
from atpatch.core.features import KINDS
from atpatch.core.patched import BENIGN_VALUES, MODES

FeatureKind = Literal[KINDS]
Mode = Literal[MODES]


def fraction(**default):
    """A share, 0..1 inclusive."""
    return Field(ge=0.0, le=1.0, **default)


def open_fraction(**default):
    """Strictly between 0 and 1."""
    return Field(gt=0.0, lt=1.0, **default)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")
    out: Optional[str] = None               # filled in by convention (atpatch.conventions)


class TrainVictim(Section):
    architecture: dict = {}
    pixel_scaling: Optional[Literal["symmetric", "dataset"]] = None
    epochs: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    lr: float = Field(gt=0.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    pct_start: Optional[float] = open_fraction(default=None)
    schedule: Literal["onecycle", "constant"] = "onecycle"
    class_weight: Optional[Literal["balanced"]] = None


class Extract(Section):
    batch_size: int = Field(gt=0)
    kinds: list[FeatureKind] = Field(min_length=1)
    candidates: Literal["all", "protected"] = "all"


class Network(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hidden: int = Field(gt=0)
    embed: int = Field(gt=0)
    proj: int = Field(gt=0)
    temperature: float = Field(gt=0.0)
    contrastive_weight: float = Field(ge=0.0)
    steps: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    lr: float = Field(gt=0.0)
    min_std: float = Field(gt=0.0)
    positional: bool


class TrainDetector(Section):
    metrics: Optional[str] = None
    layers: Optional[list[int]] = None
    kinds: list[FeatureKind] = Field(min_length=1)
    network: Network
    calibration_fpr: float = open_fraction()
    min_threshold: float = Field(ge=0.0, lt=1.0)
    recall_holdout: float = Field(ge=0.0, lt=1.0)
    calibration_recall: Optional[float] = Field(default=None, gt=0.0, le=1.0)


class Evaluate(Section):
    plots: Optional[str] = None
    modes: list[Mode] = Field(min_length=1)
    default_attention: Literal["sdpa", "eager"]
    batch_size: int = Field(gt=0)
    latency_batch: int = Field(gt=0)
    latency_repeats: int = Field(gt=0)
    bootstrap: int = Field(ge=0)


class Gate(Section):
    max_ca_drop: float = fraction()
    min_clean_pass_through: float = fraction()
    regression_tolerance: float = fraction()
    max_mediation_gap: Optional[float] = fraction(default=None)
    force_fail: bool


class BackdoorGate(Gate):
    # The backdoor criterion: patched ASR over the ASR floor, or (text, where inserting any word is noise
    # of its own) over the insertion control; at least one.
    max_asr_over_floor: Optional[float] = fraction(default=None)
    max_asr_over_control: Optional[float] = fraction(default=None)
    max_trigger_caused_flips: Optional[float] = fraction(default=None)

    @model_validator(mode="after")
    def _has_a_backdoor_criterion(self):
        if self.max_asr_over_floor is None and self.max_asr_over_control is None:
            raise ValueError("needs max_asr_over_floor or max_asr_over_control (the backdoor criterion)")
        return self
    max_clean_flag_rate: float = fraction()
    min_column_auroc: float = fraction()


class FairnessGate(Gate):
    min_flip_rate_reduction: float = fraction()
    min_dp_reduction: float = fraction()
    min_eo_reduction: float = fraction()


class Patch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Mode
    benign_value: Literal[BENIGN_VALUES]
    patch_layers: Optional[list[int]] = None


def sections(fairness: bool) -> dict[str, type[BaseModel]]:
    return {"train_victim": TrainVictim, "extract": Extract, "train_detector": TrainDetector,
            "evaluate": Evaluate, "gate": FairnessGate if fairness else BackdoorGate, "patch": Patch}


def _where(loc: tuple, section: str, name: str, params: dict) -> str:
    """`defaults.<section>...` when the key came from the defaults block, else `scenarios.<name>.<section>...`."""
    def lookup(node, keys):
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        return node

    in_defaults = lookup(params, ("defaults", section, *loc)) is not None
    in_scenario = lookup(params, ("scenarios", name, section, *loc)) is not None
    base = f"defaults.{section}" if in_defaults and not in_scenario else f"scenarios.{name}.{section}"
    return ".".join([base, *map(str, loc)])


def _message(err: dict, model: type[BaseModel]) -> str:
    """One readable clause for one pydantic error."""
    if err["type"] == "extra_forbidden":
        known = list(model.model_fields)
        for key in err["loc"][:-1]:  # a nested model (train_detector.network)
            sub = model.model_fields[key].annotation
            known = list(getattr(sub, "model_fields", {}))
        close = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(sorted(known))})"
        return f"unknown key{hint}"
    if err["type"] == "missing":
        return "missing"
    if not err["loc"]:  # a rule across keys (a model validator): its own words
        return err["msg"].removeprefix("Value error, ")
    return f"{err['msg'][0].lower()}{err['msg'][1:]}, got {err['input']!r}"


def check_sections(flat: dict, params: dict, path: str) -> None:
    """Validate the merged stage sections of one scenario; AtPatchError (one line, the first problem)."""
    name = flat["scenario"]
    for section, model in sections(flat.get("kind") in FAIRNESS_KINDS).items():
        try:
            model.model_validate(flat.get(section) or {})
        except ValidationError as exc:
            err = exc.errors()[0]
            raise AtPatchError(f"{path}: {_where(err['loc'], section, name, params)}: {_message(err, model)}") from None
