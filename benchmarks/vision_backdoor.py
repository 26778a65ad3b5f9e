"""Benchmark of the vision-backdoor scenario: the pipeline from scratch, per trigger variant.

Each variant (fixed-corner trigger; trigger at a random position per image) runs the whole DVC
pipeline in its own workspace (atpatch.workspace), timed. Results: benchmarks/results/vision-backdoor.json,
the table in benchmarks/RESULTS.md, and an MLflow run in the repository's store.

    .venv/bin/python benchmarks/vision_backdoor.py                    # default profile, both variants
    .venv/bin/python benchmarks/vision_backdoor.py --profile small --variants corner
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from atpatch.io import write_bytes_atomic, write_json_atomic  # noqa: E402
from atpatch.workspace import make_workspace  # noqa: E402

# A trigger anywhere is harder to learn than a fixed one: the random variant poisons 10%, not 5%
# (at 5% and 9 epochs a first run reached only 19% ASR, CA 84.6%).
VARIANTS = {"corner": {"scenarios": {"vision-backdoor": {"generate": {"trigger": {"position": "corner"}}}}},
            "random": {"scenarios": {"vision-backdoor": {"generate": {"trigger": {"position": "random"},
                                                                      "poison_rate": 0.1}}}}}


def run_variant(name: str, profile: str | None, root: Path) -> dict:
    """Fresh workspace, `dvc repro` from scratch (timed), then its evaluate/gate JSON."""
    ws = make_workspace(root / name, None if profile == "default" else profile, VARIANTS[name])
    start = time.perf_counter()
    subprocess.run([str(REPO / ".venv/bin/dvc"), "repro", "register@vision-backdoor"], cwd=ws, check=True)
    seconds = time.perf_counter() - start
    metrics = ws / "metrics" / "vision-backdoor"
    return {"variant": name, "profile": profile, "repro_seconds": seconds,
            "evaluate": json.loads((metrics / "evaluate.json").read_text()),
            "gate": json.loads((metrics / "gate.json").read_text())}


def table(results: list[dict]) -> str:
    """Markdown table: one row per variant and method."""
    head = ("| variant | method | CA % | ASR % | ASR floor % | ASR, known trigger patched % | DER | clean inputs flagged % "
            "| triggered inputs flagged % | column AUROC | latency vs SDPA | latency vs eager | gate |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        e = r["evaluate"]
        u = e["unpatched"]
        pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
        lines.append(f"| {r['variant']} | unpatched | {pct(u['CA'])} | {pct(u['ASR'])} | {pct(u['ASR_floor'])} "
                     f"| {pct(e['oracle_ASR'])} | | | | | 1.00 | | |")
        for mode, m in e["patched"].items():
            gate = ("pass" if r["gate"]["passed"] else "fail") if mode == e["default_mode"] else ""
            lines.append(f"| {r['variant']} | AtPatch {mode} | {pct(m['CA'])} | {pct(m['ASR'])} | | | {m['DER']:.4f} "
                         f"| {pct(m['input_flag_rate_clean'])} | {pct(m['input_flag_rate_triggered'])} "
                         f"| {m['column_auroc']:.4f} | {m['latency_ratio_default']:.2f} | {m['latency_ratio_eager']:.2f} | {gate} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default", help="default (params.yaml) or a profiles/<name>.yaml")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--workdir", default=str(REPO / ".work" / "bench"))
    args = ap.parse_args()
    results = [run_variant(v, args.profile, Path(args.workdir) / args.profile) for v in args.variants]
    out = REPO / "benchmarks" / "results" / "vision-backdoor.json"
    write_json_atomic(out, {"command": " ".join(["benchmarks/vision_backdoor.py", *sys.argv[1:]]), "results": results})
    text = (f"# Vision backdoor benchmark ({args.profile} profile)\n\nMade by `.venv/bin/python "
            f"{' '.join(['benchmarks/vision_backdoor.py', *sys.argv[1:]])}`; definitions in DESIGN.md section 7 "
            "and in each evaluate.json. Latency: median per batch of 256 on clean inputs.\n\n" + table(results)
            + "\n" + "\n".join(f"- {r['variant']}: `dvc repro` from scratch {r['repro_seconds'] / 60:.1f} min; gate "
                               f"reasons: {r['gate']['reasons'] or 'none'}" for r in results) + "\n")
    write_bytes_atomic(REPO / "benchmarks" / "RESULTS.md", text.encode())
    log_to_mlflow(results, out)
    print(text)


def log_to_mlflow(results: list[dict], path: Path) -> None:
    import mlflow

    from atpatch.tracking import configure

    configure()
    with mlflow.start_run(run_name="benchmark:vision-backdoor"):
        for r in results:
            e = r["evaluate"]
            mlflow.log_metrics({f"{r['variant']}.repro_seconds": r["repro_seconds"],
                                f"{r['variant']}.unpatched.ASR": e["unpatched"]["ASR"],
                                f"{r['variant']}.unpatched.CA": e["unpatched"]["CA"],
                                **{f"{r['variant']}.{mode}.{k}": v for mode, m in e["patched"].items()
                                   for k, v in m.items() if isinstance(v, (int, float))}})
        mlflow.log_artifact(str(path))
        mlflow.log_artifact(str(REPO / "benchmarks" / "RESULTS.md"))


if __name__ == "__main__":
    main()
