"""Sweep timing: one grid run serially, then as the sweep flow on a local Dask cluster; wall times and ratio.

The default grid is 2 x 2, the cheapest scenarios (tabular-fairness and tabular-fairness-compas, their default
variant) under seeds 0 and 1 on the small profile. Both runs are the benchmark as it is used
(benchmarks/scenarios.py's serial path, then flows/sweep.py with --workers), each in its own folder
under --workdir (their results go there, not to benchmarks/results/<scenario>.json). The times, their
ratio (target: parallel <= 60% of serial) and whether every cell's seeded numbers agree go into the
`sweep` section of benchmarks/results/scale.json (the file's other sections are kept) and an MLflow
run. Measure on an otherwise idle machine.

    .venv/bin/python benchmarks/sweep_timing.py                       # the 2 x 2 grid on 2 workers
    .venv/bin/python benchmarks/sweep_timing.py --scenarios tabular-fairness --seeds 0 --scale /tmp/scale.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "flows")]

from atpatch.io import write_json_atomic  # noqa: E402
from atpatch.ops.sweep import CELL_THREADS, seeded_part  # noqa: E402
from benchmarks.scale_model import SWEEP_SECTION  # noqa: E402
from benchmarks.scenarios import RESULTS, VARIANTS, grid_cells, label, run_serial  # noqa: E402

TARGET_RATIO = 0.6  # parallel wall time / serial wall time, on 2 workers
SECTION = SWEEP_SECTION  # this benchmark's key in scale.json (the sharded evaluate writes the others)


def timed(fn, *args) -> tuple[list[dict], float]:
    start = time.perf_counter()
    rows = fn(*args)
    return rows, time.perf_counter() - start


def merge_section(path: Path, section: dict) -> None:
    """scale.json with its `sweep` key replaced and every other key kept, written atomically."""
    data = json.loads(path.read_text()) if path.is_file() else {}
    write_json_atomic(path, {**data, SECTION: section})


@contextlib.contextmanager
def store_in(workdir: Path):
    """MLflow (atpatch.ops.tracking) pointed at a store in `workdir` for a while: the two runs' per-scenario
    results are this benchmark's material, not results to keep beside the real ones."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "ATPATCH_ROOT")}
    os.environ.update(MLFLOW_TRACKING_URI=f"sqlite:///{workdir / 'mlflow.db'}", ATPATCH_ROOT=str(workdir))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def measure(args: argparse.Namespace, command: str) -> dict:
    """Both runs of the grid, each cell from scratch, in folders of their own; the `sweep` section."""
    from sweep import run_sweep

    cells, workdir = grid_cells(args), Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)  # each cell's workspace is made afresh (run_cell)
    with store_in(workdir):
        serial, serial_s = timed(run_serial, cells, args.profile, workdir / "serial", args.serial_threads, False, command,
                                 workdir / "serial")
        parallel, parallel_s = timed(run_sweep, cells, args.profile, workdir / "parallel", args.threads, False,
                                     command, workdir / "parallel", None, args.workers)
    by_cell = {(r["scenario"], label(r)): r for r in parallel}
    same_threads = {r["threads"] for r in serial} == {r["threads"] for r in parallel}
    return {"command": command, "profile": args.profile, "workers": args.workers, "threads": args.threads,
            "serial_threads": sorted({r["threads"] for r in serial}),
            "cells": [{"scenario": r["scenario"], "cell": label(r), "serial_seconds": r["repro_seconds"],
                       "parallel_seconds": by_cell[(r["scenario"], label(r))]["repro_seconds"],
                       # Comparable only at equal thread counts (tests/e2e/test_sweep_cluster.py checks that case).
                       "same_seeded_results": seeded_part(r) == seeded_part(by_cell[(r["scenario"], label(r))])
                       if same_threads else None}
                      for r in serial],
            "serial_seconds": serial_s, "parallel_seconds": parallel_s, "ratio": parallel_s / serial_s,
            "target_ratio": TARGET_RATIO, "met": parallel_s / serial_s <= TARGET_RATIO}


def log_to_mlflow(section: dict, path: Path) -> None:
    import mlflow

    from atpatch.ops.tracking import configure

    configure()
    with mlflow.start_run(run_name="benchmark:sweep-scale"):
        mlflow.log_params({"profile": section["profile"], "workers": section["workers"], "threads": section["threads"],
                           "cells": " ".join(f"{c['scenario']}/{c['cell']}" for c in section["cells"])})
        mlflow.log_metrics({k: section[k] for k in ("serial_seconds", "parallel_seconds", "ratio")})
        mlflow.log_artifact(str(path))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", nargs="+", default=["tabular-fairness", "tabular-fairness-compas"])
    ap.add_argument("--variants", nargs="+", default=None, help="default: each scenario's first (its default)")
    ap.add_argument("--seeds", nargs="+", default=["0", "1"])
    ap.add_argument("--profile", default="small")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=CELL_THREADS, help="torch threads of each cell on a worker")
    # The serial baseline uses the machine as a user would: params.yaml's `threads` (all of a 2-core machine).
    ap.add_argument("--serial-threads", type=int, default=None,
                    help="torch threads of each serial cell (default: params.yaml's `threads`)")
    ap.add_argument("--workdir", default=str(REPO / ".work" / "sweep-timing"), help="both runs' workspaces and results")
    ap.add_argument("--scale", default=str(RESULTS / "scale.json"), help="the file whose `sweep` section is written")
    args = ap.parse_args()
    if args.variants is None:
        args.variants = [next(iter(VARIANTS[s])) for s in args.scenarios if s in VARIANTS]
    section = measure(args, " ".join(["benchmarks/sweep_timing.py", *sys.argv[1:]]))
    merge_section(Path(args.scale), section)
    log_to_mlflow(section, Path(args.scale))
    print(f"serial {section['serial_seconds']:.0f} s, {args.workers} workers {section['parallel_seconds']:.0f} s: "
          f"ratio {section['ratio']:.2f} (target <= {TARGET_RATIO}: {'met' if section['met'] else 'missed'}); "
          f"same seeded results: {[c['same_seeded_results'] for c in section['cells']]}; {args.scale}")


if __name__ == "__main__":
    from pipeline import one_line_errors

    one_line_errors(main)
