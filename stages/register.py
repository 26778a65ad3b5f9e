"""Stage `register`: log the patch to the MLflow Model Registry and move aliases.

Every run registers a new version and points the `challenger` alias at it; the `champion` alias
moves to it only when gate.json says the gate passed. Writes metrics/<scenario>/register.json
{"model_name", "version", "challenger", "champion", "promoted", "previous_champion", "gate_reasons"}.
"""

from __future__ import annotations

from atpatch import conventions
from atpatch.core.errors import AtPatchError
from atpatch.core.patched import shipped_patch
from atpatch.io import read_json, report_paths, write_json_atomic
from atpatch.ops.registry import get_alias_version, log_patch, set_alias, tag_version
from atpatch.scenarios import kind_module, stage_params
from atpatch.ops.tracking import stage_run


def settings(params: dict) -> dict:
    """What register needs: the registered model's name and aliases (atpatch.conventions), the shipped
    patch (the scenario's `patch` section) and where register.json goes."""
    return {"model_name": conventions.model_name(params["scenario"]), "challenger_alias": conventions.CHALLENGER_ALIAS,
            "champion_alias": conventions.CHAMPION_ALIAS, "out": params["register"]["out"], **shipped_patch(params)}


def version_metrics_from(report: dict, mode: str) -> dict[str, float]:
    """Flat metrics stored with the version: unpatched.* and patched.* (of `mode`), numbers only."""
    def numbers(d: dict, prefix: str) -> dict[str, float]:
        return {f"{prefix}.{k}": float(v) for k, v in d.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)}

    if mode not in report.get("patched", {}):
        raise AtPatchError(f"evaluate.json: no patched metrics for mode {mode!r} "
                           f"(modes present: {sorted(report.get('patched', {}))})")
    return {**numbers(report.get("unpatched", {}), "unpatched"), **numbers(report["patched"][mode], "patched")}


def main(params: dict) -> dict:
    r, kind = settings(params), kind_module(params)
    p = report_paths(params)
    gate = read_json(p["gate"], "gate")
    report = read_json(p["evaluate"], "evaluate")
    mode = r["mode"]
    if gate.get("mode") not in (None, mode):
        raise AtPatchError(f"{p['gate']}: the gate judged mode {gate['mode']!r} but register ships {mode!r}; "
                           "rerun stage gate")
    config = {"mode": mode, "patch_layers": r["patch_layers"], "benign_value": r["benign_value"], "input": kind.INPUT_KIND}
    example = kind.input_example(params)
    with stage_run("register", params["scenario"], r, params["seed"]):
        previous = get_alias_version(r["model_name"], r["champion_alias"])
        mv = log_patch(params["train_victim"]["out"], params["train_detector"]["out"], config, r["model_name"],
                       example, metrics=version_metrics_from(report, mode))
        set_alias(r["model_name"], r["challenger_alias"], mv.version)
        tag_version(r["model_name"], mv.version, {"gate.passed": str(bool(gate.get("passed"))).lower(),
                                                   "gate.reasons": "; ".join(gate.get("reasons", []))})
        promoted = bool(gate.get("passed"))
        if promoted:
            set_alias(r["model_name"], r["champion_alias"], mv.version)
        result = {"model_name": r["model_name"], "version": str(mv.version), "challenger": str(mv.version),
                  "champion": str(mv.version) if promoted else (str(previous.version) if previous else None),
                  "previous_champion": str(previous.version) if previous else None, "promoted": promoted,
                  "mode": mode, "gate_reasons": list(gate.get("reasons", []))}
        write_json_atomic(r["out"], result)
    print(f"registered {r['model_name']} version {mv.version} ({mode}); "
          f"champion: {result['champion']} ({'promoted' if promoted else 'not promoted: ' + '; '.join(result['gate_reasons'])})")
    return result


if __name__ == "__main__":
    main(stage_params(__doc__))
