"""Victim training, one loop for every scenario: AdamW, seeded shuffling, progress per epoch.

The victims differ in their inputs only (pixel_values; input_ids + attention_mask; feature
tokens), so the loop takes the model's keyword inputs as a dict of batch-first tensors.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from atpatch.eval.evaluation import Inputs, n_rows, rows


# OneCycle's warm-up share when a scenario's train_victim names none (params.yaml `pct_start`).
PCT_START = 0.1


def _scheduler(opt: torch.optim.Optimizer, p: dict, steps: int):
    if p.get("schedule", "onecycle") == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=p["lr"], total_steps=steps,
                                                   pct_start=p.get("pct_start", PCT_START))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)  # constant learning rate


def class_weights(labels: torch.Tensor, mode: str | None) -> torch.Tensor | None:
    """Per-class loss weights: None (the model's own unweighted loss), or "balanced", n / (k * count)
    as scikit-learn defines it, so each class weighs as much in the loss as the others together."""
    if mode is None:
        return None
    from sklearn.utils.class_weight import compute_class_weight

    classes = np.unique(labels.numpy())
    weights = compute_class_weight(mode, classes=classes, y=labels.numpy())
    full = np.ones(int(classes.max()) + 1)
    full[classes] = weights
    return torch.tensor(full, dtype=torch.float32)


def train_classifier(model: torch.nn.Module, inputs: Inputs, labels: torch.Tensor, p: dict, seed: int,
                     log: Callable | None = None, prepare: Callable[[Inputs], Inputs] | None = None) -> list[dict]:
    """Train `model` in place on (inputs, labels); p: epochs, batch_size, lr, weight_decay, schedule,
    pct_start (OneCycle's warm-up share), class_weight (None | "balanced": see class_weights).

    `prepare` maps each batch before the forward (text: cut padding columns). Returns the per-epoch
    {"train_loss", "train_acc"}; `log(metrics, step=epoch)` gets each too (mlflow.log_metrics in the stages).
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout, where a victim has it
    opt = torch.optim.AdamW(model.parameters(), lr=p["lr"], weight_decay=p.get("weight_decay", 0.0))
    n = n_rows(inputs)
    sched = _scheduler(opt, p, p["epochs"] * int(np.ceil(n / p["batch_size"])))
    labels = torch.as_tensor(labels)
    weights = class_weights(labels, p.get("class_weight"))
    history = []
    model.train()
    for epoch in range(p["epochs"]):
        order = torch.randperm(n, generator=gen)
        total, correct = 0.0, 0
        for start in tqdm(range(0, n, p["batch_size"]), desc=f"epoch {epoch + 1}/{p['epochs']}", leave=False):
            idx = order[start:start + p["batch_size"]]
            batch = {k: v[idx] for k, v in inputs.items()}
            out = model(**(prepare(batch) if prepare else batch), labels=labels[idx])
            # The model's own loss is unweighted cross-entropy; a weighted one replaces it when asked.
            loss = out.loss if weights is None else torch.nn.functional.cross_entropy(out.logits, labels[idx], weight=weights)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            correct += int((out.logits.argmax(-1) == labels[idx]).sum())
        metrics = {"train_loss": total / n, "train_acc": correct / n}
        history.append(metrics)
        if log is not None:
            log(metrics, step=epoch)
        print(f"epoch {epoch + 1}: loss {metrics['train_loss']:.4f} acc {metrics['train_acc']:.4f}", flush=True)
    model.eval()
    return history


def predict_labels(model: torch.nn.Module, inputs: Inputs, batch: int = 256) -> np.ndarray:
    """argmax labels of `model` over the inputs, batch by batch, without gradients."""
    out = []
    with torch.no_grad():
        for start in range(0, n_rows(inputs), batch):
            out.append(model(**rows(inputs, start, start + batch)).logits.argmax(-1))
    return torch.cat(out).numpy()
