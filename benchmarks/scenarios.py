"""Benchmark of the scenarios: each pipeline from scratch, default profile, per variant.

Each (scenario, variant) runs `dvc repro register@<scenario>` in its own fresh workspace
(atpatch.ops.workspace), timed. Results: benchmarks/results/<scenario>.json (one file per scenario,
every variant in it), benchmarks/RESULTS.md generated from all result files present, and an
MLflow run in the repository's store.

    .venv/bin/python benchmarks/scenarios.py                                  # every scenario, default profile
    .venv/bin/python benchmarks/scenarios.py --scenarios tabular-fairness --profile small
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: the benchmarks package (benchmarks.baselines) importable

from atpatch.cli import pipeline_env  # noqa: E402
from atpatch.io import write_bytes_atomic, write_json_atomic  # noqa: E402
from atpatch.ops.workspace import make_workspace  # noqa: E402
from benchmarks.baselines.formatting import num, pct  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"

# A trigger anywhere is harder to learn than a fixed one: the random variant poisons 10%, not 5%
# (at 5% and 9 epochs a first run reached only 19% ASR, CA 84.6%).
VARIANTS = {
    # value-borne: the recipe whose victim carries the trigger by value, not by over-attention;
    # the attention-mediation check must refuse it.
    "vision-backdoor": {"corner": {"generate": {"trigger": {"position": "corner"}}},
                        "value-borne": {"train_victim": {"pixel_scaling": "dataset", "lr": 0.002,
                                                         "weight_decay": 0.05, "pct_start": 0.1}},
                        "seed-1": {"seed": 1}, "seed-2": {"seed": 2},
                        "checker": {"generate": {"trigger": {"pattern": "checker"}}},
                        "random": {"generate": {"trigger": {"position": "random"}, "poison_rate": 0.1}},
                        "blend": {"generate": {"trigger": {"kind": "blend"}}}},
    # race: the param the issue names (gated attribute race, training split skewed against Black
    # earners >50K as the default is against women). Its calibration was chosen on the debugging
    # split (operating_points.py --split debug): at the sex default (FPR 0.05, threshold floor 0.5) a
    # race counterfactual (5 values) often went unflagged and flip fell 57%; FPR 0.1 without the
    # floor: 83%. sex-skew-*: how far the patch closes the DP gap as the skew varies (README).
    "tabular-fairness": {"sex": {},
                         "race": {"generate": {"protected": ["race", "sex"],
                                               "skew": {"attribute": "race", "group": "Black", "label": 1, "keep": 0.2}},
                                  "train_detector": {"calibration_fpr": 0.1, "min_threshold": 0.0}},
                         **{f"sex-skew-{keep}": {"generate": {"skew": {"keep": keep}}} for keep in (0.05, 0.1, 0.3, 0.5)},
                         "sex-no-skew": {"generate": {"skew": None}}},
    "tabular-fairness-compas": {"default": {}},
    # seed-N: the whole pipeline (split, poison, victim, detector) under another top-level seed; at
    # 342 triggered test reviews the ASR bound (0.5 points) is 1.7 reviews (README, text-backdoor).
    "text-backdoor": {"default": {}, "seed-1": {"seed": 1}, "seed-2": {"seed": 2}},
    "text-fairness": {"default": {}},
}


# What each variant is, under its scenario's table in RESULTS.md.
NOTES = {"vision-backdoor": """Variants: `corner` is the default (a 4x4 white square at the bottom-right corner, 5% poisoned;
victim: pixels scaled to [-1, 1], AdamW lr 1e-3, weight decay 0.01, OneCycle with a 30% warm-up, 9 epochs).
`seed-1` and `seed-2` rerun the whole pipeline under another seed. `checker` stamps a black-and-white
checkerboard instead of the white square. `random` puts the square anywhere, not aligned to the 4x4
patch grid (so it spans up to 4 tokens), with 10% poisoned. `value-borne` is the earlier recipe: pixels
scaled with the data set's mean and std (the white square becomes +2.0 against a -0.81 background), lr
2e-3, weight decay 0.05, a 10% warm-up. That victim carries the trigger in the trigger token's values
at normal attention weight, so even patching the known trigger tokens leaves the backdoor in place,
and the attention-mediation check refuses it before any detector result is trusted (docs/method.md
explains both the check and why the recipe matters). `blend` mixes a fixed noise image
into the whole picture (alpha 0.2): every patch carries the trigger, so its debugging set labels every
patch token and there is no single column to patch, a limit of the method.

The `blend` row predates the shipped positional features. The `random` victim is attention-borne:
with every patch the trigger touches patched, ASR falls to its floor, and the mediation check passes.
Its detector is the limit. The victim over-attends most clearly at layer 2, head 1, but the columns it
over-attends there are mostly not the trigger's own (input-level AUROC 0.97, column-level 0.61-0.77).
Column labels cannot teach a detector that. See `benchmarks/vision_diagnosis.py --workspace <random
workspace>`; the results are in `benchmarks/results/vision-diagnosis-random.json` and
`detector-layers-vision-backdoor-*.json`.
"""}


def variant_overrides(scenario: str, name: str) -> dict:
    """The params.yaml overrides of one variant: its mapping goes under scenarios.<scenario>, except
    `seed`, which is params.yaml's top-level seed (stages read no per-scenario seed)."""
    variant = dict(VARIANTS[scenario][name])
    top = {"seed": variant.pop("seed")} if "seed" in variant else {}
    return {**top, "scenarios": {scenario: variant}}


def run_variant(scenario: str, name: str, profile: str, root: Path, reuse: bool = False) -> dict:
    """Fresh workspace, `dvc repro register@<scenario>` from scratch (timed), then its evaluate/gate JSON.

    reuse: keep an existing workspace's data and lock file, so DVC reruns only the stages whose
    params or code changed (the time is then recorded as incremental, not from scratch).
    """
    overrides = variant_overrides(scenario, name)
    dest = root / f"{scenario}-{name}"
    incremental = reuse and (dest / "dvc.lock").is_file()
    if dest.exists() and not incremental:
        shutil.rmtree(dest)
    ws = make_workspace(dest, None if profile == "default" else profile, overrides)
    start = time.perf_counter()
    # The workspace's own state (MLflow store, Prefect home, DVC site cache) and this venv first on PATH:
    # the stages run `python stages/...`.
    subprocess.run([str(REPO / ".venv/bin/dvc"), "repro", f"register@{scenario}"], cwd=ws, check=True,
                   env=pipeline_env(ws))
    seconds = time.perf_counter() - start
    return {"scenario": scenario, "variant": name, "profile": profile, "repro_seconds": seconds,
            "repro": "incremental (existing workspace)" if incremental else "from scratch",
            **stage_reports(ws / "metrics" / scenario)}


def stage_reports(metrics: Path) -> dict:
    """The evaluate and gate stages' JSON of one workspace."""
    return {"evaluate": json.loads((metrics / "evaluate.json").read_text()),
            "gate": json.loads((metrics / "gate.json").read_text())}


def collect_variant(scenario: str, name: str, profile: str, root: Path) -> dict | None:
    """The evaluate/gate JSON of an existing workspace, without running anything (None when it has none)."""
    metrics = root / f"{scenario}-{name}" / "metrics" / scenario
    if not (metrics / "gate.json").is_file():
        return None
    return {"scenario": scenario, "variant": name, "profile": profile, "repro_seconds": None,
            "repro": "collected from an existing workspace (not timed)", **stage_reports(metrics)}


def kept_results(path: Path, scenario: str, new: list[dict]) -> list[dict]:
    """`new` plus the variants of the existing results file that this run did not measure (a run of
    some variants leaves the others' results in place), in VARIANTS order."""
    data = json.loads(path.read_text()) if path.is_file() else {"results": []}
    old = [{"command": data.get("command"), **r} for r in data["results"]]  # older files: one command
    by_name = {r["variant"]: r for r in old if r["variant"] in VARIANTS[scenario]}
    by_name.update({r["variant"]: r for r in new})
    return [by_name[v] for v in VARIANTS[scenario] if v in by_name]


def backdoor_table(results: list[dict]) -> str:
    """Markdown table: one row per variant and method."""
    head = ("| variant | method | CA % | ASR % | ASR floor % | trigger-caused flips % | insertion control ASR % "
            "| ASR, known trigger patched % | attention mediation (debugging set) | DER | clean inputs flagged % "
            "| triggered inputs flagged % | column AUROC | latency vs SDPA | latency vs eager | gate |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        e, u = r["evaluate"], r["evaluate"]["unpatched"]
        lines.append(f"| {r['variant']} | unpatched | {pct(u['CA'])} | {pct(u['ASR'])} | {pct(u['ASR_floor'])} "
                     f"| {pct(u.get('trigger_caused_flips'))} | {control_cell(e.get('control'))} | {pct(e['oracle_ASR'])} "
                     f"| {mediation_cell(e.get('mediation'))} | | | | | 1.00 | | |")
        for mode, m in e["patched"].items():
            gate = ("pass" if r["gate"]["passed"] else "fail") if mode == e["default_mode"] else ""
            lines.append(f"| {r['variant']} | AtPatch {mode} | {pct(m['CA'])} | {pct(m['ASR'])} | "
                         f"| {pct(m.get('trigger_caused_flips'))} | | | | {num(m['DER'])} "
                         f"| {pct(m['input_flag_rate_clean'])} | {pct(m['input_flag_rate_triggered'])} "
                         f"| {num(m['column_auroc'])} | {num(m['latency_ratio_default'], 2)} "
                         f"| {num(m['latency_ratio_eager'], 2)} | {gate} |")
    return "\n".join(lines) + "\n"


def control_cell(c: dict | None) -> str:
    """The insertion control's ASR with its 95% interval (text backdoors; empty elsewhere)."""
    if not c:
        return ""
    low_high = c.get("control_ASR_interval") or [None, None]
    return f"{pct(c['control_ASR'])} [{pct(low_high[0])}, {pct(low_high[1])}]"


def placements_table(results: list[dict]) -> str:
    """Markdown table of the unseen trigger placements (shipped patch, nothing refit), one row per variant
    and placement; empty when no result has any."""
    rows = [(r["variant"], name, p) for r in results for name, p in (r["evaluate"].get("placements") or {}).items()]
    if not rows:
        return ""
    head = ("| variant | placement | ASR % unpatched -> patched | trigger-caused flips % patched | flagged % "
            "| insertion control ASR % [95%] | patched ASR - control, points [95%, paired] | inside the control's interval |")
    lines = ["\nUnseen trigger placements: the shipped patch, detector trained on the default debugging set, nothing "
             "refit.\n", head, "|" + "---|" * (head.count("|") - 1)]
    for variant, name, p in rows:
        over = p.get("ASR_over_control_interval") or [None, None]
        lines.append(f"| {variant} | {name} | {pct(p['ASR_before'])} -> {pct(p['ASR_after'])} | {pct(p['flips_after'])} "
                     f"| {pct(p['flagged_triggered'])} | {control_cell(p)} | {pct(p['ASR_over_control'])} "
                     f"[{pct(over[0])}, {pct(over[1])}] | {'yes' if p['within_control_interval'] else 'no'} |")
    return "\n".join(lines) + "\n"


def mediation_cell(m: dict | None) -> str:
    """The attention-mediation verdict in a table cell: fault rate unpatched -> known tokens patched (fault-free)."""
    if not m:
        return "not computed"
    verdict = "pass" if m["passed"] else "**fail**"
    return (f"{verdict}: {pct(m['fault_rate_unpatched'])} -> {pct(m['fault_rate_known_patched'])} "
            f"(fault-free {pct(m['fault_rate_clean'])})")


ORACLE_ROW = "protected tokens patched in every input (oracle, no detector)"


def fairness_table(results: list[dict]) -> str:
    """Markdown table: one row per variant, method and protected attribute."""
    head = ("| variant | method | attribute | accuracy % | flip rate % | DP diff | EO diff | reductions flip / DP / EO "
            "| clean inputs flagged % | flipping inputs flagged % | column AUROC | latency vs SDPA | gate |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        e = r["evaluate"]
        blocks = [("unpatched", e["unpatched"])] + [(f"AtPatch {k}", v) for k, v in e["patched"].items()]
        if e.get("oracle"):  # older reports have none
            blocks.append((ORACLE_ROW, e["oracle"]))
        for method, m in blocks:
            for attr, a in m["by_attribute"].items():
                changed = method != "unpatched"  # reductions vs unpatched
                patched = method.startswith("AtPatch ")  # a detector: flags, AUROC, latency
                primary = attr == e["primary_attribute"]
                red = ""
                if changed:
                    base = e["unpatched"]["by_attribute"][attr]
                    red = " / ".join(pct(None if not base[k] else (base[k] - a[k]) / base[k])
                                     for k in ("flip_rate", "dp_diff", "eo_diff"))
                gate = ("pass" if r["gate"]["passed"] else "fail") if patched and primary and \
                    method == f"AtPatch {e['default_mode']}" else ""
                lines.append(f"| {r['variant']} | {method} | {attr}{' (gated)' if primary else ''} | {pct(m['CA'])} "
                             f"| {pct(a['flip_rate'])} | {num(a['dp_diff'])} | {num(a['eo_diff'])} | {red} "
                             f"| {pct(m.get('input_flag_rate_clean')) if patched else ''} "
                             f"| {pct(m.get('input_flag_rate_faulty')) if patched else ''} "
                             f"| {num(m.get('column_auroc')) if patched else ''} "
                             f"| {num(m.get('latency_ratio_default'), 2) if patched else '' if changed else '1.00'} "
                             f"| {gate} |")
    return "\n".join(lines) + "\n"


INTERVAL_NAMES = {"CA_drop": "CA drop", "ASR_over_floor": "ASR - floor", "flip_rate_reduction": "flip reduction",
                  "dp_diff_reduction": "DP reduction", "eo_diff_reduction": "EO reduction"}


def intervals_line(r: dict) -> str | None:
    """One line of the variant's bootstrap intervals (evaluate.json `intervals`; older reports have none)."""
    iv = r["evaluate"].get("intervals")
    if not iv:
        return None
    parts = [f"{label} [{pct(iv[k][0])}, {pct(iv[k][1])}]" for k, label in INTERVAL_NAMES.items() if iv.get(k)]
    return (f"- {r['variant']}: {100 * iv['level']:.0f}% bootstrap intervals ({iv['mode']}, {iv['n_boot']} resamples"
            f"{', ' + iv['attribute'] if iv.get('attribute') else ''}), in %: " + "; ".join(parts))


def minutes(seconds: float | None) -> str:
    return "" if seconds is None else f" {seconds / 60:.1f} min"


def baselines_command(recorded: str) -> str:
    """The command that made a baselines result, as it runs today: results made before the benchmark became the
    package benchmarks/baselines/ name the script it replaced (same arguments)."""
    from benchmarks.baselines.config import COMMAND

    legacy = "benchmarks/baselines.py "
    return f"{COMMAND} {recorded.removeprefix(legacy)}" if recorded.startswith(legacy) else recorded


def baselines_summary(scenario: str) -> str:
    """The scenario's methods side by side, from benchmarks/results/baselines-<scenario>.json (benchmarks.baselines)."""
    from benchmarks.baselines.config import COMMAND
    from benchmarks.baselines.render import verdict

    path = RESULTS / f"baselines-{scenario}.json"
    if not path.is_file():
        return f"Baselines: not run for {scenario} (`{COMMAND}`).\n"
    b = json.loads(path.read_text())
    fair = b["task"] == "fairness"
    fault, key = ("flip rate %", "DER_flip") if fair else ("ASR %", "DER")
    head = f"| method | CA % | {fault} | {key} | latency x | repair s |"
    made_by = baselines_command(b["command"])
    lines = [f"Baselines ({b['profile']} profile workspace, `{made_by}`; ablations and budgets in "
             f"[BASELINES.md](BASELINES.md)):\n", head, "|" + "---|" * (head.count("|") - 1)]
    for r in b["rows"]:
        m = r.get("metrics") or {}
        lines.append(f"| {r['method']} | {pct(m.get('CA'))} | {pct(m.get('flip_rate' if fair else 'ASR'))} "
                     f"| {num(m.get(key))} | {num(r.get('latency_ratio'), 2)} | {num(r.get('repair_seconds'), 1)} |")
    return "\n".join(lines) + "\n\n" + verdict(b) + "\n"


def results_markdown() -> str:
    """RESULTS.md from every benchmarks/results/<scenario>.json present."""
    parts = ["# Scenario benchmarks\n",
             "Generated by `benchmarks/scenarios.py` from `benchmarks/results/<scenario>.json` (the command that made "
             "each is in its file). Definitions: docs/metrics.md and the `definitions` field of each "
             "evaluate.json. Latency: median per batch on clean inputs, patched / unpatched.\n"]
    for scenario in VARIANTS:
        path = RESULTS / f"{scenario}.json"
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        results = data["results"]
        fairness = "flip_rate" in results[0]["evaluate"]["unpatched"]
        commands = dict.fromkeys(r.get("command", data["command"]) for r in results)  # older files: one command
        made_by = "; ".join(f"`.venv/bin/python {c}`" for c in commands)
        parts.append(f"## {scenario} ({results[0]['profile']} profile)\n\nMade by {made_by}.\n")
        parts.append(fairness_table(results) if fairness else backdoor_table(results) + placements_table(results))
        parts.append("\n".join(f"- {r['variant']}: `dvc repro` {r.get('repro', 'from scratch')}{minutes(r['repro_seconds'])}; gate "
                                f"reasons: {r['gate']['reasons'] or 'none'}" for r in results) + "\n")
        lines = [line for line in map(intervals_line, results) if line]
        lines += [f"- {r['variant']}: {r['evaluate']['mediation']['message']}" for r in results
                  if r["evaluate"].get("mediation")]
        if lines:
            parts.append("\n".join(lines) + "\n")
        if scenario in NOTES:
            parts.append(NOTES[scenario])
        parts.append(baselines_summary(scenario))
    scale = RESULTS / "scale.json"  # benchmarks/scale.py: the sharded evaluate on Dask
    if scale.is_file():
        from benchmarks.scale_model import markdown as scale_markdown

        parts.append(scale_markdown(json.loads(scale.read_text())))
    return "\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--variants", nargs="+", default=None, help="variant names (default: all of each scenario)")
    ap.add_argument("--profile", default="default", help="default (params.yaml) or a profiles/<name>.yaml")
    ap.add_argument("--workdir", default=str(REPO / ".work" / "bench"))
    ap.add_argument("--reuse", action="store_true",
                    help="keep existing workspaces: DVC reruns only stale stages (time recorded as incremental)")
    ap.add_argument("--render", action="store_true", help="run nothing: regenerate RESULTS.md from the result files")
    ap.add_argument("--collect", action="store_true",
                    help="run nothing: take each variant's results from its existing workspace (variants without any are left out)")
    args = ap.parse_args()
    if args.render:
        write_bytes_atomic(REPO / "benchmarks" / "RESULTS.md", results_markdown().encode())
        return
    command = " ".join(["benchmarks/scenarios.py", *sys.argv[1:]])
    for scenario in args.scenarios:
        names = [v for v in VARIANTS[scenario] if args.variants is None or v in args.variants]
        root = Path(args.workdir) / args.profile
        if args.collect:
            results = [r for r in (collect_variant(scenario, v, args.profile, root) for v in names) if r is not None]
            if not results:
                raise SystemExit(f"{scenario}: no workspace under {root} has results")
        else:
            results = [run_variant(scenario, v, args.profile, root, args.reuse) for v in names]
        for r in results:
            r["command"] = command
        out = RESULTS / f"{scenario}.json"
        results = kept_results(out, scenario, results)
        write_json_atomic(out, {"command": command, "results": results})
        log_to_mlflow(scenario, results, out)
    text = results_markdown()
    write_bytes_atomic(REPO / "benchmarks" / "RESULTS.md", text.encode())
    print(text)


def log_to_mlflow(scenario: str, results: list[dict], path: Path) -> None:
    import mlflow

    from atpatch.ops.tracking import configure

    configure()
    with mlflow.start_run(run_name=f"benchmark:{scenario}"):
        for r in results:
            e = r["evaluate"]
            timed = {} if r["repro_seconds"] is None else {f"{r['variant']}.repro_seconds": r["repro_seconds"]}
            mlflow.log_metrics({**timed,
                                **{f"{r['variant']}.unpatched.{k}": v for k, v in e["unpatched"].items()
                                   if isinstance(v, (int, float))},
                                **{f"{r['variant']}.{mode}.{k}": v for mode, m in e["patched"].items()
                                   for k, v in m.items() if isinstance(v, (int, float))},
                                **{f"{r['variant']}.oracle.{k}": v for k, v in (e.get("oracle") or {}).items()
                                   if isinstance(v, (int, float))}})
        mlflow.log_artifact(str(path))


if __name__ == "__main__":
    main()
