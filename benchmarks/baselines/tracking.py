"""The MLflow run of one benchmark result: every row's numbers as metrics, the JSON and plot as artifacts."""

from __future__ import annotations

from pathlib import Path


def numbers(prefix: str, d: dict | None) -> dict:
    """The numeric entries of d as metrics named <prefix>.<key> (booleans and None are not metrics)."""
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None:
            out[f"{prefix}.{k}"] = float(v)
    return out


def safe(name: str) -> str:
    """A method or ablation name as an MLflow metric name accepts it."""
    return "".join(c if c.isalnum() or c in "._-/ " else "_" for c in name)


def result_metrics(result: dict) -> dict:
    metrics = {}
    for r in result["rows"]:
        metrics.update(numbers(safe(r["method"]), r.get("metrics")))
        for k in ("repair_seconds", "latency_ratio"):
            if r.get(k) is not None:
                metrics[f"{safe(r['method'])}.{k}"] = float(r[k])
    for r in result["ablations"]:
        metrics.update(numbers(safe(f"ablation.{r['group']}.{r['value']}"), r.get("metrics")))
    metrics.update(numbers("atpatch_setup", result.get("atpatch_setup")))
    return metrics


def log_to_mlflow(result: dict, files: list[Path]) -> str:
    import mlflow

    from atpatch.ops.tracking import configure, environment_tags

    configure()
    with mlflow.start_run(run_name=f"baselines:{result['scenario']}") as run:
        mlflow.set_tags({"benchmark": "baselines", "scenario": result["scenario"], "profile": result["profile"],
                         **environment_tags()})
        mlflow.log_metrics(result_metrics(result))
        for f in files:
            mlflow.log_artifact(str(f))
        return run.info.run_id
