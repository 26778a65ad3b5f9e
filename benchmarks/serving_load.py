"""Load benchmark of the served patch: N concurrent clients on loopback for a bounded time, patched vs unpatched.

    .venv/bin/python benchmarks/serving_load.py                       # 4 clients, 20 s per variant
    .venv/bin/python benchmarks/serving_load.py --clients 8 --seconds 30 --rows 16

The model: the project's registered `atpatch-vision-backdoor` (champion, else challenger) when the
project's MLflow store has it, else the tiny patch of `tiny_patch` (a random 2-layer ViT with a
planted over-attention). Both variants are logged into a temporary MLflow store and served the same
way (`mlflow models serve --env-manager local`, one worker): "patched" is the patch as registered;
"unpatched" is the same model version logged with patch.json `"enabled": false`, which serves the
victim as its user runs it (default SDPA attention, no detector, no flags).

Requests: `--rows` images each (half clean, half with a 4x4 checker trigger on a random patch), drawn
at random from a fixed pool. Every client sends its next request when the previous one is answered;
after `--seconds` the clients finish their in-flight request and stop. Reported per variant:
requests sent and answered (HTTP 200), errors, throughput (requests/s and images/s), latency p50 /
p99 / max (ms), the share of images flagged. Writes benchmarks/results/serving-load.json and logs
the numbers to an MLflow run `serving-load` in the project's store.
"""

from __future__ import annotations

import argparse
import sys
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "serving-load.json"
PROJECT_MODEL = "atpatch-vision-backdoor"


def project_model(tmp: Path) -> dict | None:
    """Victim, detector and patch config of the project's registered vision model, or None."""
    from atpatch.ops.registry import download_patch, get_alias_version

    if not (REPO / "mlflow.db").is_file():
        return None
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{REPO / 'mlflow.db'}"
    try:
        for alias in ("champion", "challenger"):
            mv = get_alias_version(PROJECT_MODEL, alias)
            if mv is not None:
                parts = download_patch(f"models:/{PROJECT_MODEL}@{alias}", tmp / "project-model")
                return {**parts, "source": f"models:/{PROJECT_MODEL}@{alias} (version {mv.version})"}
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]
    return None


def register_variants(tmp: Path, max_batch: int) -> dict:
    """Log the model twice into a temp store: patched and unpatched ("enabled": false)."""
    from atpatch.ops.registry import log_patch, set_alias
    sys.path.insert(0, str(REPO / "tests"))  # the tiny patch is a test fixture (tests/tiny_patch.py)
    from tiny_patch import image_frame, tiny_images, tiny_patch

    model = project_model(tmp)
    if model is None:
        parts = tiny_patch(tmp / "tiny", steps=200)
        model = {**parts, "source": "tiny_patch (random 2-layer ViT, hidden 16, planted over-attention)"}
    store = tmp / "store"
    store.mkdir()
    os.environ.update({"ATPATCH_ROOT": str(store), "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}"})
    example = image_frame(tiny_images(2, 0)[0])
    config = {k: v for k, v in model["config"].items() if k not in ("max_batch", "enabled")}
    for variant, enabled in (("patched", True), ("unpatched", False)):
        mv = log_patch(model["victim"], model["detector"], {**config, "max_batch": max_batch, "enabled": enabled},
                       f"load-{variant}", example)
        set_alias(f"load-{variant}", "champion", mv.version)
    return {"source": model["source"], "mode": config["mode"], "env": {
        "ATPATCH_ROOT": str(store), "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}"}}


def request_pool(rows: int, n: int = 64, seed: int = 0) -> list[bytes]:
    """n request bodies of `rows` images each, half of them with a trigger."""
    from tiny_patch import tiny_images

    rng = np.random.default_rng(seed)
    clean, _ = tiny_images(n * rows, seed + 1)
    trig, _ = tiny_images(n * rows, seed + 2, triggered=True)
    bodies = []
    for i in range(n):
        pick = [(trig if rng.random() < 0.5 else clean)[i * rows + j] for j in range(rows)]
        data = [[img.reshape(-1).astype(int).tolist()] for img in pick]
        bodies.append(json.dumps({"dataframe_split": {"columns": ["image"], "data": data}}).encode())
    return bodies


def load(url: str, bodies: list[bytes], clients: int, seconds: float, rows: int) -> dict:
    """`clients` threads, each with its own keep-alive session, sending until `seconds` have passed."""
    import requests

    stop = threading.Event()
    lock = threading.Lock()
    latencies, statuses, errors, flagged = [], {}, [], [0, 0]

    def client(k: int) -> None:
        rng = np.random.default_rng(100 + k)
        with requests.Session() as session:
            while not stop.is_set():
                body = bodies[int(rng.integers(len(bodies)))]
                t0 = time.perf_counter()
                try:
                    r = session.post(f"{url}/invocations", data=body, timeout=120,
                                     headers={"Content-Type": "application/json"})
                    dt = time.perf_counter() - t0
                    preds = r.json()["predictions"] if r.status_code == 200 else []
                    with lock:
                        latencies.append(dt)
                        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                        flagged[0] += sum(bool(p["flagged"]) for p in preds)
                        flagged[1] += len(preds)
                except Exception as exc:  # noqa: BLE001 - counted, reported
                    with lock:
                        errors.append(repr(exc)[:200])

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(180)
    wall = time.perf_counter() - start
    lat = np.array(latencies) * 1000
    sent = len(latencies) + len(errors)
    answered = statuses.get(200, 0)
    return {"clients": clients, "seconds": round(wall, 2), "rows_per_request": rows, "requests_sent": sent,
            "requests_answered_200": answered, "errors": len(errors), "error_samples": errors[:3],
            "statuses": {str(k): v for k, v in sorted(statuses.items())}, "every_request_answered": answered == sent,
            "throughput_rps": round(answered / wall, 2), "throughput_images_per_s": round(answered * rows / wall, 1),
            "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 2), "p99": round(float(np.percentile(lat, 99)), 2),
                           "max": round(float(lat.max()), 2), "mean": round(float(lat.mean()), 2)} if len(lat) else {},
            "flagged_share": round(flagged[0] / flagged[1], 4) if flagged[1] else None}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rows", type=int, default=8, help="images per request")
    ap.add_argument("--max-batch", type=int, default=1024)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--no-mlflow", action="store_true", help="do not log the results to the project's MLflow store")
    a = ap.parse_args(argv)
    saved_env = {k: os.environ.get(k) for k in ("ATPATCH_ROOT", "MLFLOW_TRACKING_URI")}
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    with tempfile.TemporaryDirectory(prefix="atpatch-load-") as tmp:
        tmp = Path(tmp)
        setup = register_variants(tmp, a.max_batch)
        from atpatch.ops.serving.server import start_server, stop_server

        bodies = request_pool(a.rows)
        results = {}
        for variant in ("unpatched", "patched"):
            proc, url = start_server(f"models:/load-{variant}@champion", setup["env"], tmp / f"{variant}.log")
            try:
                load(url, bodies[:4], 1, 2.0, a.rows)  # warm-up
                results[variant] = load(url, bodies, a.clients, a.seconds, a.rows)
            finally:
                stop_server(proc)
            print(f"{variant}: {json.dumps(results[variant])}", flush=True)
    for key, value in saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    p, u = results["patched"], results["unpatched"]
    report = {"model": setup["source"], "patch_mode": setup["mode"],
              "unpatched_means": "same model logged with patch.json enabled=false: the victim with its default "
                                 "attention, no detector",
              "server": "mlflow models serve --env-manager local, 1 worker, loopback",
              "machine": {"cpus": os.cpu_count(), "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
                          "python": platform.python_version()},
              "results": results,
              "patched_vs_unpatched": {
                  "throughput_ratio": round(p["throughput_rps"] / u["throughput_rps"], 3) if u["throughput_rps"] else None,
                  "p50_ratio": round(p["latency_ms"]["p50"] / u["latency_ms"]["p50"], 3) if u["latency_ms"] else None,
                  "p99_ratio": round(p["latency_ms"]["p99"] / u["latency_ms"]["p99"], 3) if u["latency_ms"] else None}}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {a.out}")
    if not a.no_mlflow:
        import mlflow

        from atpatch.eval.report import flatten
        from atpatch.ops.tracking import configure

        os.environ["ATPATCH_ROOT"] = str(REPO)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        configure()
        with mlflow.start_run(run_name="serving-load"):
            mlflow.set_tags({"benchmark": "serving-load", "model": setup["source"]})
            mlflow.log_params({"clients": a.clients, "seconds": a.seconds, "rows": a.rows})
            metrics = {f"{v}.{k}": float(x) for v in results for k, x in flatten(
                {kk: vv for kk, vv in results[v].items() if isinstance(vv, (int, float, dict)) and kk != "statuses"}
            ).items() if isinstance(x, (int, float)) and not isinstance(x, bool)}
            mlflow.log_metrics({k.replace("latency_ms.", "latency_ms_"): v for k, v in metrics.items()})
            mlflow.log_artifact(str(a.out))
    return report


if __name__ == "__main__":
    main()
