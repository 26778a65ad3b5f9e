"""Fine-pruning (Liu, Dolan-Gavitt and Garg, RAID 2018), adapted to transformer classifiers.

1. Record each feed-forward neuron's activation on the clean repair set, in the last `layers`
   blocks (a neuron = one input of the block's down projection, after the activation).
2. Prune the least active neurons of each of those blocks (mean |activation| over real tokens:
   GELU outputs can be negative, so "dormant" is near zero, not most negative), in steps of
   `ratio_step` up to `prune_ratio`; stop before the step at which clean accuracy on the repair set
   falls by more than `max_acc_drop` (the paper's pruning stops at a 4% validation-accuracy drop;
   null: prune `prune_ratio` outright).
3. Fine-tune the pruned model briefly on the clean repair set (`finetune`: epochs, batch_size, lr,
   weight_decay, schedule; epochs 0 skips it) with `atpatch.scenarios.training.train_classifier`.

Pruning is a weight edit that `save_pretrained` keeps: a pruned neuron's row of the up projection
(weight and bias) and its column of the down projection are zero, so its activation is act(0) = 0
(GELU, ReLU, SiLU) and it contributes nothing. Both zero, the neuron also gets zero gradient, so
fine-tuning cannot revive it (the rows are re-zeroed after fine-tuning anyway, and checked).

Uses: clean_inputs, clean_labels only (the defender of the paper has clean data, no triggers).
"""

from __future__ import annotations

import numpy as np
import torch

from atpatch.core.errors import AtPatchError
from atpatch.scenarios.training import train_classifier
from atpatch.baselines import (FFN, Defended, Timer, accuracy, as_labels, ffn_stats, merged, need, pick_layers, plain_predictor,
               working_copy)

NAME = "fine_pruning"
USES = ("clean_inputs", "clean_labels")
DEFAULTS = {
    "layers": 2,            # the last k blocks (an int), or a list of block indices, or null (all)
    "prune_ratio": 0.8,     # most neurons pruned per block
    "ratio_step": 0.05,
    "max_acc_drop": 0.04,   # stop pruning before clean accuracy falls by more (null: prune prune_ratio)
    "statistic": "mean_abs",  # mean_abs | mean: the activity ranked
    "finetune": {"epochs": 5, "batch_size": 64, "lr": 5e-4, "weight_decay": 0.0, "schedule": "constant"},
    "batch_size": 256,
}


def rank(stats: dict[int, dict[str, torch.Tensor]], statistic: str = "mean_abs") -> dict[int, torch.Tensor]:
    """Per block: neuron indices, least active first."""
    return {i: torch.argsort(s[statistic], stable=True) for i, s in stats.items()}


@torch.no_grad()
def prune(ffns: list[FFN], plan: dict[int, list[int]]) -> None:
    """Zero the up-projection rows (weight, bias) and down-projection columns of plan[block] neurons."""
    by_index = {f.index: f for f in ffns}
    for index, neurons in plan.items():
        idx = torch.as_tensor(list(neurons), dtype=torch.long)
        if len(idx) == 0:
            continue
        f = by_index[index]
        f.up.weight[idx] = 0.0
        if f.up.bias is not None:
            f.up.bias[idx] = 0.0
        f.down.weight[:, idx] = 0.0


def _plan(order: dict[int, torch.Tensor], ratio: float) -> dict[int, list[int]]:
    return {i: sorted(o[: int(round(ratio * len(o)))].tolist()) for i, o in order.items()}


def apply(model, repair: dict, params: dict | None = None, seed: int = 0) -> Defended:
    p = merged(DEFAULTS, params)
    clean, labels = need(repair, "clean_inputs", "clean_labels", method=NAME)
    labels = as_labels(labels)
    if not 0.0 <= p["prune_ratio"] < 1.0 or p["ratio_step"] <= 0:
        raise AtPatchError(f"{NAME}: need 0 <= prune_ratio < 1 and ratio_step > 0, got {p['prune_ratio']}, {p['ratio_step']}")
    with Timer() as timer:
        model = working_copy(model)
        ffns = pick_layers(model, p["layers"])
        order = rank(ffn_stats(model, ffns, clean, p["batch_size"]), p["statistic"])
        base_acc = accuracy(model, clean, labels, p["batch_size"])
        originals = {f.index: (f.up.weight.detach().clone(), None if f.up.bias is None else f.up.bias.detach().clone(),
                               f.down.weight.detach().clone()) for f in ffns}
        steps = [p["prune_ratio"]] if p["max_acc_drop"] is None else \
            list(np.arange(p["ratio_step"], p["prune_ratio"] + 1e-9, p["ratio_step"]))
        ratio, acc = 0.0, base_acc
        for step in steps:  # cumulative: each step prunes a superset of the previous one
            prune(ffns, _plan(order, float(step)))
            step_acc = accuracy(model, clean, labels, p["batch_size"])
            if p["max_acc_drop"] is not None and base_acc - step_acc > p["max_acc_drop"]:
                break
            ratio, acc = round(float(step), 6), step_acc
        with torch.no_grad():  # restore, then prune exactly the accepted plan
            for f in ffns:
                w, b, d = originals[f.index]
                f.up.weight.copy_(w)
                if b is not None:
                    f.up.bias.copy_(b)
                f.down.weight.copy_(d)
        plan = _plan(order, ratio)
        prune(ffns, plan)
        history = []
        if p["finetune"]["epochs"] > 0:
            history = train_classifier(model, clean, labels, p["finetune"], seed)
            prune(ffns, plan)
        model.eval()
        final_acc = accuracy(model, clean, labels, p["batch_size"])
    changes = {
        "pruned": {int(i): v for i, v in plan.items()},
        "n_pruned": int(sum(len(v) for v in plan.values())),
        "n_candidates": int(sum(f.size for f in ffns)),
        "prune_ratio": ratio,
        "clean_acc": {"before": base_acc, "pruned": acc, "finetuned": final_acc},
        "finetune_history": history,
        "params": p,
    }
    return Defended(NAME, plain_predictor(model, p["batch_size"]), timer.seconds, changes, model)
