"""Stage `evaluate`: the unpatched victim vs AtPatch (two-pass and online) on the scenario's test sets.

Backdoor scenarios: CA, ASR, ASR floor, DER, detection, pass-through, latency. Fairness scenarios:
accuracy, counterfactual flip rate, demographic parity and equalized odds differences per
protected attribute, detection, latency. Both: the attention-mediation check on the debugging
split (atpatch.eval.mediation), which the gate reads. Writes metrics/<scenario>/evaluate.json (everything),
metrics/headline/<scenario>.json (the few numbers `dvc metrics show` prints), a ROC CSV and PNG figures
under plots/<scenario>/ (`dvc plots show`); everything also goes to MLflow.
The report is checked (stored suite `metrics`: rates in [0, 1], latencies positive, counts not negative)
before it is written: a failure leaves the previous evaluate.json in place.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import torch

from atpatch.core.detector import Detector
from atpatch.eval.headline import headline
from atpatch.io import write_json_atomic
from atpatch.scenarios.models.loading import load_classifier
from atpatch.scenarios import checks, is_fairness, kind_module, pin_threads, stage_params
from atpatch.ops.tracking import stage_run


def log_report(report: dict, files: list[Path], out: Path) -> None:
    """Every number of the report as an MLflow metric (unpatched.*, <mode>.*, latency), plus the files."""
    def numbers(d: dict, prefix: str) -> dict[str, float]:
        return {f"{prefix}{k}": float(v) for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}

    metrics = {**numbers(report["unpatched"], "unpatched."), **numbers(report, ""), **numbers(report["latency"], "")}
    for mode, m in report["patched"].items():
        metrics.update(numbers(m, f"{mode}."))
    if report.get("oracle"):  # fairness: the patch's ceiling (backdoor: oracle_ASR, at top level)
        metrics.update(numbers(report["oracle"], "oracle."))
    for name, bounds in (report.get("intervals") or {}).items():  # bootstrap intervals: [low, high]
        if isinstance(bounds, list):
            metrics[f"intervals.{name}.low"], metrics[f"intervals.{name}.high"] = bounds
    mlflow.log_metrics(metrics)
    for f in files + [out]:
        mlflow.log_artifact(str(f))


def main(params: dict) -> dict:
    p, seed = params["evaluate"], params["seed"]
    pin_threads(params)
    torch.manual_seed(seed)
    kind = kind_module(params)
    model = load_classifier(params["train_victim"]["out"], attn_implementation=p["default_attention"])
    data = kind.test_sets(params, model)
    det = Detector.load(params["train_detector"]["out"])
    if is_fairness(params):
        from atpatch.eval import fairness_eval as evaluator
    else:
        from atpatch.eval import backdoor_eval as evaluator
    with stage_run("evaluate", params["scenario"], p, seed):
        report, raw = evaluator.evaluate(params, model, det, data)
        report["mediation"] = evaluator.mediation(params, kind, model, det)
        files = evaluator.figures(Path(p["plots"]), model, det, data, report, raw, report["default_mode"])
        checks.metrics(p["out"], report, checks.docs_dir(params, "evaluate"))
        write_json_atomic(p["out"], report)
        write_json_atomic(p["headline"], headline(report, is_fairness(params)))
        log_report(report, files, Path(p["out"]))
    evaluator.print_table(report)
    print(report["mediation"]["message"])
    return report


if __name__ == "__main__":
    main(stage_params(__doc__))
