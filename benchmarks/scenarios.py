"""Benchmark of the scenarios: each pipeline from scratch, default profile, per variant (and seed).

Each cell (scenario, variant, seed) runs `dvc repro register@<scenario>` in its own fresh workspace
(atpatch.ops.sweep.run_cell), timed. Serially by default; on a Dask cluster with --workers N (a local
one) or --address tcp://HOST:8786 (an existing scheduler), through the sweep flow (flows/sweep.py).
Results: benchmarks/results/<scenario>.json (one file per scenario, every variant in it),
benchmarks/RESULTS.md generated from all result files present, and an MLflow run per scenario in the
repository's store (or MLFLOW_TRACKING_URI's).

    .venv/bin/python benchmarks/scenarios.py                                  # every scenario, default profile
    .venv/bin/python benchmarks/scenarios.py --scenarios tabular-fairness --profile small
    .venv/bin/python benchmarks/scenarios.py --scenarios text-fairness --seeds 0 1 2 --workers 2
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: the benchmarks package (benchmarks.baselines) importable

from atpatch.conventions import DEFAULT_PROFILE  # noqa: E402
from atpatch.io import write_bytes_atomic, write_json_atomic  # noqa: E402
from atpatch.ops.sweep import (CELL_THREADS, Cell, cell_label, cells_root, expand_grid, run_cell,  # noqa: E402
                               stage_reports)
from benchmarks.baselines.formatting import num, pct  # noqa: E402

OUT = REPO / "benchmarks"  # holds results/<scenario>.json and RESULTS.md
RESULTS = OUT / "results"

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


def collect_cell(cell: Cell, profile: str, root: Path) -> dict | None:
    """A cell's result from its existing workspace, without running anything (None when it has none)."""
    try:
        reports = stage_reports(root / cell.name, cell.scenario)
    except FileNotFoundError:
        return None
    return {"scenario": cell.scenario, "variant": cell.variant, "seed": cell.seed, "profile": profile,
            "repro_seconds": None, "repro": "collected from an existing workspace (not timed)", **reports}


def row_key(r: dict) -> tuple:
    """A result row's cell: its variant and seed (rows of one seed only carry none)."""
    return r["variant"], r.get("seed")


def label(r: dict) -> str:
    """A result row's name in tables and MLflow keys: `variant`, or `variant-seedN`."""
    return cell_label(r["variant"], r.get("seed"))


def kept_results(path: Path, scenario: str, new: list[dict]) -> list[dict]:
    """`new` plus the cells of the existing results file that this run did not measure (a run of
    some variants or seeds leaves the others' results in place), in VARIANTS order, then by seed."""
    data = json.loads(path.read_text()) if path.is_file() else {"results": []}
    old = [{"command": data.get("command"), **r} for r in data["results"]]  # older files: one command
    by_key = {row_key(r): r for r in old if r["variant"] in VARIANTS[scenario]}
    by_key.update({row_key(r): r for r in new})
    order = list(VARIANTS[scenario])
    return sorted(by_key.values(), key=lambda r: (order.index(r["variant"]), -1 if r.get("seed") is None else r["seed"]))


def backdoor_table(results: list[dict]) -> str:
    """Markdown table: one row per variant and method."""
    head = ("| variant | method | CA % | ASR % | ASR floor % | trigger-caused flips % | insertion control ASR % "
            "| ASR, known trigger patched % | attention mediation (debugging set) | DER | clean inputs flagged % "
            "| triggered inputs flagged % | column AUROC | latency vs SDPA | latency vs eager | gate |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        e, u = r["evaluate"], r["evaluate"]["unpatched"]
        lines.append(f"| {label(r)} | unpatched | {pct(u['CA'])} | {pct(u['ASR'])} | {pct(u['ASR_floor'])} "
                     f"| {pct(u.get('trigger_caused_flips'))} | {control_cell(e.get('control'))} | {pct(e['oracle_ASR'])} "
                     f"| {mediation_cell(e.get('mediation'))} | | | | | 1.00 | | |")
        for mode, m in e["patched"].items():
            gate = ("pass" if r["gate"]["passed"] else "fail") if mode == e["default_mode"] else ""
            lines.append(f"| {label(r)} | AtPatch {mode} | {pct(m['CA'])} | {pct(m['ASR'])} | "
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


SEEN_PLACEMENT = "random (as in the debugging set)"


def placement_rows(r: dict) -> list[tuple[str, dict]]:
    """A result's placements as rows of one shape: the debugging set's own placement first (the main triggered
    test set, built from its evaluate.json blocks), then every unseen placement."""
    e = r["evaluate"]
    if not e.get("placements"):
        return []
    shipped = e["patched"][e["default_mode"]]
    seen = {**e["control"], "ASR_before": e["unpatched"]["ASR"], "ASR_after": shipped["ASR"],
            "flips_after": shipped["trigger_caused_flips"], "oracle_flips": e.get("oracle_flips"),
            "flagged_triggered": shipped["input_flag_rate_triggered"]}
    return [(SEEN_PLACEMENT, seen), *e["placements"].items()]


def placements_table(results: list[dict]) -> str:
    """Markdown table of the trigger placements (shipped patch, nothing refit), one row per variant and
    placement, the debugging set's own first; empty when no result has unseen placements."""
    rows = [(label(r), name, p) for r in results for name, p in placement_rows(r)]
    if not rows:
        return ""
    head = ("| variant | placement | ASR % unpatched -> patched | trigger-caused flips % patched | flips % known trigger "
            "patched (oracle) | flips % insertion control | flagged % | insertion control ASR % [95%] "
            "| patched ASR - control, points [95%, paired] | inside the control's interval |")
    lines = ["\nTrigger placements: the shipped patch, detector trained on the default debugging set, nothing "
             "refit. The oracle patches the known trigger tokens as the shipped patch does (what a perfect detector "
             "would leave); the control's flips are what inserting a neutral word there does by itself.\n",
             head, "|" + "---|" * (head.count("|") - 1)]
    for variant, name, p in rows:
        over = p.get("ASR_over_control_interval") or [None, None]
        lines.append(f"| {variant} | {name} | {pct(p['ASR_before'])} -> {pct(p['ASR_after'])} | {pct(p['flips_after'])} "
                     f"| {pct(p.get('oracle_flips'))} | {pct(p.get('control_flips'))} "
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
                lines.append(f"| {label(r)} | {method} | {attr}{' (gated)' if primary else ''} | {pct(m['CA'])} "
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
    return (f"- {label(r)}: {100 * iv['level']:.0f}% bootstrap intervals ({iv['mode']}, {iv['n_boot']} resamples"
            f"{', ' + iv['attribute'] if iv.get('attribute') else ''}), in %: " + "; ".join(parts))


def minutes(seconds: float | None) -> str:
    return "" if seconds is None else f" {seconds / 60:.1f} min"


def baselines_command(recorded: str) -> str:
    """The command that made a baselines result, as it runs today: results made before the benchmark became the
    package benchmarks/baselines/ name the script it replaced (same arguments)."""
    from benchmarks.baselines.config import COMMAND

    legacy = "benchmarks/baselines.py "
    return f"{COMMAND} {recorded.removeprefix(legacy)}" if recorded.startswith(legacy) else recorded


def baselines_summary(scenario: str, results_dir: Path = RESULTS) -> str:
    """The scenario's methods side by side, from results/baselines-<scenario>.json (benchmarks.baselines)."""
    from benchmarks.baselines.config import COMMAND
    from benchmarks.baselines.render import verdict

    path = results_dir / f"baselines-{scenario}.json"
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


def results_markdown(out: Path = OUT) -> str:
    """RESULTS.md from every <out>/results/<scenario>.json present."""
    parts = ["# Scenario benchmarks\n",
             "Generated by `benchmarks/scenarios.py` from `benchmarks/results/<scenario>.json` (the command that made "
             "each is in its file). Definitions: docs/metrics.md and the `definitions` field of each "
             "evaluate.json. Latency: median per batch on clean inputs, patched / unpatched.\n"]
    for scenario in VARIANTS:
        path = out / "results" / f"{scenario}.json"
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        results = data["results"]
        fairness = "flip_rate" in results[0]["evaluate"]["unpatched"]
        commands = dict.fromkeys(r.get("command", data["command"]) for r in results)  # older files: one command
        made_by = "; ".join(f"`.venv/bin/python {c}`" for c in commands)
        parts.append(f"## {scenario} ({results[0]['profile']} profile)\n\nMade by {made_by}.\n")
        parts.append(fairness_table(results) if fairness else backdoor_table(results) + placements_table(results))
        parts.append("\n".join(f"- {label(r)}: `dvc repro` {r.get('repro', 'from scratch')}{minutes(r['repro_seconds'])}; gate "
                                f"reasons: {r['gate']['reasons'] or 'none'}" for r in results) + "\n")
        lines = [line for line in map(intervals_line, results) if line]
        lines += [f"- {label(r)}: {r['evaluate']['mediation']['message']}" for r in results
                  if r["evaluate"].get("mediation")]
        if lines:
            parts.append("\n".join(lines) + "\n")
        if scenario in NOTES:
            parts.append(NOTES[scenario])
        parts.append(baselines_summary(scenario, out / "results"))
    scale = out / "results" / "scale.json"  # benchmarks/scale.py: the sharded evaluate on Dask
    if scale.is_file():
        from benchmarks.scale_model import SWEEP_SECTION, markdown as scale_markdown, sweep_markdown

        data = json.loads(scale.read_text())
        if "runs" in data:  # benchmarks/scale.py has run
            parts.append(scale_markdown(data))
        if SWEEP_SECTION in data:
            parts.append(sweep_markdown(data[SWEEP_SECTION]))
    return "\n".join(parts)


def publish(rows: list[dict], command: str, out: Path | str = OUT) -> str:
    """Each scenario's rows into <out>/results/<scenario>.json, merged with the cells the file already
    holds and written once, atomically; an MLflow run per scenario; <out>/RESULTS.md regenerated (its
    text returned). The serial run and the sweep flow both end here."""
    out = Path(out)
    for scenario in dict.fromkeys(r["scenario"] for r in rows):
        path = out / "results" / f"{scenario}.json"
        new = [{**r, "command": command} for r in rows if r["scenario"] == scenario]
        kept = kept_results(path, scenario, new)
        write_json_atomic(path, {"command": command, "results": kept})
        log_to_mlflow(scenario, kept, path)
    text = results_markdown(out)
    write_bytes_atomic(out / "RESULTS.md", text.encode())
    return text


def run_serial(cells: Iterable[Cell], profile: str, workdir: Path | str, threads: int | None = None,
               reuse: bool = False, command: str = "", out: Path | str = OUT) -> list[dict]:
    """Each cell in turn in this process; a scenario's results are published once its cells are done
    (a failure later keeps them). The cells' results."""
    cells, root, done = list(cells), cells_root(workdir, profile), []
    for scenario in dict.fromkeys(c.scenario for c in cells):
        rows = []
        for cell in (c for c in cells if c.scenario == scenario):
            print(f"{cell.scenario} {cell.label}: running in {root / cell.name}", flush=True)
            rows.append(run_cell(cell, profile, root, threads, reuse))
        publish(rows, command, out)
        done += rows
    return done


def summary(rows: list[dict], out: Path | str = OUT) -> str:
    """A line per cell (its time and where it ran), then where the results are."""
    lines = [f"{r['scenario']} {label(r)}: {minutes(r['repro_seconds']).strip() or 'collected'}"
             f"{' on ' + (r['ran_on']['worker'] or r['ran_on']['host']) if r.get('ran_on') else ''}" for r in rows]
    return "\n".join([*lines, f"results: {Path(out) / 'results'}/<scenario>.json, {Path(out) / 'RESULTS.md'}"])


def grid_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options that choose and place a grid's cells (this script and flows/sweep.py)."""
    ap.add_argument("--scenarios", nargs="+", default=None, metavar="SCENARIO",
                    help=f"default: all ({', '.join(VARIANTS)})")
    ap.add_argument("--variants", nargs="+", default=None, metavar="VARIANT",
                    help="variant names (default: all of each scenario)")
    ap.add_argument("--seeds", nargs="+", default=None, metavar="SEED",
                    help="params.yaml's top-level seed, one cell each (default: its own; variants that set a "
                         "seed of their own are then left out)")
    ap.add_argument("--profile", default=DEFAULT_PROFILE,
                    help="default (params.yaml), a profiles/<name>.yaml name, or a YAML file")
    ap.add_argument("--workdir", default=str(REPO / ".work" / "bench"), help="cell workspaces: WORKDIR/<profile>/")
    ap.add_argument("--out", default=str(OUT), help="where results/<scenario>.json and RESULTS.md go "
                                                   "(default: benchmarks/)")
    ap.add_argument("--threads", type=int, default=None,
                    help=f"torch threads of each cell (default: params.yaml's `threads`; on Dask: {CELL_THREADS})")
    ap.add_argument("--reuse", action="store_true",
                    help="keep existing workspaces: DVC reruns only stale stages (time recorded as incremental)")
    ap.add_argument("--workers", type=int, default=None, help="run the cells on a local Dask cluster of N workers")
    ap.add_argument("--address", default=None, help="run the cells on the Dask scheduler at tcp://HOST:8786")
    return ap


def grid_cells(args: argparse.Namespace) -> list[Cell]:
    """The cells the options name; ValueError/AtPatchError, one line, for a bad value (before any work)."""
    from atpatch.ops.workspace import profile_workdir

    if args.threads is not None and args.threads < 1:
        raise ValueError(f"threads: expected at least 1, got {args.threads}")
    profile_workdir(args.profile, REPO, create=False)  # the profile exists
    return expand_grid(VARIANTS, args.scenarios, args.variants, args.seeds)


def main() -> None:
    ap = grid_arguments(argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    ap.add_argument("--render", action="store_true", help="run nothing: regenerate RESULTS.md from the result files")
    ap.add_argument("--collect", action="store_true",
                    help="run nothing: take each cell's results from its existing workspace (cells without any are left out)")
    args = ap.parse_args()
    if args.render:
        write_bytes_atomic(Path(args.out) / "RESULTS.md", results_markdown(Path(args.out)).encode())
        return
    cells = grid_cells(args)
    command = " ".join(["benchmarks/scenarios.py", *sys.argv[1:]])
    if args.collect:
        root = cells_root(args.workdir, args.profile)
        rows = [r for r in (collect_cell(c, args.profile, root) for c in cells) if r is not None]
        missing = sorted({c.scenario for c in cells} - {r["scenario"] for r in rows})
        if missing:
            raise SystemExit(f"{', '.join(missing)}: no workspace under {root} has results")
        publish(rows, command, args.out)
    elif args.workers or args.address:
        from sweep import run_sweep

        rows = run_sweep(cells, args.profile, args.workdir, args.threads, args.reuse, command, args.out,
                         args.address, args.workers)
    else:
        rows = run_serial(cells, args.profile, args.workdir, args.threads, args.reuse, command, args.out)
    print(summary(rows, args.out))


def log_to_mlflow(scenario: str, results: list[dict], path: Path) -> None:
    import mlflow

    from atpatch.ops.tracking import configure

    configure()
    with mlflow.start_run(run_name=f"benchmark:{scenario}"):
        for r in results:
            e, key = r["evaluate"], label(r)
            timed = {} if r["repro_seconds"] is None else {f"{key}.repro_seconds": r["repro_seconds"]}
            mlflow.log_metrics({**timed,
                                **{f"{key}.unpatched.{k}": v for k, v in e["unpatched"].items()
                                   if isinstance(v, (int, float))},
                                **{f"{key}.{mode}.{k}": v for mode, m in e["patched"].items()
                                   for k, v in m.items() if isinstance(v, (int, float))},
                                **{f"{key}.oracle.{k}": v for k, v in (e.get("oracle") or {}).items()
                                   if isinstance(v, (int, float))}})
        mlflow.log_artifact(str(path))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "flows"))  # the sweep flow, and its one-line errors
    from pipeline import one_line_errors

    one_line_errors(main)
