"""AtPatch operating points: calibration FPR x benign value on one trained workspace.

The baselines runner varies one factor at a time; this sweep crosses the two that decide how much
AtPatch changes: how many clean inputs may get a flag (the detector is recalibrated on the
workspace's own calibration part, no refit) and what a flagged column receives (`unified` u/n,
`uniform` 1/n, or `zero`). Every point is scored by the same code as the baselines runner
(`benchmarks.baselines.bench.Bench.eval_patched`, two-pass by default).

Caution when reading it: by default the sweep is measured on the test split, and choosing a default
from it is a selection on test data. `--split debug` (fairness scenarios) scores the debugging split
instead: its rows trained and calibrated the detector, so its flag rates are optimistic, but it
never touches the test split; the README compares the choices both give.

Writes benchmarks/results/operating-points-<scenario>.json, a markdown table on stdout and in the
JSON, and an MLflow run `operating-points:<scenario>` in the repository's store.

    .venv/bin/python benchmarks/operating_points.py --workspace .work/bench/default/tabular-fairness-sex \\
        --scenario tabular-fairness --fpr 0.01 0.05 0.1 0.2 --benign unified zero
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: the benchmarks package (benchmarks.baselines) importable

from benchmarks.baselines.bench import Bench  # noqa: E402
from benchmarks.baselines.config import load_config  # noqa: E402
from benchmarks.baselines.formatting import fmt_short, pct  # noqa: E402
from benchmarks.baselines.variants import patcher, recalibrated  # noqa: E402

from atpatch.core.patched import shipped_patch  # noqa: E402
from atpatch.io import load_params, write_json_atomic  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
FAIRNESS_KEYS = ("CA", "flip_rate", "dp_diff", "eo_diff", "flip_rate_reduction", "dp_diff_reduction",
                 "eo_diff_reduction", "input_flag_rate_clean", "input_flag_rate_faulty")
BACKDOOR_KEYS = ("CA", "ASR", "DER", "input_flag_rate_clean", "input_flag_rate_triggered")


def sweep(bench: Bench, fprs: list[float], benign: list[str], min_threshold: float, mode: str | None) -> list[dict]:
    keys = FAIRNESS_KEYS if bench.fairness else BACKDOOR_KEYS
    points = []
    for fpr in fprs:
        det = recalibrated(bench, fpr, min_threshold)
        for value in benign:
            t0 = time.perf_counter()
            m = bench.eval_patched(patcher(bench, det, mode=mode, benign_value=value))
            point = {"calibration_fpr": fpr, "threshold": det.config.threshold, "benign_value": value,
                     **{k: m.get(k) for k in keys}}
            points.append(point)
            print(f"fpr {fpr:g} (threshold {det.config.threshold:.4f}) {value}: {fmt_short(m, bench.fairness)} "
                  f"({time.perf_counter() - t0:.1f} s)", flush=True)
    return points


def markdown(points: list[dict], fairness: bool, base: dict) -> str:
    if fairness:
        head = ("| calibration FPR | threshold | benign value | accuracy % | flip rate % | DP diff | EO diff "
                "| reductions flip / DP / EO % | flagged: fault-free / flipping rows % |")
        rows = [f"| unpatched | | | {pct(base['CA'])} | {pct(base['flip_rate'])} | {base['dp_diff']:.4f} "
                f"| {base['eo_diff']:.4f} | | |"]
        rows += [f"| {p['calibration_fpr']:g} | {p['threshold']:.4f} | {p['benign_value']} | {pct(p['CA'])} "
                 f"| {pct(p['flip_rate'])} | {p['dp_diff']:.4f} | {p['eo_diff']:.4f} "
                 f"| {pct(p['flip_rate_reduction'])} / {pct(p['dp_diff_reduction'])} / "
                 f"{pct(p['eo_diff_reduction'])} | {pct(p['input_flag_rate_clean'])} / "
                 f"{pct(p['input_flag_rate_faulty'])} |" for p in points]
    else:
        head = ("| calibration FPR | threshold | benign value | CA % | ASR % | DER "
                "| flagged: clean / triggered inputs % |")
        rows = [f"| unpatched | | | {pct(base['CA'])} | {pct(base['ASR'])} | 0.5000 | |"]
        rows += [f"| {p['calibration_fpr']:g} | {p['threshold']:.4f} | {p['benign_value']} | {pct(p['CA'])} "
                 f"| {pct(p['ASR'])} | {p['DER']:.4f} | {pct(p['input_flag_rate_clean'])} / "
                 f"{pct(p['input_flag_rate_triggered'])} |" for p in points]
    return "\n".join([head, "|" + "---|" * (head.count("|") - 1), *rows]) + "\n"


def log_to_mlflow(result: dict, path: Path) -> None:
    import mlflow

    from atpatch.ops.tracking import configure, environment_tags

    configure()
    with mlflow.start_run(run_name=f"operating-points:{result['scenario']}:{result['split']}"):
        mlflow.set_tags({"benchmark": "operating-points", "scenario": result["scenario"], "split": result["split"],
                         **environment_tags()})
        mlflow.log_metrics({f"fpr_{p['calibration_fpr']:g}.{p['benign_value']}.{k}": float(v)
                            for p in result["points"] for k, v in p.items()
                            if isinstance(v, (int, float)) and k not in ("calibration_fpr", "benign_value")})
        mlflow.log_artifact(str(path))


def main(argv: list[str] | None = None) -> dict:
    from atpatch.scenarios import scenario_params

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", required=True, help="a pipeline workspace trained up to train_detector")
    ap.add_argument("--scenario", required=True)
    ap.add_argument("--fpr", nargs="+", type=float, default=[0.01, 0.05, 0.1, 0.2])
    ap.add_argument("--benign", nargs="+", default=["unified", "zero"], choices=["unified", "uniform", "zero"])
    ap.add_argument("--min-threshold", type=float, default=None,
                    help="threshold floor (default: the workspace's train_detector.min_threshold)")
    ap.add_argument("--mode", default=None, help="two-pass or online (default: the workspace's patch.mode)")
    ap.add_argument("--split", default="test", choices=["test", "debug"],
                    help="the split scored (debug: the debugging split, fairness scenarios only)")
    ap.add_argument("--results-dir", default=str(RESULTS))
    ap.add_argument("--no-mlflow", action="store_true")
    a = ap.parse_args(argv)
    workspace = Path(a.workspace).resolve()
    flat = scenario_params(load_params(path=workspace / "params.yaml"), a.scenario, workspace / "params.yaml")
    floor = a.min_threshold if a.min_threshold is not None else float(flat["train_detector"]["min_threshold"])
    torch.manual_seed(int(flat["seed"]))
    with contextlib.chdir(workspace):
        bench = Bench(flat, load_config(), split=a.split)
        base = bench.unpatched_row()
        points = sweep(bench, a.fpr, a.benign, floor, a.mode)
    table = markdown(points, bench.fairness, base)
    result = {"scenario": a.scenario, "split": a.split, "workspace": str(workspace),
              "mode": a.mode or shipped_patch(flat)["mode"],
              "min_threshold": floor, "command": " ".join(["benchmarks/operating_points.py", *(argv or sys.argv[1:])]),
              "unpatched": {k: base.get(k) for k in (FAIRNESS_KEYS if bench.fairness else BACKDOOR_KEYS)},
              "points": points, "table": table}
    out = Path(a.results_dir) / f"operating-points-{a.scenario}{'' if a.split == 'test' else '-' + a.split}.json"
    write_json_atomic(out, result)
    print(table)
    print(f"wrote {out}")
    if not a.no_mlflow:
        log_to_mlflow(result, out)
    return result


if __name__ == "__main__":
    main()
