"""Stage `train_victim`: train the small ViT on the poisoned Fashion-MNIST training set.

Writes a save_pretrained directory (safetensors) to `train_victim.out` atomically and logs the
training curve to MLflow.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from tqdm.auto import tqdm

from atpatch.io import atomic_dir, load_params
from atpatch.models.vit import build_vit, to_pixel_values
from atpatch.tracking import stage_run


def train(model, images: np.ndarray, labels: np.ndarray, p: dict, seed: int, log) -> None:
    """AdamW (one-cycle or constant learning rate), seeded shuffling, one progress bar per epoch."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=p["lr"], weight_decay=p["weight_decay"])
    steps = p["epochs"] * int(np.ceil(len(images) / p["batch_size"]))
    if p.get("schedule", "onecycle") == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=p["lr"], total_steps=steps, pct_start=0.1)
    else:  # constant learning rate
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    x_all, y_all = to_pixel_values(images), torch.as_tensor(labels)
    model.train()
    for epoch in range(p["epochs"]):
        order = torch.randperm(len(images), generator=gen)
        total, correct, seen = 0.0, 0, 0
        for start in tqdm(range(0, len(order), p["batch_size"]), desc=f"epoch {epoch + 1}/{p['epochs']}", leave=False):
            idx = order[start:start + p["batch_size"]]
            out = model(pixel_values=x_all[idx], labels=y_all[idx])
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            sched.step()
            total += float(out.loss.detach()) * len(idx)
            correct += int((out.logits.argmax(-1) == y_all[idx]).sum())
            seen += len(idx)
        log({"train_loss": total / seen, "train_acc": correct / seen}, step=epoch)
        print(f"epoch {epoch + 1}: loss {total / seen:.4f} acc {correct / seen:.4f}", flush=True)
    model.eval()


def main(params_path: str = "params.yaml") -> None:
    import mlflow
    from datasets import load_from_disk

    params = load_params(path=params_path)
    p, seed = params["train_victim"], params["seed"]
    torch.set_num_threads(p.get("threads") or torch.get_num_threads())
    train_set = load_from_disk(f"{params['generate']['out']}/train").with_format("numpy")
    images, labels = train_set["image"], train_set["label"]
    model = build_vit(num_labels=10, image_size=28, patch_size=params["generate"]["patch_size"], seed=seed,
                      **p["architecture"])
    model.set_attn_implementation("eager")
    with stage_run("train_victim", params["scenario"], p, seed):
        train(model, images, labels, p, seed, mlflow.log_metrics)
        with atomic_dir(p["out"]) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    main(parser.parse_args().params)
