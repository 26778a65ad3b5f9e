"""Evaluation of a backdoor scenario (vision or text): unpatched vs AtPatch on clean and triggered tests.

`evaluate` returns the evaluate.json report: CA, ASR, ASR floor, DER, detection,
exact pass-through, latency, and the ASR with the *known* trigger tokens patched (the patch's
ceiling). Test data come from the scenario's `test_sets(params, model)`: x_clean / x_trig are model
input dicts, y_* labels, target the backdoor's target label, tokens_trig the true trigger tokens
[N, K], show_* what to draw.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from atpatch.eval import plots
from atpatch.eval.evaluation import median_latencies, predict_patched, predict_plain, rows
from atpatch.core.features import TokenLayout, record
from atpatch.io import write_bytes_atomic
from atpatch.eval.metrics import (DEFINITIONS, accuracy, attack_success_rate, der, detection_metrics, input_flag_rate,
                                  pass_through_rate, trigger_caused_flips)
from atpatch.core.patch import redistribute
from atpatch.core.patched import PatchedClassifier, shipped_patch
from atpatch.eval.insertion import INSERTION_DEFINITIONS, control_block, known_trigger_patched, placements_table
from atpatch.eval.uncertainty import backdoor_intervals, resamples

RAW = ("clean_logits", "clean_labels")  # per-input arrays `baseline` returns that the report leaves out
ORACLE_FLIPS = {"oracle_flips": "trigger-caused flips when the known trigger tokens (not the detector's flags) are "
                                "patched as the shipped patch does: what a perfect detector would leave (per unseen "
                                "placement: that placement's trigger tokens)"}


def report_block(base: dict) -> dict:
    """The numbers of `baseline`'s result, without its per-input arrays."""
    return {k: v for k, v in base.items() if k not in RAW}


def shipped_patchers(params: dict, model, det) -> dict:
    """One PatchedClassifier per evaluated mode, configured as register ships it (benign value, layers)."""
    patch = shipped_patch(params)
    return {m: PatchedClassifier(model, det, mode=m, patch_layers=patch["patch_layers"],
                                 benign_value=patch["benign_value"]) for m in params["evaluate"]["modes"]}


def candidates(inputs: dict, k: int, layout) -> np.ndarray:
    """The positions the detector may flag, [N, K] bool (CLS, SEP, PAD never)."""
    n = len(next(iter(inputs.values())))
    return layout.masks(inputs, n, k)[1].numpy()


def mode_metrics(patched, data: dict, base: dict, target: int, batch: int) -> tuple[dict, dict]:
    """Metrics of one patch mode; also returns raw predictions for plots."""
    clean = predict_patched(patched, data["x_clean"], batch, f"{patched.mode} clean")
    trig = predict_patched(patched, data["x_trig"], batch, f"{patched.mode} triggered")
    ca, asr = accuracy(clean.labels, data["y_clean"]), attack_success_rate(trig.labels, data["y_trig"], target)
    flips = trigger_caused_flips(clean.labels[non_target(data)], trig.labels, target)
    layout = patched.layout
    cand_t = candidates(data["x_trig"], trig.scores.shape[1], layout)
    cand_c = candidates(data["x_clean"], clean.scores.shape[1], layout)
    scores = np.concatenate([trig.scores[cand_t], clean.scores[cand_c]])
    labels = np.concatenate([np.asarray(data["tokens_trig"])[cand_t], np.zeros(int(cand_c.sum()))])
    flags = np.concatenate([trig.flagged[cand_t], clean.flagged[cand_c]])
    det = detection_metrics(scores, labels, flags)
    m = {"CA": ca, "ASR": asr, "trigger_caused_flips": flips, "DER": der(asr_before=base["ASR"], asr_after=asr, ca_before=base["CA"], ca_after=ca),
         "input_flag_rate_clean": input_flag_rate(clean.flagged),
         "input_flag_rate_triggered": input_flag_rate(trig.flagged),
         "clean_pass_through_exact": pass_through_rate(clean.logits, base["clean_logits"], clean.flagged), **det}
    return m, {"scores": scores, "labels": labels, "trig": trig, "clean": clean}


def latency(model, patchers: dict, splits: dict, p: dict) -> dict:
    """Median batch latency, round robin: the model as its user runs it (default attention), eager, and each
    patch mode, on each named split of inputs; each mode's ratios to the first two."""
    def eager(**inputs):
        model.set_attn_implementation("eager")
        try:
            return model(**inputs)
        finally:
            model.set_attn_implementation(p["default_attention"])

    out = {}
    for split, x in splits.items():
        t = median_latencies({"default": model, "eager": eager, **patchers}, x, p["latency_batch"],
                             p["latency_repeats"])
        out[f"{split}_default_s"], out[f"{split}_eager_s"] = t["default"], t["eager"]
        for mode in patchers:
            out[f"{split}_{mode}_s"] = t[mode]
            out[f"{split}_{mode}_ratio_default"] = t[mode] / t["default"]
            out[f"{split}_{mode}_ratio_eager"] = t[mode] / t["eager"]
    return out


def non_target(data: dict) -> np.ndarray:
    """The clean test rows whose true label is not the target: the triggered test set holds exactly these
    rows with the trigger, in the same order (each kind's test_sets), so predictions pair up row for row."""
    return np.asarray(data["y_clean"]) != data["target"]


def baseline(model, data: dict, p: dict, target: int) -> dict:
    """The unpatched model as its user runs it (`default_attention`): its clean logits are the reference
    that unflagged inputs must reproduce bit for bit (exact pass-through)."""
    base_clean = predict_plain(model, data["x_clean"], p["batch_size"], "unpatched clean")
    base_trig = predict_plain(model, data["x_trig"], p["batch_size"], "unpatched triggered")
    rows = non_target(data)
    return {"CA": accuracy(base_clean.labels, data["y_clean"]),
            "ASR": attack_success_rate(base_trig.labels, data["y_trig"], target),
            "ASR_floor": float(np.mean(base_clean.labels[rows] == target)),
            "trigger_caused_flips": trigger_caused_flips(base_clean.labels[rows], base_trig.labels, target),
            "clean_logits": base_clean.logits, "clean_labels": base_clean.labels}


def intervals(params: dict, data: dict, base: dict, raw: dict, target: int) -> dict:
    """Bootstrap intervals of the default mode's CA drop and ASR over the floor. The triggered test
    inputs are the non-target clean test inputs with the trigger, in the same order (test_sets)."""
    floor = base["clean_labels"][non_target(data)]
    return {"mode": shipped_patch(params)["mode"],
            **backdoor_intervals(data["y_clean"], base["clean_labels"], raw["clean"].labels, raw["trig"].labels, floor,
                                 target, resamples(params), params.get("seed", 0))}


def evaluate(params: dict, model, det, data: dict) -> tuple[dict, dict]:
    """The evaluate.json report and the raw predictions per mode (for figures)."""
    p, target, mode_shipped = params["evaluate"], data["target"], shipped_patch(params)["mode"]
    base = baseline(model, data, p, target)
    patchers = shipped_patchers(params, model, det)
    report = {"scenario": params["scenario"], "kind": params["kind"], "default_mode": mode_shipped,
              "definitions": {**DEFINITIONS, **ORACLE_FLIPS, **(INSERTION_DEFINITIONS if "x_control" in data else {})},
              "unpatched": report_block(base),
              "patched": {}}
    shipped = patchers[mode_shipped]  # the oracle patches like the shipped patch (benign value, layers)
    oracle = known_trigger_patched(model, shipped, data["x_trig"], data["tokens_trig"], p["batch_size"])
    report["oracle_ASR"] = attack_success_rate(oracle, data["y_trig"], target)
    report["oracle_flips"] = trigger_caused_flips(base["clean_labels"][non_target(data)], oracle, target)
    raw = {}
    for mode, patched in patchers.items():
        report["patched"][mode], raw[mode] = mode_metrics(patched, data, base, target, p["batch_size"])
    if resamples(params):
        report["intervals"] = intervals(params, data, base, raw[mode_shipped], target)
    report.update(insertion_reports(params, model, shipped, data, base, raw[mode_shipped]))
    lat = latency(model, patchers, {"clean": data["x_clean"], "triggered": data["x_trig"]}, p)
    report["latency"] = lat
    for mode in patchers:
        report["patched"][mode]["latency_ratio_default"] = lat[f"clean_{mode}_ratio_default"]
        report["patched"][mode]["latency_ratio_eager"] = lat[f"clean_{mode}_ratio_eager"]
    return report, raw


def insertion_reports(params: dict, model, shipped, data: dict, base: dict, raw: dict) -> dict:
    """Text backdoors (test sets with an insertion control): the control against the shipped patch's
    triggered predictions, and the unseen-placements table (atpatch.eval.insertion). Else nothing."""
    if "x_control" not in data:
        return {}
    p, n_boot, seed = params["evaluate"], resamples(params), params.get("seed", 0)
    clean = base["clean_labels"][non_target(data)]
    return {"control": control_block(model, raw["trig"].labels, clean, data, p["batch_size"], n_boot, seed + 2),
            "placements": placements_table(model, shipped, data, clean, p["batch_size"], n_boot, seed + 3)}


def roc_files(out_dir: Path, scores: np.ndarray, labels: np.ndarray, auroc: float, title: str) -> list[Path]:
    """ROC as PNG and as a thinned CSV (DVC plots)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels, scores)
    plots.roc_curve_plot(out_dir / "roc.png", fpr, tpr, auroc, title)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), 400)).astype(int))
    csv = "fpr,tpr\n" + "".join(f"{a:.6g},{b:.6g}\n" for a, b in zip(fpr[keep], tpr[keep]))
    write_bytes_atomic(out_dir / "roc.csv", csv.encode())
    return [out_dir / "roc.png", out_dir / "roc.csv"]


def attention_figure(path: Path, model, det, inputs: dict, flags: torch.Tensor, show: list, titles: list[str],
                     layer: int = 0) -> None:
    """Attention to each token at `layer` before/after redistributing `flags` [M, K]; images or tokens."""
    rec = record(model, inputs, TokenLayout.from_dict(det.config.layout), layers=[layer], keep_maps=True)
    after = redistribute(rec.maps[layer], flags, det.benign[layer], rec.valid)

    def mass(maps: torch.Tensor) -> np.ndarray:  # column mass over queries, mean over heads
        return maps.sum(2).mean(1).numpy()

    if isinstance(show[0], np.ndarray) and show[0].ndim == 2:  # images: CLS column dropped, patch grid
        k = rec.maps[layer].shape[-1]
        plots.attention_grid(path, np.stack(show), mass(rec.maps[layer])[:, 1:], mass(after)[:, 1:],
                             flags[:, 1:].numpy(), int(np.sqrt(k - 1)), titles)
    else:
        plots.attention_tokens(path, show, mass(rec.maps[layer]), mass(after), flags.numpy(), titles)


def figures(out_dir: Path, model, det, data: dict, report: dict, raw: dict, default_mode: str) -> list[Path]:
    """Before/after bars, ROC (PNG + CSV for DVC), attention maps of two triggered and one clean input."""
    out_dir.mkdir(parents=True, exist_ok=True)
    bars = {"unpatched": {"CA": report["unpatched"]["CA"], "ASR": report["unpatched"]["ASR"]}}
    bars.update({f"AtPatch {m}": {"CA": v["CA"], "ASR": v["ASR"]} for m, v in report["patched"].items()})
    plots.before_after_bars(out_dir / "before_after.png", bars, f"{report['scenario']}: CA and ASR")
    r = raw[default_mode]
    files = roc_files(out_dir, r["scores"], r["labels"], report["patched"][default_mode]["column_auroc"],
                      f"detector ({default_mode})")
    trig, clean = rows(data["x_trig"], 0, 2), rows(data["x_clean"], 0, 1)
    inputs = {k: torch.cat([trig[k], clean[k]]) for k in trig}
    k = r["trig"].flagged.shape[1]
    flags = torch.as_tensor(np.concatenate([r["trig"].flagged[:2], np.zeros((1, k), bool)]))
    show = list(data["show_trig"][:2]) + list(data["show_clean"][:1])
    attention_figure(out_dir / "attention_maps.png", model, det, inputs, flags, show,
                     ["triggered", "triggered", "clean"])
    return [out_dir / "before_after.png", *files, out_dir / "attention_maps.png"]


def mediation(params: dict, kind, model, det) -> dict:
    """The attention-mediation check on the scenario's debugging set (atpatch.eval.mediation), patched like
    the shipped patch (benign value, layers); the attack's target class from the scenario."""
    from atpatch.eval.mediation import backdoor_mediation

    shipped = shipped_patchers(params, model, det)[shipped_patch(params)["mode"]]
    debug = kind.debug_set(params, model)
    return backdoor_mediation(model, debug["inputs"], debug["token_labels"], debug["triggered"], shipped.benign,
                              shipped.patch_layers, target=kind.target_label(params),
                              batch=params["evaluate"]["batch_size"])


def print_table(report: dict) -> None:
    """A readable summary in the terminal."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report['scenario']} (ASR floor {100 * report['unpatched']['ASR_floor']:.2f}%, "
                        f"ASR with the known trigger tokens patched {100 * report['oracle_ASR']:.2f}%)")
    for col in ("method", "CA %", "ASR %", "trig flips %", "DER", "clean flagged %", "trig flagged %", "col AUROC", "latency x"):
        table.add_column(col)
    u = report["unpatched"]
    table.add_row("unpatched", f"{100 * u['CA']:.2f}", f"{100 * u['ASR']:.2f}",
                  f"{100 * u['trigger_caused_flips']:.2f}", "", "", "", "", "1.00")
    for mode, m in report["patched"].items():
        table.add_row(f"AtPatch {mode}", f"{100 * m['CA']:.2f}", f"{100 * m['ASR']:.2f}",
                      f"{100 * m['trigger_caused_flips']:.2f}", f"{m['DER']:.4f}",
                      f"{100 * m['input_flag_rate_clean']:.2f}", f"{100 * m['input_flag_rate_triggered']:.2f}",
                      f"{m['column_auroc']:.5f}", f"{m['latency_ratio_default']:.2f}")
    Console().print(table)
    if report.get("placements"):
        Console().print(placements_rich_table(report))


def placements_rich_table(report: dict):
    """The unseen-placements table: each placement against its insertion control (percent)."""
    from rich.table import Table

    def pct(x) -> str:
        return "" if x is None else f"{100 * x:.2f}"

    table = Table(title=f"{report['scenario']}: unseen trigger placements, shipped patch ({report['default_mode']})")
    for col in ("placement", "ASR before", "ASR after", "flips after", "flips oracle", "flips control", "flagged",
                "control ASR [95% interval]"):
        table.add_column(col)
    for name, r in report["placements"].items():
        low_high = r.get("control_ASR_interval") or [None, None]
        table.add_row(name, pct(r["ASR_before"]), pct(r["ASR_after"]), pct(r["flips_after"]), pct(r.get("oracle_flips")),
                      pct(r.get("control_flips")), pct(r["flagged_triggered"]),
                      f"{pct(r['control_ASR'])} [{pct(low_high[0])}, {pct(low_high[1])}]")
    return table
