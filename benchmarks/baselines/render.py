"""The scenario's section of BASELINES.md: tables of the methods and ablations, budgets and a verdict;
written in place between the scenario's markers, or redrawn from a results JSON (`render`)."""

from __future__ import annotations

import json
from pathlib import Path

from atpatch.core.errors import AtPatchError
from atpatch.io import write_bytes_atomic

from .config import COMMAND
from .formatting import num, pct, secs
from .plot import tradeoff_plot

BACKDOOR_METHODS_HEAD = ("| method | CA % | ASR % | DER | inputs touched: clean / triggered % | column AUROC | blocked token is "
                         "trigger % | latency x | repair s |")
FAIRNESS_ABLATIONS_HEAD = ("| ablation | value | accuracy % | flip rate % | DP diff | EO diff | DER_flip | no flip / flip "
                           "inputs touched % | column AUROC | latency x | note |")
BACKDOOR_ABLATIONS_HEAD = ("| ablation | value | CA % | ASR % | DER | clean / triggered inputs flagged % | column AUROC "
                           "| latency x | note |")
ABLATION_DETAILS = ("fit_inputs", "fit_faulty", "threshold", "layers", "fit_seconds")


def markdown(result: dict, command: str) -> str:
    fair = result["task"] == "fairness"
    lines = [f"## {result['scenario']} ({result['profile']} profile)", "", provenance(result, command), ""]
    lines += methods_table(result, fair)
    lines += fairness_notes(result) if fair else ["", "ASR floor (clean non-target test images the unpatched victim "
                                                      f"sends to the target): {pct(result['ASR_floor'])}%."]
    setup = result.get("atpatch_setup")
    if setup:
        lines += ["", f"AtPatch setup cost (not a repair: the victim is untouched): feature extraction "
                      f"{setup['extract_seconds']:.1f} s + detector fit and calibration {setup['fit_seconds']:.1f} s "
                      f"(refit vs shipped detector: max score difference {setup['refit_max_score_diff_vs_shipped']:.2g})."]
    if result["ablations"]:
        lines += ablations_table(result, fair)
    lines += budget_list(result)
    lines += ["", verdict(result), ""]
    return "\n".join(lines)


def provenance(result: dict, command: str) -> str:
    """How, where and on what the numbers were made, and how much to trust the latencies."""
    lat, victim = result["latency"], result["victim"]
    noisy = " (shared machine: latencies are noisy)" if lat["load_average"] > 0.75 * lat["cpus"] else ""
    return (f"Made by `{command}` (workspace `{result['workspace']}`, seed {result['seed']}, "
            f"{result['seconds'] / 60:.1f} min). Victim: {victim['model_type']}, "
            f"{victim['layers']} layers; {result['test_inputs']} clean test inputs. "
            f"Latency x: the {lat['statistic']} over {lat['repeats']} round-robin repeats "
            f"of one batch of {lat['batch']} clean test inputs, / the unpatched victim with "
            f"{result['default_attention']} attention ({lat['unpatched_default_s'] * 1000:.1f} ms; "
            f"eager {lat['unpatched_eager_s'] * 1000:.1f} ms); load average "
            f"{lat['load_average']:.1f} on {lat['cpus']} CPUs during the run{noisy}.")


def table_head(head: str) -> list[str]:
    return [head, "|" + "---|" * (head.count("|") - 1)]


def table_row(cells: list) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def fault_cells(m: dict, fair: bool) -> list[str]:
    """Accuracy and the fault the method repairs: flip rate and group gaps, or ASR and DER."""
    if fair:
        return [pct(m["CA"]), pct(m["flip_rate"]), num(m["dp_diff"]), num(m["eo_diff"])]
    return [pct(m["CA"]), pct(m["ASR"]), num(m["DER"])]


def methods_table(result: dict, fair: bool) -> list[str]:
    if fair:
        head = (f"| method | accuracy % | flip rate % ({result['primary_attribute']}) | DP diff | EO diff | reduction "
                "flip / DP / EO % | DER_flip | inputs touched: no flip / flip % | column AUROC | latency x | repair s "
                "| sensitive at predict |")
    else:
        head = BACKDOOR_METHODS_HEAD
    return table_head(head) + [method_line(r, fair) for r in result["rows"]]


def method_line(r: dict, fair: bool) -> str:
    m = r.get("metrics")
    if m is None:
        return table_row([r["method"], f"failed: {r.get('error', '')}"])
    touched = ""
    if m.get("input_flag_rate_clean") is not None:
        other = m.get("input_flag_rate_faulty" if fair else "input_flag_rate_triggered")
        touched = f"{pct(m['input_flag_rate_clean'])} / {pct(other)}"
    timing = [num(r.get("latency_ratio"), 2), secs(r.get("repair_seconds"))]
    if fair:
        red = " / ".join(pct(m.get(k)) for k in ("flip_rate_reduction", "dp_diff_reduction", "eo_diff_reduction"))
        return table_row([r["method"], *fault_cells(m, fair), red, num(m.get("DER_flip")), touched,
                          num(m.get("column_auroc")), *timing, "yes" if r.get("needs_sensitive_at_predict") else "no"])
    return table_row([r["method"], *fault_cells(m, fair), touched, num(m.get("column_auroc")),
                      pct(m.get("blocked_is_trigger")), *timing])


def fairness_notes(result: dict) -> list[str]:
    """Which methods need the sensitive feature at predict time, and the other protected attributes' table."""
    lines, primary = [], result["primary_attribute"]
    for r in result["rows"]:
        if r.get("needs_sensitive_at_predict"):
            lines += ["", f"{r['method']} needs the sensitive feature ({primary}) of every input "
                          "at predict time (AtPatch does not) and thresholds by it, so the counterfactual that swaps "
                          "it also swaps the threshold: its flip rate measures exactly that dependence."]
    others = [k for k in result["rows"][0]["metrics"]["by_attribute"] if k != primary]
    for attr in others:
        lines += ["", f"Attribute `{attr}` (same runs):", "", *table_head("| method | flip rate % | DP diff | EO diff |")]
        for r in result["rows"]:
            m = r.get("metrics")
            if m:
                b = m["by_attribute"][attr]
                lines.append(table_row([r["method"], pct(b["flip_rate"]), num(b["dp_diff"]), num(b["eo_diff"])]))
    return lines


def ablations_table(result: dict, fair: bool) -> list[str]:
    lines = ["", f"Ablations (one factor of the shipped {result['default_mode']} configuration changed at a time):", ""]
    lines += table_head(FAIRNESS_ABLATIONS_HEAD if fair else BACKDOOR_ABLATIONS_HEAD)
    return lines + [ablation_line(r, fair) for r in result["ablations"]]


def ablation_line(r: dict, fair: bool) -> str:
    m = r.get("metrics")
    if m is None:
        return table_row([r["group"], r["value"], f"failed: {r.get('error', '')}"])
    flagged = (f"{pct(m.get('input_flag_rate_clean'))} / "
               f"{pct(m.get('input_flag_rate_faulty' if fair else 'input_flag_rate_triggered'))}")
    der_flip = [num(m.get("DER_flip"))] if fair else []
    return table_row([r["group"], r["value"], *fault_cells(m, fair), *der_flip, flagged, num(m.get("column_auroc")),
                      num(r.get("latency_ratio"), 2), ablation_note(r)])


def ablation_note(r: dict) -> str:
    """The row's note, and what the ablation changed (refit size, threshold, layers, fit time) where recorded."""
    details = [f"{k} {r[k]:.4g}" if isinstance(r[k], float) else f"{k} {r[k]}" for k in ABLATION_DETAILS if k in r]
    return "; ".join(x for x in [r.get("note") or "", ", ".join(details)] if x)


def budget_list(result: dict) -> list[str]:
    lines = ["", "Budget given to each method (repair data from the debugging set: " +
             json.dumps(result["repair_data"]) + "):", ""]
    for r in result["rows"]:
        note = f" Result: {r['note']}." if r.get("note") else ""
        lines.append(f"- {r['method']}: {budget_text(r.get('budget') or {})}.{note}")
    return lines


def budget_text(b: dict) -> str:
    uses = "; ".join(f"{k}: {v}" for k, v in (b.get("uses") or {}).items()) or "nothing"
    params = json.dumps(b.get("params") or {}, separators=(", ", ": "))
    text = f"uses {uses}; params {params}"
    t = b.get("tuning")
    if t:
        text += (f"; tuned over {len(t['grid'])} variants {json.dumps(t['grid'], separators=(', ', ': '))} "
                 f"({t['criterion']}; chose variant {t['chosen']}; all variants {t['seconds_all_variants']:.1f} s)")
    return text


def verdict(result: dict) -> str:
    """One plain sentence: does an AtPatch row beat every baseline by DER / DER_flip, and the shipped mode?"""
    key = "DER_flip" if result["task"] == "fairness" else "DER"
    scored = [(r["metrics"][key], r["method"]) for r in result["rows"]
              if r.get("metrics") and r["metrics"].get(key) is not None and not r["method"].startswith("none")]
    ours = [x for x in scored if x[1].startswith("AtPatch")]
    others = [x for x in scored if not x[1].startswith("AtPatch")]
    if not ours or not others:
        return ""
    (best_ours, who_ours), (best_other, who_other) = max(ours), max(others)
    shipped = f"AtPatch {result['default_mode']}"
    mine = next((v for v, name in ours if name == shipped), None)
    tail = f"; the shipped {shipped} reaches {mine:.4f}" if mine is not None and who_ours != shipped else ""
    if best_ours >= best_other - 1e-12:
        return f"Best {key}: {who_ours} ({best_ours:.4f}){tail}; best baseline {who_other} ({best_other:.4f})."
    return (f"Best {key}: {who_other} ({best_other:.4f}); the best AtPatch row, {who_ours}, reaches {best_ours:.4f}{tail}: "
            "AtPatch is **not** the best here.")


def replace_section(path: Path, scenario: str, text: str) -> None:
    """Put `text` between the scenario's markers in `path` (appended if absent; the file created if missing)."""
    start, end = f"<!-- baselines:{scenario}:start -->", f"<!-- baselines:{scenario}:end -->"
    old = path.read_text() if path.is_file() else (
        f"# Baselines and ablations\n\nGenerated by `{COMMAND}` (params: `benchmarks/baselines.yaml`), "
        "one section per scenario; raw numbers in `benchmarks/results/baselines-<scenario>.json`, trade-off plots "
        "`benchmarks/results/tradeoff-<scenario>.png`. Metric definitions: docs/metrics.md and the `definitions` "
        "field of each JSON file.\n")
    block = f"{start}\n{text.rstrip()}\n{end}"
    if start in old and end in old:
        new = old[:old.index(start)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    write_bytes_atomic(path, new.encode())


def render(results_dir: Path, scenario: str, md: Path) -> dict:
    """The markdown section and trade-off plot again from results_dir/baselines-<scenario>.json."""
    path = results_dir / f"baselines-{scenario}.json"
    if not path.is_file():
        raise AtPatchError(f"{path}: not found; run the benchmark for {scenario} first")
    result = json.loads(path.read_text())
    tradeoff_plot(result, results_dir / f"tradeoff-{scenario}.png")
    replace_section(md, scenario, markdown(result, result["command"]))
    return result
