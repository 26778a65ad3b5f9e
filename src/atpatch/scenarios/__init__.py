"""Scenarios: named pipelines (vision-backdoor, text-backdoor, tabular-fairness, text-fairness).

params.yaml holds `seed`, the default `scenario`, the raw data `sources`, and one mapping per
scenario under `scenarios:`. A stage runs for one scenario and sees a *flat* view of its params
(`scenario_params`): `seed`, `scenario`, `kind`, `source`, and the scenario's stage sections, with
every output path filled in by convention (`data/<scenario>/...`, `metrics/<scenario>/...`,
`plots/<scenario>/`), the same paths dvc.yaml declares. Each scenario names a `kind`: the module
that knows its data, its victim and its metrics (`kind_module`).
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from atpatch.conventions import EXTRA_PATHS, FAIRNESS_KINDS, KIND_MODULES, OUT_PATHS, PARAMS_FILE, raw_dir
from atpatch.core.errors import AtPatchError
from atpatch.core.detector import DETECTOR_DEFAULTS
from atpatch.core.patched import PATCH_DEFAULTS
from atpatch.io import deep_merge, load_params
from atpatch.scenarios.schema import check_sections

__all__ = ["EXTRA_PATHS", "FAIRNESS_KINDS", "KIND_MODULES", "OUT_PATHS", "raw_dir"]  # re-exported conventions


# Sections whose unset keys take the library's defaults (params.yaml's `defaults:` merges over them).
LIBRARY_DEFAULTS = {"train_detector": DETECTOR_DEFAULTS, "patch": PATCH_DEFAULTS}


def scenario_params(params: dict, name: str | None = None, path: str | Path = PARAMS_FILE) -> dict:
    """The flat params of scenario `name` (default: params' `scenario`), output paths filled in."""
    name = name or params.get("scenario")
    scenarios = params.get("scenarios")
    if not isinstance(scenarios, dict):
        raise AtPatchError(f"{path}: section 'scenarios' is missing or not a mapping")
    if name not in scenarios:
        raise AtPatchError(f"{path}: scenario {name!r} not found (scenarios: {sorted(scenarios)})")
    section = scenarios[name]
    for key in ("kind", "source"):
        if key not in section:
            raise AtPatchError(f"{path}: field 'scenarios.{name}.{key}' is missing")
    if section["kind"] not in KIND_MODULES:
        raise AtPatchError(f"{path}: field 'scenarios.{name}.kind': expected one of {sorted(KIND_MODULES)}, "
                           f"got {section['kind']!r}")
    flat = {"seed": params.get("seed", 0), "threads": torch_threads(params, path), "scenario": name,
            **deep_merge(LIBRARY_DEFAULTS, deep_merge(params.get("defaults"), section))}
    check_sections(flat, params, str(path))
    for stage, pattern in OUT_PATHS.items():
        flat[stage] = {**(flat.get(stage) or {}), "out": pattern.format(s=name)}
    for (stage, key), pattern in EXTRA_PATHS.items():
        flat[stage][key] = pattern.format(s=name)
    flat["fetch"] = {"dest": raw_dir(section["source"])}
    return flat


def torch_threads(params: dict, path: str | Path = PARAMS_FILE) -> int | None:
    """params.yaml's top-level `threads` (None when absent: torch's default, the machine's core count);
    AtPatchError naming the field when it is not a positive integer."""
    value = params.get("threads")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise AtPatchError(f"{path}: field 'threads': expected a positive integer (torch threads of the stages "
                           f"that run a model), got {value!r}")
    return value


def pin_threads(params: dict) -> int:
    """Set torch's thread count to the flat params' `threads` (when set); return the count in force.

    The count changes the order of float reductions, so a victim trained, or a detector score computed,
    with 1 and with 2 threads differs; stages pin it so a result does not depend on the machine."""
    import torch

    if params.get("threads"):
        torch.set_num_threads(params["threads"])
    return torch.get_num_threads()


def kind_module(params: dict):
    """The module implementing the scenario's kind (imported on demand: text pulls in tokenizers),
    checked against its family's protocol (atpatch.scenarios.kind)."""
    from atpatch.scenarios.kind import BackdoorKind, FairnessKind, missing_members

    kind = importlib.import_module(KIND_MODULES[params["kind"]])
    protocol = FairnessKind if is_fairness(params) else BackdoorKind
    missing = missing_members(kind, protocol)
    if missing:
        raise AtPatchError(f"scenario kind {params['kind']!r} ({kind.__name__}): missing {protocol.__name__} "
                           f"members {missing}")
    return kind


def is_fairness(params: dict) -> bool:
    return params.get("kind") in FAIRNESS_KINDS


CANDIDATES = ("all", "protected")


def candidate_policy(params: dict | None) -> str:
    """`extract.candidates`: "all" (every real token may be flagged) or "protected" (fairness kinds:
    only the gated attribute's tokens, flagged as a group; see TokenLayout)."""
    params = params or {}
    value = (params.get("extract") or {}).get("candidates", "all")
    allowed = CANDIDATES if is_fairness(params) else ("all",)
    if value not in allowed:
        raise AtPatchError(f"scenarios.{params.get('scenario')}.extract.candidates: expected one of "
                           f"{list(allowed)}, got {value!r}")
    return value


def stage_params(doc: str | None, argv: list[str] | None = None) -> dict:
    """Parse a stage's command line (--params, --scenario) and return the scenario's flat params."""
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--params", default=PARAMS_FILE)
    ap.add_argument("--scenario", default=None, help="a name under params.yaml's scenarios (default: `scenario`)")
    a = ap.parse_args(argv)
    return scenario_params(load_params(path=a.params), a.scenario, a.params)
