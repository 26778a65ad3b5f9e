"""A baseline's settings chosen on the repair data: the only data a defender has for choosing among them.
The test sets are never used for selection."""

from __future__ import annotations

import numpy as np

from atpatch.core.errors import AtPatchError


def repair_score(defended, repair: dict, model) -> dict:
    """The method's DER (backdoor) or DER_flip (fairness) measured on the repair data itself (the debugging set)."""
    from atpatch.baselines import plain_predictor
    from atpatch.eval.metrics import accuracy, attack_success_rate, der

    plain = plain_predictor(model)
    clean, labels = repair["clean_inputs"], repair["clean_labels"]
    before_acc, after_acc = accuracy(plain(clean), labels), accuracy(defended.predict(clean), labels)
    if repair.get("triggered_inputs") is not None:
        trig, t_labels, target = repair["triggered_inputs"], repair["_triggered_labels"], repair["target_label"]
        metric = "DER"
        b = attack_success_rate(plain(trig), t_labels, target)
        a = attack_success_rate(defended.predict(trig), t_labels, target)
    else:
        if defended.needs_sensitive:
            raise AtPatchError(f"{defended.name}: selection on the repair set needs the counterfactuals' sensitive "
                               "feature")
        cfs = repair["counterfactual_inputs"]
        metric, b, a = "DER_flip", flip_rate(plain, clean, cfs), flip_rate(defended.predict, clean, cfs)
    return {"score": der(asr_before=b, asr_after=a, ca_before=before_acc, ca_after=after_acc), "metric": metric, "fault_before": b, "fault_after": a,
            "acc_before": before_acc, "acc_after": after_acc}


def flip_rate(predict, inputs: dict, counterfactuals: list[dict]) -> float:
    """Share of inputs whose prediction changes in at least one counterfactual set."""
    pred = predict(inputs)
    return float(np.mean(np.any([predict(cf) != pred for cf in counterfactuals], axis=0)))


def apply_best(name: str, params: dict, grid: list[dict], model, repair: dict, seed: int, log) -> tuple:
    """Apply every variant (params deep-merged with each grid entry); keep the best by repair_score.
    Returns (defended, params used, selection record or None, seconds spent on all variants)."""
    from atpatch.baselines import make
    from atpatch.io import deep_merge

    grid = grid or [{}]
    best, tried, total = None, [], 0.0
    for i, override in enumerate(grid):
        p = deep_merge(params, override)
        defended = make(name)(model, repair, p, seed)
        total += defended.repair_seconds
        if len(grid) == 1:  # nothing to choose from: no scoring on the repair set
            return defended, p, None, total
        score = repair_score(defended, repair, model)
        tried.append({"override": override, "repair_seconds": defended.repair_seconds, **score})
        log(f"  {name} variant {i} {override}: repair-set {score['metric']} {score['score']:.4f} "
            f"(fault {score['fault_before']:.3f} -> {score['fault_after']:.3f}, accuracy {score['acc_before']:.3f} -> "
            f"{score['acc_after']:.3f}), {defended.repair_seconds:.1f} s")
        if best is None or score["score"] > best[0] + 1e-12:
            best = (score["score"], i, defended, p)
    _, chosen, defended, p = best
    return defended, p, {"criterion": f"best {tried[0]['metric']} on the repair data (debugging set), test sets unused",
                         "variants": tried, "chosen": chosen}, total
