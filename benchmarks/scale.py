"""Scale-out benchmark: stage evaluate's passes over the vision test sets, sharded on 1 and on 2 Dask workers.

The passes are those stage evaluate runs over the test sets (unpatched on clean and triggered images, the
known-trigger oracle, and each patch mode on both), through flows/sharded.py's shard task on a local Dask
cluster of one-thread workers, and once in process without Dask for reference. Every run must give the same
predictions bit for bit. Measured: wall time, inputs per second, speed-up, per shard its compute and its
overhead; then the scale-out model (benchmarks/scale_model.py) fitted on the one-worker run projects 1, 8 and
64 workers. Writes benchmarks/results/scale.json, an MLflow run `benchmark:scale` in the repository's store,
and regenerates benchmarks/RESULTS.md (benchmarks/scenarios.py renders the section). Reads the workspace only.

    .venv/bin/python benchmarks/scale.py --workdir /work/main                      # 10,000 + 9,000 images, ~5 min
    .venv/bin/python benchmarks/scale.py --workdir /work/main --limit 512 --shard-size 256 --results-dir /tmp/scale
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: the benchmarks package importable
sys.path.insert(0, str(REPO / "flows"))  # the shard task of flows/sharded.py (flows/ is not a package)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from prefect import flow  # noqa: E402

from atpatch.conventions import PARAMS_FILE  # noqa: E402
from atpatch.core.patched import shipped_patch  # noqa: E402
from atpatch.eval import rowwise  # noqa: E402
from atpatch.eval.evaluation import predict_oracle, predict_patched, predict_plain, rows  # noqa: E402
from atpatch.eval.shards import shard_size as rows_per_shard  # noqa: E402
from atpatch.io import load_params, write_bytes_atomic, write_json_atomic  # noqa: E402
from atpatch.ops.cluster import task_runner  # noqa: E402
from atpatch.ops.sharding import ShardRunner  # noqa: E402
from atpatch.scenarios import is_fairness, scenario_params  # noqa: E402
from benchmarks import scale_model  # noqa: E402
from pipeline import no_heartbeats  # noqa: E402
from pipeline import one_prefect_api  # noqa: E402
from sharded import shard_task  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
TARGET_SPEEDUP = 1.7  # 2 workers against 1 (issue 17)
EMPTY_REPEATS = 10


def workspace_params(workdir: Path, scenario: str) -> dict:
    """The scenario's flat params in `workdir`. A workspace made before params.yaml's top-level `threads` may
    still set train_victim.threads; nothing is trained here, so that key is dropped rather than refused."""
    raw = load_params(path=workdir / PARAMS_FILE)
    for section in [raw.get("defaults") or {}, *(raw.get("scenarios") or {}).values()]:
        (section.get("train_victim") or {}).pop("threads", None)
    params = scenario_params(raw, scenario, workdir / PARAMS_FILE)
    if is_fairness(params):
        raise ValueError(f"--scenario {scenario}: expected a backdoor scenario (clean and triggered test sets)")
    return params


def load_bench(workdir: Path, scenario: str, limit: int | None) -> dict:
    """Victim (as evaluate loads it), the shipped patch modes and the test sets (first `limit` rows of each)."""
    from atpatch.core.detector import Detector
    from atpatch.eval.backdoor_eval import shipped_patchers
    from atpatch.scenarios import kind_module
    from atpatch.scenarios.models.loading import load_classifier

    params = workspace_params(workdir, scenario)
    p = params["evaluate"]
    model = load_classifier(workdir / params["train_victim"]["out"], attn_implementation=p["default_attention"])
    patchers = shipped_patchers(params, model, Detector.load(workdir / params["train_detector"]["out"]))
    with contextlib.chdir(workdir):
        data = kind_module(params).test_sets(params, model)
    cut = slice(None, limit)
    return {"model": model, "patchers": patchers, "shipped": patchers[shipped_patch(params)["mode"]],
            "batch": p["batch_size"], "clean": rows(data["x_clean"], 0, limit), "triggered": rows(data["x_trig"], 0, limit),
            "trigger_tokens": torch.as_tensor(np.asarray(data["tokens_trig"])[cut]).bool()}


def evaluate_passes(b: dict) -> dict:
    """The passes stage evaluate runs over the test sets (atpatch.eval.backdoor_eval), in its order."""
    model, batch, shipped = b["model"], b["batch"], b["shipped"]
    out = {"unpatched clean": predict_plain(model, b["clean"], batch, "unpatched clean"),
           "unpatched triggered": predict_plain(model, b["triggered"], batch, "unpatched triggered"),
           "oracle triggered": predict_oracle(model, b["triggered"], b["trigger_tokens"], shipped.benign,
                                              shipped.patch_layers, batch)}
    for mode, patched in b["patchers"].items():
        out[f"{mode} clean"] = predict_patched(patched, b["clean"], batch, f"{mode} clean")
        out[f"{mode} triggered"] = predict_patched(patched, b["triggered"], batch, f"{mode} triggered")
    return out


def digest(results: dict) -> str:
    """sha256 of every array of every pass: equal digests, equal results bit for bit."""
    h = hashlib.sha256()
    for name, pred in results.items():
        for field in ("labels", "flagged", "scores", "logits"):
            value = getattr(pred, field)
            h.update(f"{name}.{field}".encode())
            if value is not None:
                h.update(np.ascontiguousarray(value).tobytes())
    return h.hexdigest()


@flow(name="atpatch-scale-benchmark")
def sharded_run(workdir: str, scenario: str, limit: int | None, size: int, threads: int, workers: int) -> dict:
    """The passes on this flow's Dask cluster, after a warm-up (imports and model loads on every worker) and
    EMPTY_REPEATS one-row passes (the round trip of a shard that computes nothing)."""
    b = load_bench(Path(workdir), scenario, limit)
    runner = ShardRunner(shard_task.submit, threads, size, workers)
    with rowwise.sharded(runner):
        predict_patched(b["shipped"], rows(b["clean"], 0, workers * size), b["batch"], "warm-up")
        for _ in range(EMPTY_REPEATS):
            predict_plain(b["model"], rows(b["clean"], 0, 1), b["batch"], "empty")
        empty = [p.seconds for p in runner.passes[-EMPTY_REPEATS:]]
        first = len(runner.passes)
        start = time.perf_counter()
        results = evaluate_passes(b)
        seconds = time.perf_counter() - start
    timed = runner.passes[first:]
    return {"workers": workers, "seconds": seconds, "empty_seconds": empty, "digest": digest(results),
            "passes": [{"label": p.label, "rows": p.rows, "shard_seconds": p.shard_seconds} for p in timed],
            "processes": runner.workers()}


def serial_run(workdir: Path, scenario: str, limit: int | None, threads: int) -> dict:
    """The same passes in this process, no Dask, `threads` torch threads (the reference)."""
    torch.set_num_threads(threads)
    b = load_bench(workdir, scenario, limit)
    start = time.perf_counter()
    results = evaluate_passes(b)
    return {"seconds": time.perf_counter() - start, "digest": digest(results), "passes": list(results),
            "inputs": {"clean": len(b["clean"]["pixel_values"]), "triggered": len(b["triggered"]["pixel_values"])},
            "batch": b["batch"]}


def summarize(command: str, serial: dict, runs: list[dict], size: int, threads: int, workdir: Path) -> dict:
    n = sum(serial["inputs"].values())
    one = next(r for r in runs if r["workers"] == 1)
    model = scale_model.fit(one)
    two = next((r for r in runs if r["workers"] == 2), None)
    shard_seconds = [s for p in one["passes"] for s in p["shard_seconds"]]
    result = {
        "command": command, "workdir": str(workdir), "cpus": os.cpu_count(), "threads": threads, "shard_size": size,
        "batch_size": serial["batch"], "inputs": serial["inputs"], "passes": serial["passes"],
        "identical": all(r["digest"] == serial["digest"] for r in runs), "digest": serial["digest"],
        "serial": {"seconds": serial["seconds"], "inputs_per_s": n / serial["seconds"]},
        "runs": [{"workers": r["workers"], "seconds": r["seconds"], "inputs_per_s": n / r["seconds"],
                  "shards": sum(len(p["shard_seconds"]) for p in r["passes"]),
                  "shard_seconds_median": statistics.median(s for p in r["passes"] for s in p["shard_seconds"]),
                  "processes": r["processes"]} for r in runs],
        "per_shard": {"cost_s": statistics.fmean(shard_seconds), "overhead_s": model["overhead"],
                      "empty_round_trip_s": statistics.median(one["empty_seconds"])},
        "target_speedup": TARGET_SPEEDUP,
        "model": {"description": scale_model.__doc__.strip(), "fit": model,
                  "projection": scale_model.projection(model, n, serial["batch"], size)},
    }
    if two:
        result["speedup_2"] = one["seconds"] / two["seconds"]
        result["target_met"] = result["speedup_2"] >= TARGET_SPEEDUP
        result["model"]["check"] = {"workers": 2, "measured_s": two["seconds"],
                                    "modelled_s": scale_model.modelled_seconds(model["passes"], size, 2, model["overhead"], serial["batch"])}
    return result


def log_to_mlflow(result: dict, path: Path) -> None:
    import mlflow

    from atpatch.ops.tracking import configure

    configure()
    with mlflow.start_run(run_name="benchmark:scale"):
        mlflow.set_tags({"benchmark": "scale", "threads": str(result["threads"]), "cpus": str(result["cpus"])})
        mlflow.log_params({"shard_size": result["shard_size"], "inputs": sum(result["inputs"].values())})
        metrics = {"serial.inputs_per_s": result["serial"]["inputs_per_s"], "identical": float(result["identical"]),
                   **{f"per_shard.{k}": v for k, v in result["per_shard"].items()},
                   **{f"workers_{r['workers']}.inputs_per_s": r["inputs_per_s"] for r in result["runs"]},
                   **{f"model.workers_{p['workers']}.shard_{p['shard_size']}.speedup": p["speedup"]
                      for p in result["model"]["projection"]}}
        if "speedup_2" in result:
            metrics["speedup_2"] = result["speedup_2"]
        mlflow.log_metrics(metrics)
        mlflow.log_artifact(str(path))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default=str(REPO), help="a workspace after `make run` (read only; default: this repository)")
    ap.add_argument("--scenario", default="vision-backdoor")
    ap.add_argument("--limit", type=int, default=None, help="first N images of each test set (default: all)")
    ap.add_argument("--shard-size", type=int, default=None, help="rows per shard (default: atpatch.eval.shards' default)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per shard and in process (default: 1, a core each)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="local cluster sizes to measure (1 needed)")
    ap.add_argument("--results-dir", default=str(RESULTS), help="where scale.json goes; RESULTS.md is regenerated "
                                                                "only for the default")
    ap.add_argument("--no-mlflow", action="store_true")
    a = ap.parse_args(argv)
    workdir = Path(a.workdir).resolve()
    if 1 not in a.workers:
        raise SystemExit("--workers: the model is fitted on one worker; include 1")
    serial = serial_run(workdir, a.scenario, a.limit, a.threads)
    size = rows_per_shard(serial["batch"], a.shard_size)
    print(f"in process: {serial['seconds']:.1f} s for {sum(serial['inputs'].values())} inputs", flush=True)
    os.environ.setdefault("TQDM_DISABLE", "1")
    runs = []
    with no_heartbeats(), one_prefect_api():
        for w in sorted(a.workers):
            runs.append(sharded_run.with_options(task_runner=task_runner(workers=w))(
                str(workdir), a.scenario, a.limit, size, a.threads, w))
            print(f"{w} worker(s): {runs[-1]['seconds']:.1f} s", flush=True)
    command = " ".join(["benchmarks/scale.py", *(sys.argv[1:] if argv is None else argv)])
    result = summarize(command, serial, runs, size, a.threads, workdir)
    out = Path(a.results_dir) / "scale.json"
    old = json.loads(out.read_text()) if out.is_file() else {}
    kept = {scale_model.SWEEP_SECTION: old[scale_model.SWEEP_SECTION]} if scale_model.SWEEP_SECTION in old else {}
    write_json_atomic(out, {**result, **kept})  # benchmarks/sweep_timing.py's section stays
    if not a.no_mlflow:
        log_to_mlflow(result, out)
    text = scale_model.markdown(result)
    if out.parent.resolve() == RESULTS.resolve():
        from benchmarks.scenarios import results_markdown

        write_bytes_atomic(REPO / "benchmarks" / "RESULTS.md", results_markdown().encode())
    print(text)
    return result


if __name__ == "__main__":
    main()
