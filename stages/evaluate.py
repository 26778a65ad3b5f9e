"""Stage `evaluate`: unpatched vs patched (two-pass and online) on clean and triggered test sets.

Writes metrics JSON (CA, ASR, ASR floor, DER, detection, pass-through, latency), a ROC CSV for
DVC plots, and PNG figures; everything also goes to MLflow.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mlflow
import numpy as np
import torch

from atpatch.data.triggers import token_labels
from atpatch.detector import Detector
from atpatch.evaluation import median_latency, predict_oracle, predict_patched, predict_plain
from atpatch.features import record
from atpatch.io import load_params, write_bytes_atomic, write_json_atomic
from atpatch.metrics import DEFINITIONS, accuracy, attack_success_rate, der, detection_metrics, input_flag_rate
from atpatch.models.loading import load_classifier
from atpatch.models.vit import VISION_LAYOUT, to_pixel_values
from atpatch.patch import redistribute
from atpatch.patched import PatchedClassifier
from atpatch.tracking import stage_run
from atpatch import plots


def load_tests(params: dict) -> dict:
    from datasets import load_from_disk

    root, g = params["generate"]["out"], params["generate"]
    clean = load_from_disk(f"{root}/test_clean").with_format("numpy")
    trig = load_from_disk(f"{root}/test_triggered").with_format("numpy")
    labels = token_labels(trig["trigger_x"], trig["trigger_y"], g["trigger"]["size"], g["patch_size"],
                          min_overlap=g["debug"]["min_overlap"])
    return {"x_clean": to_pixel_values(clean["image"]), "y_clean": clean["label"],
            "x_trig": to_pixel_values(trig["image"]), "y_trig": trig["label"], "tokens_trig": labels,
            "images_trig": trig["image"], "images_clean": clean["image"]}


def mode_metrics(patched, data: dict, base: dict, target: int, batch: int) -> tuple[dict, dict]:
    """Metrics of one patch mode; also returns raw predictions for plots."""
    clean = predict_patched(patched, data["x_clean"], batch, f"{patched.mode} clean")
    trig = predict_patched(patched, data["x_trig"], batch, f"{patched.mode} triggered")
    ca, asr = accuracy(clean.labels, data["y_clean"]), attack_success_rate(trig.labels, data["y_trig"], target)
    # Candidate positions: every patch token (the CLS column, position 0, is never scored).
    scores = np.concatenate([trig.scores[:, 1:].ravel(), clean.scores[:, 1:].ravel()])
    labels = np.concatenate([data["tokens_trig"][:, 1:].ravel(), np.zeros(clean.scores[:, 1:].size)])
    flags = np.concatenate([trig.flagged[:, 1:].ravel(), clean.flagged[:, 1:].ravel()])
    det = detection_metrics(scores, labels, flags)
    unflagged = ~clean.flagged.any(-1)
    exact = (clean.logits[unflagged] == base["eager_logits"][unflagged]).all(-1)
    m = {"CA": ca, "ASR": asr, "DER": der(base["ASR"], asr, base["CA"], ca),
         "input_flag_rate_clean": input_flag_rate(clean.flagged),
         "input_flag_rate_triggered": input_flag_rate(trig.flagged),
         "clean_pass_through_exact": float(exact.sum() / len(exact)) if len(exact) else float("nan"), **det}
    return m, {"scores": scores, "labels": labels, "trig": trig}


def latency(model, patchers: dict, data: dict, p: dict) -> dict:
    """Median batch latency: default attention, eager, and each patch mode, on clean and triggered."""
    out = {}
    for split, x in (("clean", data["x_clean"]), ("triggered", data["x_trig"])):
        default = median_latency(lambda b: model(pixel_values=b), x, p["latency_batch"], p["latency_repeats"])
        model.set_attn_implementation("eager")
        eager = median_latency(lambda b: model(pixel_values=b), x, p["latency_batch"], p["latency_repeats"])
        model.set_attn_implementation(p["default_attention"])
        out[f"{split}_default_s"], out[f"{split}_eager_s"] = default, eager
        for mode, patched in patchers.items():
            t = median_latency(lambda b: patched(pixel_values=b), x, p["latency_batch"], p["latency_repeats"])
            out[f"{split}_{mode}_s"] = t
            out[f"{split}_{mode}_ratio_default"], out[f"{split}_{mode}_ratio_eager"] = t / default, t / eager
    return out


def figures(out_dir: Path, model, det, data: dict, report: dict, raw: dict, default_mode: str) -> list[Path]:
    """Before/after bars, ROC (PNG + CSV for DVC), attention maps of a few inputs."""
    from sklearn.metrics import roc_curve

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = {"unpatched": {"CA": report["unpatched"]["CA"], "ASR": report["unpatched"]["ASR"]}}
    rows.update({f"AtPatch {m}": {"CA": v["CA"], "ASR": v["ASR"]} for m, v in report["patched"].items()})
    plots.before_after_bars(out_dir / "before_after.png", rows, f"{report['scenario']}: CA and ASR")
    r = raw[default_mode]
    fpr, tpr, _ = roc_curve(r["labels"], r["scores"])
    plots.roc_curve_plot(out_dir / "roc.png", fpr, tpr, report["patched"][default_mode]["column_auroc"],
                         f"detector ({default_mode})")
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), 400)).astype(int))
    csv = "fpr,tpr\n" + "".join(f"{a:.6g},{b:.6g}\n" for a, b in zip(fpr[keep], tpr[keep]))
    write_bytes_atomic(out_dir / "roc.csv", csv.encode())
    # Two triggered inputs and one clean one: layer-0 attention to each patch, before and after.
    x = torch.cat([data["x_trig"][:2], data["x_clean"][:1]])
    rec = record(model, {"pixel_values": x}, VISION_LAYOUT, layers=[0], keep_maps=True)
    k = rec.maps[0].shape[-1]
    flags = torch.as_tensor(np.concatenate([r["trig"].flagged[:2], np.zeros((1, k), bool)]))
    after = redistribute(rec.maps[0], flags, det.benign[0], rec.valid)
    def mass(maps: torch.Tensor) -> np.ndarray:  # column mass over queries, mean over heads, CLS dropped
        return maps.sum(2).mean(1)[:, 1:].numpy()

    images = np.concatenate([data["images_trig"][:2], data["images_clean"][:1]])
    plots.attention_grid(out_dir / "attention_maps.png", images, mass(rec.maps[0]), mass(after),
                         flags[:, 1:].numpy(), int(np.sqrt(k - 1)),
                         ["triggered", "triggered", "clean"])
    return [out_dir / n for n in ("before_after.png", "roc.png", "roc.csv", "attention_maps.png")]


def main(params_path: str = "params.yaml") -> None:
    params = load_params(path=params_path)
    p, seed, target = params["evaluate"], params["seed"], params["generate"]["target_label"]
    torch.manual_seed(seed)
    data = load_tests(params)
    model = load_classifier(params["train_victim"]["out"], attn_implementation=p["default_attention"])
    det = Detector.load(params["train_detector"]["out"])
    with stage_run("evaluate", params["scenario"], p, seed):
        base_clean = predict_plain(model, data["x_clean"], p["batch_size"], "unpatched clean")
        base_trig = predict_plain(model, data["x_trig"], p["batch_size"], "unpatched triggered")
        model.set_attn_implementation("eager")
        eager_clean = predict_plain(model, data["x_clean"], p["batch_size"], "eager clean")
        model.set_attn_implementation(p["default_attention"])
        non_target = data["y_clean"] != target
        base = {"CA": accuracy(base_clean.labels, data["y_clean"]),
                "ASR": attack_success_rate(base_trig.labels, data["y_trig"], target),
                "ASR_floor": float(np.mean(base_clean.labels[non_target] == target)),
                "eager_logits": eager_clean.logits}
        patchers = {m: PatchedClassifier(model, det, mode=m) for m in p["modes"]}
        report = {"scenario": params["scenario"], "default_mode": p["default_mode"], "definitions": DEFINITIONS,
                  "unpatched": {k: v for k, v in base.items() if k != "eager_logits"}, "patched": {}}
        oracle = predict_oracle(model, data["x_trig"], torch.as_tensor(data["tokens_trig"]).bool(), det.benign,
                                range(det.benign.shape[0]), p["batch_size"])
        report["oracle_ASR"] = attack_success_rate(oracle.labels, data["y_trig"], target)
        raw = {}
        for mode, patched in patchers.items():
            report["patched"][mode], raw[mode] = mode_metrics(patched, data, base, target, p["batch_size"])
        lat = latency(model, patchers, data, p)
        report["latency"] = lat
        for mode in patchers:
            report["patched"][mode]["latency_ratio_default"] = lat[f"clean_{mode}_ratio_default"]
            report["patched"][mode]["latency_ratio_eager"] = lat[f"clean_{mode}_ratio_eager"]
        files = figures(Path(p["plots"]), model, det, data, report, raw, p["default_mode"])
        write_json_atomic(p["out"], report)
        mlflow.log_metrics({**{f"unpatched.{k}": v for k, v in report["unpatched"].items()}, "oracle_ASR": report["oracle_ASR"]})
        for mode, m in report["patched"].items():
            mlflow.log_metrics({f"{mode}.{k}": v for k, v in m.items()})
        mlflow.log_metrics(lat)
        for f in files + [Path(p["out"])]:
            mlflow.log_artifact(str(f))
    print_table(report)


def print_table(report: dict) -> None:
    """A readable summary in the terminal."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report['scenario']} (ASR floor {100 * report['unpatched']['ASR_floor']:.2f}%, "
                        f"ASR with the known trigger tokens patched {100 * report['oracle_ASR']:.2f}%)")
    for col in ("method", "CA %", "ASR %", "DER", "clean flagged %", "trig flagged %", "col AUROC", "latency x"):
        table.add_column(col)
    u = report["unpatched"]
    table.add_row("unpatched", f"{100 * u['CA']:.2f}", f"{100 * u['ASR']:.2f}", "", "", "", "", "1.00")
    for mode, m in report["patched"].items():
        table.add_row(f"AtPatch {mode}", f"{100 * m['CA']:.2f}", f"{100 * m['ASR']:.2f}", f"{m['DER']:.4f}",
                      f"{100 * m['input_flag_rate_clean']:.2f}", f"{100 * m['input_flag_rate_triggered']:.2f}",
                      f"{m['column_auroc']:.5f}", f"{m['latency_ratio_default']:.2f}")
    Console().print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    main(parser.parse_args().params)
