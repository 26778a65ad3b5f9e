"""Stage `gate`: the regression gate between evaluation and registration.

Judges the shipped patch mode (the scenario's `patch.mode`) on
evaluate.json: the attention-mediation check (is the fault carried by over-attention at all?),
clean-accuracy drop, ASR over its floor or over the insertion control, trigger-caused flips (where set), clean-input flag rate, column AUROC, and no regression against the registered model's current `champion` (its stored metrics). Writes
metrics/<scenario>/gate.json {"passed", "checks", "reasons", "champion_version", ...}. The stage
exits 0 when the gate fails: the decision is data, and stage `register` reads it.
"""

from __future__ import annotations

import math
from pathlib import Path

import mlflow

from atpatch import conventions
from atpatch.core.errors import AtPatchError
from atpatch.core.patched import shipped_patch
from atpatch.io import read_json, report_paths, write_json_atomic
from atpatch.eval.mediation import MAX_GAP, judged
from atpatch.scenarios import is_fairness, stage_params
from atpatch.scenarios.schema import BackdoorGate, FairnessGate
from atpatch.ops.tracking import stage_run

# The thresholds each family needs from params.yaml (`defaults.gate` merged with the scenario's `gate`):
# the required fields of the params schema; only the mediation limit has a library default
# (atpatch.eval.mediation.MAX_GAP).
GATE_KEYS = {family: tuple(k for k, f in model.model_fields.items() if f.is_required())
             for family, model in (("backdoor", BackdoorGate), ("fairness", FairnessGate))}
# Per family: the metric that must not rise against the champion (CA must not fall in both).
HARM_METRIC = {"backdoor": "patched.ASR", "fairness": "patched.flip_rate"}




def field(report: dict, path: Path, *keys: str) -> float:
    """report[k1][k2]... as a float (null, an undefined metric, reads as NaN, which fails any check);
    AtPatchError naming the file and field when missing."""
    node = report
    for i, key in enumerate(keys):
        if not isinstance(node, dict) or key not in node:
            where = ".".join(keys[: i + 1])
            present = sorted(node) if isinstance(node, dict) else type(node).__name__
            raise AtPatchError(f"{path}: field {where!r} is missing (present: {present})")
        node = node[key]
    if node is None:
        return float("nan")
    try:
        return float(node)
    except (TypeError, ValueError) as exc:
        raise AtPatchError(f"{path}: field {'.'.join(keys)!r}: expected a number, got {node!r}") from exc


def shipped_mode(params: dict, report: dict, path: Path) -> str:
    """The mode that register will ship: the scenario's `patch.mode`."""
    mode = shipped_patch(params)["mode"]
    if mode not in (report.get("patched") or {}):
        raise AtPatchError(f"{path}: no patched metrics for mode {mode!r} "
                           f"(modes present: {sorted(report.get('patched') or {})})")
    return mode


def current_metrics(report: dict, path: Path, mode: str, family: str = "backdoor") -> dict[str, float]:
    """The numbers the gate judges, flat: unpatched.CA, unpatched.ASR_floor, patched.CA, ..."""
    if family == "fairness":
        keys = ("CA", "flip_rate", "dp_diff", "eo_diff")
        return {**{f"unpatched.{k}": field(report, path, "unpatched", k) for k in keys},
                **{f"patched.{k}": field(report, path, "patched", mode, k) for k in (*keys, "clean_pass_through_exact")}}
    return {"unpatched.CA": field(report, path, "unpatched", "CA"),
            "unpatched.ASR_floor": field(report, path, "unpatched", "ASR_floor"),
            "patched.CA": field(report, path, "patched", mode, "CA"),
            "patched.ASR": field(report, path, "patched", mode, "ASR"),
            # Optional in the report (a gate that does not judge them does not need them): NaN when absent.
            "patched.trigger_caused_flips": float(report["patched"][mode].get("trigger_caused_flips", "nan")),
            **control_metrics(report),
            "patched.input_flag_rate_clean": field(report, path, "patched", mode, "input_flag_rate_clean"),
            "patched.column_auroc": field(report, path, "patched", mode, "column_auroc"),
            "patched.clean_pass_through_exact": field(report, path, "patched", mode, "clean_pass_through_exact")}


def check(name: str, value: float, limit: float, at_most: bool) -> dict:
    """One check; NaN values fail. at_most: value <= limit, else value >= limit."""
    ok = (value <= limit if at_most else value >= limit) and not math.isnan(value)
    return {"name": name, "value": value, "limit": limit, "passed": bool(ok),
            "comparison": "<=" if at_most else ">="}


def quality_checks(m: dict[str, float], g: dict) -> list[dict]:
    """Absolute checks of the patched model against the unpatched one and the ASR floor; the paired
    trigger-caused flips too where the scenario sets `max_trigger_caused_flips`."""
    optional = {"asr_over_floor": (m["patched.ASR"] - m["unpatched.ASR_floor"], "max_asr_over_floor"),
                "trigger_caused_flips": (m["patched.trigger_caused_flips"], "max_trigger_caused_flips")}
    checks = [check("ca_drop", m["unpatched.CA"] - m["patched.CA"], g["max_ca_drop"], True)]
    checks += [check(name, value, g[key], True) for name, (value, key) in optional.items() if g.get(key) is not None]
    if g.get("max_asr_over_control") is not None:
        checks.append(control_check(m, g["max_asr_over_control"]))
    return checks + [check("clean_flag_rate", m["patched.input_flag_rate_clean"], g["max_clean_flag_rate"], True),
                     check("column_auroc", m["patched.column_auroc"], g["min_column_auroc"], False),
                     pass_through_check(m, g)]


def control_metrics(report: dict) -> dict[str, float]:
    """Patched ASR minus the insertion control's (evaluate.json `control`, text backdoors) and the low end
    of its paired 95% interval (the point itself without an interval); NaN without a control."""
    control = report.get("control") or {}
    point = float(control.get("ASR_over_control", "nan"))
    low = (control.get("ASR_over_control_interval") or [point])[0]
    return {"patched.ASR_over_control": point, "patched.ASR_over_control_low": float(low)}


def control_check(m: dict[str, float], limit: float) -> dict:
    """Against the insertion control, paired: passes when the 95% interval of (patched ASR - control ASR)
    reaches `limit`, i.e. the patched triggered inputs cannot be told from inputs with a neutral word
    inserted at the trigger's positions, within the tolerance. value: the point estimate."""
    point, low = m["patched.ASR_over_control"], m["patched.ASR_over_control_low"]
    c = {**check("asr_over_control", low, limit, True), "value": point, "interval_low": low}
    if not c["passed"]:
        c["message"] = (f"asr_over_control = {point:.4f}, its 95% interval starts at {low:.4f}, expected it to "
                        f"reach <= {limit:.4f} (the insertion control's rate plus the tolerance)")
    return c


def pass_through_check(m: dict[str, float], g: dict) -> dict:
    """Nothing flagged means nothing changed: the share of unflagged inputs answered bit for bit like the
    unpatched model (NaN, every input flagged, fails)."""
    return check("clean_pass_through", m["patched.clean_pass_through_exact"], g["min_clean_pass_through"], False)


def relative_reduction(before: float, after: float) -> float:
    """(before - after) / before; 1.0 when there was nothing to reduce and nothing is left; NaN (a failed
    check, null in gate.json: JSON has no infinity) when the patch created a gap where there was none."""
    if before <= 0:
        return 1.0 if after <= 0 else float("nan")
    return (before - after) / before


def fairness_checks(m: dict[str, float], g: dict) -> list[dict]:
    """Accuracy kept; flip rate, demographic parity and equalized odds gaps reduced (relative)."""
    return [check("ca_drop", m["unpatched.CA"] - m["patched.CA"], g["max_ca_drop"], True),
            check("flip_rate_reduction", relative_reduction(m["unpatched.flip_rate"], m["patched.flip_rate"]),
                  g["min_flip_rate_reduction"], False),
            check("dp_reduction", relative_reduction(m["unpatched.dp_diff"], m["patched.dp_diff"]),
                  g["min_dp_reduction"], False),
            check("eo_reduction", relative_reduction(m["unpatched.eo_diff"], m["patched.eo_diff"]),
                  g["min_eo_reduction"], False),
            pass_through_check(m, g)]


def regression_checks(m: dict[str, float], champion: dict[str, float], version: str, tol: float,
                      harm: str = "patched.ASR") -> list[dict]:
    """No regression vs the champion: the harm metric (ASR, flip rate) not higher, CA not lower, by more than `tol`."""
    missing = [k for k in (harm, "patched.CA") if k not in champion]
    if missing:
        return [{"name": "champion_metrics", "value": None, "limit": None, "passed": False,
                 "comparison": f"champion version {version} has no stored metrics {missing}"}]
    name = harm.split(".")[-1].lower()
    return [check(f"{name}_vs_champion", m[harm] - champion[harm], tol, True),
            check("ca_vs_champion", champion["patched.CA"] - m["patched.CA"], tol, True)]


def mediation_check(report: dict, path: Path, max_gap: float) -> dict:
    """The attention-mediation check (atpatch.eval.mediation): the fault rate with the debugging set's known fault
    tokens patched may exceed the fault-free rate by at most `max_gap`; its message says what failing means."""
    if not isinstance(report.get("mediation"), dict):
        raise AtPatchError(f"{path}: field 'mediation' is missing (rerun stage evaluate: it computes the "
                           "attention-mediation check)")
    m = judged(report["mediation"], max_gap)
    c = check("attention_mediation", field(report, path, "mediation", "gap"), max_gap, True)
    return {**c, "message": m["message"]}


def reason(c: dict) -> str:
    """A human-readable line for a failed check."""
    if c["name"] == "forced":
        return "forced"
    if c.get("message"):
        return c["message"]
    if c["value"] is None and c["limit"] is None:
        return f"{c['name']}: {c['comparison']}"
    if c["value"] is None:
        return f"{c['name']} is undefined (NaN), expected {c['comparison']} {c['limit']:.4f}"
    return f"{c['name']} = {c['value']:.4f}, expected {c['comparison']} {c['limit']:.4f}"


def champion_state(model_name: str, alias: str) -> tuple[str | None, dict[str, float]]:
    """(version, stored metrics) of the alias, or (None, {}) when there is no champion yet."""
    from atpatch.ops.registry import get_alias_version, version_metrics

    mv = get_alias_version(model_name, alias)
    return (None, {}) if mv is None else (str(mv.version), version_metrics(mv))


def _jsonable(checks: list[dict]) -> list[dict]:
    """NaN -> None (JSON has no NaN)."""
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in c.items()} for c in checks]


def gate_settings(params: dict) -> tuple[str, dict]:
    """(family, thresholds): the scenario's gate section; AtPatchError naming any threshold it lacks."""
    family = "fairness" if is_fairness(params) else "backdoor"
    g = {"max_mediation_gap": MAX_GAP, **(params.get("gate") or {})}
    missing = [k for k in GATE_KEYS[family] if k not in g]
    if missing:
        raise AtPatchError(f"params: scenarios.{params['scenario']}.gate: missing {missing} (a {family} gate needs "
                           f"{list(GATE_KEYS[family])}; set them there or under defaults.gate)")
    return family, g


def decide(params: dict) -> dict:
    """The gate decision as a dict (the contents of gate.json). Needs MLflow configured."""
    family, g = gate_settings(params)
    p = report_paths(params)
    report = read_json(p["evaluate"], "evaluate")
    mode = shipped_mode(params, report, p["evaluate"])
    m = current_metrics(report, p["evaluate"], mode, family)
    checks = [mediation_check(report, p["evaluate"], g["max_mediation_gap"])]
    checks += fairness_checks(m, g) if family == "fairness" else quality_checks(m, g)
    model_name = conventions.model_name(params["scenario"])
    version, champion = champion_state(model_name, conventions.CHAMPION_ALIAS)
    if version is not None:
        checks += regression_checks(m, champion, version, g["regression_tolerance"], HARM_METRIC[family])
    if g["force_fail"]:
        checks.append({"name": "forced", "value": True, "limit": False, "passed": False, "comparison": "=="})
    checks = _jsonable(checks)
    return {"passed": all(c["passed"] for c in checks), "checks": checks,
            "reasons": [reason(c) for c in checks if not c["passed"]], "champion_version": version,
            "model_name": model_name, "mode": mode, "metrics": m, "mediation": checks[0]["message"]}


def main(params: dict) -> dict:
    _, g = gate_settings(params)
    with stage_run("gate", params["scenario"], g, params["seed"]):
        result = decide(params)
        write_json_atomic(report_paths(params)["gate"], result)
        mlflow.log_metrics({"gate.passed": float(result["passed"]),
                            **{f"gate.{c['name']}": float(c["value"]) for c in result["checks"]
                               if isinstance(c["value"], (int, float)) and not isinstance(c["value"], bool)}})
        mlflow.log_dict(result, "gate.json")
    verdict = "PASSED" if result["passed"] else "FAILED: " + "; ".join(result["reasons"])
    print(f"gate ({result['mode']}, champion {result['champion_version']}): {verdict}")
    return result


if __name__ == "__main__":
    main(stage_params(__doc__))
