"""Baselines and ablations of AtPatch side by side, measured in one run on one workspace (issue 5).

Loads a pipeline workspace's victim, AtPatch detector (data/<scenario>/detector) and test sets, builds
every baseline's repair data from the scenario's debugging set (the inputs AtPatch's detector learned
from), applies each baseline (`atpatch.baselines`), runs AtPatch as shipped (two-pass, online) and its
ablations (detector refits reuse data/<scenario>/features.safetensors), and scores everything with the
same metric code (`atpatch.eval.backdoor_eval`, `atpatch.eval.fairness_eval`, `atpatch.eval.metrics`).

Writes benchmarks/results/baselines-<scenario>.json, the scenario's section of benchmarks/BASELINES.md
(replaced in place between markers), benchmarks/results/tradeoff-<scenario>.png and an MLflow run.
Params: benchmarks/baselines.yaml. Run from the repository root:

    .venv/bin/python -m benchmarks.baselines --workspace .work/small --scenario vision-backdoor
    .venv/bin/python -m benchmarks.baselines --workspace .work/tab --scenario tabular-fairness \\
        --methods none care threshold_optimizer --ablations benign_value calibration_fpr
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from atpatch.io import write_json_atomic

from .ablations import ABLATIONS
from .config import COMMAND, CONFIG, MARKDOWN, RESULTS, load_config
from .plot import tradeoff_plot
from .render import markdown, render, replace_section
from .runner import run
from .tracking import log_to_mlflow


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=COMMAND, description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", help="a pipeline workspace with the scenario trained up to train_detector")
    ap.add_argument("--scenario", required=True)
    ap.add_argument("--config", default=str(CONFIG))
    ap.add_argument("--methods", nargs="+", default=None, help="baselines to run (default: all in the config)")
    ap.add_argument("--ablations", nargs="*", default=None,
                    help=f"ablation groups (default: all in the config; none: no ablations): {list(ABLATIONS)}")
    ap.add_argument("--results-dir", default=str(RESULTS))
    ap.add_argument("--markdown", default=str(MARKDOWN))
    ap.add_argument("--no-mlflow", action="store_true")
    ap.add_argument("--render", action="store_true",
                    help="measure nothing: redraw the markdown section and plot from the scenario's results JSON")
    return ap


def main(argv: list[str] | None = None) -> dict:
    ap = parser()
    args = ap.parse_args(argv)
    if args.render:
        return render(Path(args.results_dir), args.scenario, Path(args.markdown))
    if not args.workspace:
        ap.error("--workspace is required (unless --render)")
    cfg = load_config(Path(args.config))
    methods = args.methods or list(cfg["methods"])
    groups = list(cfg["ablations"]) if args.ablations is None else [g for g in args.ablations if g != "none"]
    bad = [g for g in groups if g not in ABLATIONS]
    if bad:
        ap.error(f"unknown ablations {bad}; known: {list(ABLATIONS)}")
    command = f"{COMMAND} " + " ".join(argv if argv is not None else sys.argv[1:])
    result = run(Path(args.workspace), args.scenario, cfg, methods, groups)
    result["command"] = command
    save(result, args)
    return result


def save(result: dict, args: argparse.Namespace) -> None:
    """The results JSON, the trade-off plot, the markdown section (also printed) and the MLflow run."""
    out_dir = Path(args.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, png = out_dir / f"baselines-{args.scenario}.json", out_dir / f"tradeoff-{args.scenario}.png"
    write_json_atomic(json_path, result)
    tradeoff_plot(result, png)
    text = markdown(result, result["command"])
    replace_section(Path(args.markdown), args.scenario, text)
    if not args.no_mlflow:  # after the JSON: the run id is in the returned result, not in the file
        result["mlflow_run_id"] = log_to_mlflow(result, [json_path, png])
    print(text)


if __name__ == "__main__":
    main()
