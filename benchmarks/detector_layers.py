"""Which model layers should the detector read? Chosen on the debugging split, never on the test split.

Every layer the detector reads costs its attention probabilities and column features in the forward
pass; a layer it does not read runs as the user runs it (SDPA). This benchmark fits the detector
on a seeded share of a workspace's debugging "fit" inputs for each candidate layer set, calibrates it
on the calibration part as train_detector does, and scores the held-out rest of the fit inputs:
column AUROC and the share of triggered / clean held-out inputs flagged.

    .venv/bin/python benchmarks/detector_layers.py --workspace .work/bench/default/vision-backdoor-corner \
        --scenario vision-backdoor --layer-sets 0 0,1 all

Results: benchmarks/results/detector-layers-<scenario>-<variant>.json (the workspace's variant) and a table.
`--positional true false` crosses each layer set with and without positional features (atpatch.core.detector).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def held_out_split(fit: torch.Tensor, share: float, seed: int) -> torch.Tensor:
    """[N] bool: a seeded `share` of the fit inputs, kept out of detector training for scoring."""
    idx = torch.nonzero(fit).squeeze(1)
    idx = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed))]
    held = torch.zeros_like(fit)
    held[idx[: int(share * len(idx))]] = True
    return held


def score_layer_set(data: dict, meta: dict, p: dict, layers: list[int] | None, held: torch.Tensor, seed: int) -> dict:
    """Fit on the debugging set less `held`, calibrate as the stage does, score the held-out inputs."""
    from sklearn.metrics import roc_auc_score

    from atpatch.core.features import TokenLayout
    from atpatch.eval.metrics import input_flag_rate
    from atpatch.ops.patching import fit_detector

    keep = ~held
    train = {k: v[keep] for k, v in data.items()}
    settings = {**p, "layers": layers}
    det, _ = fit_detector(train, settings, meta["model_type"], int(meta["heads"]), seed,
                          TokenLayout.from_dict(json.loads(meta["layout"])), progress=False)
    x = data["features"][held][:, :, det.config.layers]
    cand, labels, triggered = data["candidate"][held].bool(), data["token_labels"][held].bool(), data["triggered"][held]
    with torch.no_grad():
        logits = det.logits(x)
    flags = det.flags(logits) & cand
    return {"layers": det.config.layers, "held_out_inputs": int(held.sum()),
            "column_auroc": float(roc_auc_score(labels[cand].numpy(), logits[cand].numpy())),
            "triggered_flagged": input_flag_rate(flags[triggered].numpy()),
            "clean_flagged": input_flag_rate(flags[~triggered].numpy()), "threshold": det.config.threshold}


def main() -> None:
    import yaml
    from safetensors import safe_open
    from safetensors.torch import load_file

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", required=True, help="a pipeline workspace that ran extract (atpatch.ops.workspace)")
    ap.add_argument("--scenario", default="vision-backdoor")
    ap.add_argument("--layer-sets", nargs="+", default=["0", "all"], help="comma-separated layers, or all")
    ap.add_argument("--held-out", type=float, default=0.3, help="share of the fit inputs scored, not trained on")
    ap.add_argument("--positional", nargs="+", default=["false"], choices=["false", "true"],
                    help="train_detector.network.positional settings to cross with the layer sets")
    args = ap.parse_args()
    ws = Path(args.workspace)
    params = yaml.safe_load((ws / "params.yaml").read_text())
    seed, p = int(params["seed"]), params["scenarios"][args.scenario]["train_detector"]
    path = ws / "data" / args.scenario / "features.safetensors"
    if not path.is_file():
        sys.exit(f"{path}: not found; run `dvc repro extract@{args.scenario}` in the workspace first")
    data = load_file(str(path))
    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata()
    held = held_out_split(~data["calib"].bool(), args.held_out, seed)
    rows = []
    for positional in args.positional:
        settings = {**p, "network": {**p["network"], "positional": positional == "true"}}
        for s in args.layer_sets:
            layers = None if s == "all" else [int(i) for i in s.split(",")]
            rows.append({"positional": positional == "true", **score_layer_set(data, meta, settings, layers, held, seed)})
    out = RESULTS / f"detector-layers-{args.scenario}-{ws.name.removeprefix(args.scenario + '-')}.json"
    command = " ".join(["benchmarks/detector_layers.py", *sys.argv[1:]])
    out.write_text(json.dumps({"command": command, "split": "debugging (fit inputs held out)", "rows": rows},
                              indent=2) + "\n")
    print("| layers | positional | column AUROC | triggered flagged % | clean flagged % |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['layers']} | {r['positional']} | {r['column_auroc']:.4f} | {100 * r['triggered_flagged']:.2f} "
              f"| {100 * r['clean_flagged']:.2f} |")


if __name__ == "__main__":
    main()
