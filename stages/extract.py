"""Stage `extract`: record attention column features of the victim on the debugging set.

Writes one safetensors file: features [N, K, L, F], token_labels [N, K], candidate [N, K],
triggered [N], calib [N] (1 for the held-out clean calibration part).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from tqdm.auto import tqdm

from atpatch.features import KINDS, record
from atpatch.io import load_params, write_bytes_atomic
from atpatch.models.loading import load_classifier
from atpatch.models.vit import VISION_LAYOUT, to_pixel_values



def extract(model, images: np.ndarray, batch: int, kinds=KINDS) -> tuple[torch.Tensor, torch.Tensor]:
    """Column features [N, K, L, F] and candidate mask [N, K] of every layer, batch by batch."""
    feats, cands = [], []
    x = to_pixel_values(images)
    for start in tqdm(range(0, len(x), batch), desc="extract", leave=False):
        rec = record(model, {"pixel_values": x[start:start + batch]}, VISION_LAYOUT, kinds=kinds)
        feats.append(rec.stacked())
        cands.append(rec.candidate)
    return torch.cat(feats), torch.cat(cands)


def main(params_path: str = "params.yaml") -> None:
    from datasets import load_from_disk
    from safetensors.torch import save

    params = load_params(path=params_path)
    p = params["extract"]
    debug = load_from_disk(f"{params['generate']['out']}/debug").with_format("numpy")
    model = load_classifier(params["train_victim"]["out"])
    features, candidate = extract(model, debug["image"], p["batch_size"], tuple(p["kinds"]))
    tensors = {
        "features": features.contiguous(),
        "candidate": candidate,
        "token_labels": torch.from_numpy(np.stack(debug["token_labels"]).astype(np.int8)),
        "triggered": torch.from_numpy(np.asarray(debug["triggered"], dtype=bool)),
        "calib": torch.from_numpy(np.asarray(debug["part"]) == "calib"),
    }
    write_bytes_atomic(p["out"], save(tensors, metadata={"kinds": ",".join(p["kinds"]),
                                                          "heads": str(model.config.num_attention_heads)}))
    print(f"features {tuple(features.shape)} -> {p['out']}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    main(parser.parse_args().params)
