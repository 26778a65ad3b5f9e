"""Where a vision victim carries its trigger: two measurements on a trained workspace.

1. ASR with the known trigger tokens patched (no detector), for each labelling rule `min_overlap`
   (trigger pixels a patch must hold to count as a trigger token): which tokens must be patched to
   remove the backdoor. Test split, as evaluate's oracle_ASR.
2. Per layer and head, how well each column feature separates (a) labelled trigger columns from the
   other candidate columns and (b) triggered from clean inputs by its largest value over the input's
   columns, on the debugging split's extracted features (AUROC each): where the victim over-attends.

    .venv/bin/python benchmarks/vision_diagnosis.py --workspace .work/bench/default/vision-backdoor-random

Writes benchmarks/results/vision-diagnosis-<variant>.json and prints both tables.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SCENARIO = "vision-backdoor"


def oracle_by_overlap(ws: Path, overlaps: list[int]) -> list[dict]:
    """ASR with the known trigger tokens redistributed (u = 1 / n) at every layer, per labelling rule."""
    from datasets import load_from_disk

    from atpatch.scenarios.data.triggers import token_labels
    from atpatch.eval.evaluation import predict_oracle, predict_plain
    from atpatch.scenarios.models.loading import load_classifier
    from atpatch.scenarios.models.vit import to_pixel_values

    model = load_classifier(ws / "data" / SCENARIO / "victim", attn_implementation="sdpa")
    gen = ws / "data" / SCENARIO / "generated"
    trig = load_from_disk(str(gen / "test_triggered")).with_format("numpy")
    clean = load_from_disk(str(gen / "test_clean")).with_format("numpy")
    x = {"pixel_values": to_pixel_values(trig["image"], model.config)}
    base = predict_plain(model, {"pixel_values": to_pixel_values(clean["image"], model.config)}, 500, "clean").labels
    floor = float(np.mean(base[np.asarray(clean["label"]) != 0] == 0))
    layers, heads = model.config.num_hidden_layers, model.config.num_attention_heads
    rows = []
    for overlap in overlaps:
        flags = torch.as_tensor(token_labels(trig["trigger_x"], trig["trigger_y"], 4, 4, min_overlap=overlap)).bool()
        pred = predict_oracle(model, x, flags, torch.ones(layers, heads), tuple(range(layers)), 500).labels
        rows.append({"min_overlap": overlap, "tokens_per_input": float(flags.sum(1).float().mean()),
                     "known_patched_ASR": float(np.mean(pred == 0)), "ASR_floor": floor})
    return rows


def feature_aurocs(ws: Path) -> list[dict]:
    """Column-level and input-level AUROC of every (layer, head, kind) feature on the debugging set."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    from sklearn.metrics import roc_auc_score

    path = ws / "data" / SCENARIO / "features.safetensors"
    d = load_file(str(path))
    with safe_open(str(path), "pt") as fh:
        kinds = fh.metadata()["kinds"].split(",")
    f, cand = d["features"], d["candidate"].bool()
    labels, triggered = d["token_labels"].bool(), d["triggered"].bool().numpy()
    heads = f.shape[-1] // len(kinds)
    rows = []
    for layer in range(f.shape[2]):
        for head in range(heads):
            for k, kind in enumerate(kinds):
                v = f[:, :, layer, head * len(kinds) + k]
                per_input = v.masked_fill(~cand, -torch.inf).amax(1).numpy()
                rows.append({"layer": layer, "head": head, "kind": kind,
                             "column_auroc": float(roc_auc_score(labels[cand].numpy(), v[cand].numpy())),
                             "input_auroc": float(roc_auc_score(triggered, per_input))})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--min-overlap", nargs="+", type=int, default=[1, 2, 4, 8])
    args = ap.parse_args()
    torch.manual_seed(0)
    ws = Path(args.workspace)
    if not (ws / "data" / SCENARIO / "features.safetensors").is_file():
        sys.exit(f"{ws}: no extracted features; run `dvc repro extract@{SCENARIO}` there first")
    result = {"command": " ".join(["benchmarks/vision_diagnosis.py", *sys.argv[1:]]),
              "oracle_by_min_overlap": oracle_by_overlap(ws, args.min_overlap), "features": feature_aurocs(ws)}
    out = RESULTS / f"vision-diagnosis-{ws.name.removeprefix(SCENARIO + '-')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("| min_overlap | tokens per input | ASR, known tokens patched % | ASR floor % |\n|---|---|---|---|")
    for r in result["oracle_by_min_overlap"]:
        print(f"| {r['min_overlap']} | {r['tokens_per_input']:.2f} | {100 * r['known_patched_ASR']:.2f} "
              f"| {100 * r['ASR_floor']:.2f} |")
    best = sorted(result["features"], key=lambda r: -r["input_auroc"])[:5]
    print("\nstrongest input-level features (layer, head, kind): column AUROC / input AUROC")
    for r in best:
        print(f"  layer {r['layer']} head {r['head']} {r['kind']}: {r['column_auroc']:.3f} / {r['input_auroc']:.3f}")


if __name__ == "__main__":
    main()
