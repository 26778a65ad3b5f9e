"""The attention-mediation check: is the fault carried by over-attention at all?

AtPatch can only remove a fault that runs through the attention paid to its tokens. Before a patch
is trusted, the check patches the debugging set's *known* fault tokens (its token labels; no
detector) and measures the fault rate again. When even that leaves the fault in place, the model
carries it some other way (for example in the trigger token's values at normal attention weight),
and no detector can help: the check fails and says so in plain words.

It needs no test labels. For a backdoor the fault is "predicted as the attack's target class": the
rate among the debugging set's faulty inputs with their known tokens patched is compared with the
rate among its clean inputs (both sets hold inputs of every class, the target's own included).
For a fairness fault it is the counterfactual flip rate of the debugging split, which must fall
near zero when the protected attribute's tokens are patched in every input and counterfactual.
"""

from __future__ import annotations

import numpy as np
import torch

from atpatch.core.errors import AtPatchError
from atpatch.eval.evaluation import Inputs, predict_oracle, predict_plain

# Most the known-patched fault rate may exceed the clean inputs' rate (0.03 = 3 points). Chosen on
# the debugging splits of the vision variants: attention-borne victims sit between 1.5 points below and
# level with their clean rate, the value-borne one 89 points above (docs/method.md).
MAX_GAP = 0.03


def _select(inputs: Inputs, keep: torch.Tensor) -> Inputs:
    return {k: v[keep] for k, v in inputs.items()}


def backdoor_mediation(model, inputs: Inputs, token_labels: torch.Tensor, faulty: torch.Tensor, benign: torch.Tensor,
                       layers, target: int | None = None, max_gap: float = MAX_GAP, batch: int = 256) -> dict:
    """The check on a backdoor debugging set; returns the `mediation` block of evaluate.json.

    inputs: the model's inputs [N, ...]; token_labels [N, K] (1 = known fault token); faulty [N] bool
    (inputs that carry the trigger; the others are clean); benign [L, H] and `layers`: the shipped
    patch's benign value and patched layers. target: the attack's target class (None: the most
    frequent unpatched prediction among the faulty inputs).
    """
    faulty = torch.as_tensor(faulty).bool()
    if not bool(faulty.any()) or bool(faulty.all()):
        raise AtPatchError(f"mediation: the debugging set needs both faulty and clean inputs "
                           f"({int(faulty.sum())} faulty of {len(faulty)})")
    plain = predict_plain(model, inputs, batch, "mediation unpatched").labels
    faulty_np = faulty.numpy()
    if target is None:
        target = int(np.bincount(plain[faulty_np]).argmax())
    known = predict_oracle(model, _select(inputs, faulty), torch.as_tensor(token_labels)[faulty].bool(),
                           benign, layers, batch).labels
    before, after = float(np.mean(plain[faulty_np] == target)), float(np.mean(known == target))
    clean = float(np.mean(plain[~faulty_np] == target))
    result = {"family": "backdoor", "target": target, "n_faulty": int(faulty.sum()), "n_clean": int((~faulty).sum()),
              "fault_rate_unpatched": before, "fault_rate_known_patched": after, "fault_rate_clean": clean}
    return judged(result, max_gap)


def message(m: dict) -> str:
    """The verdict in plain words, one line."""
    what = "counterfactual flip rate" if m.get("family") == "fairness" else "fault rate"
    rates = (f"patching the debugging set's known fault tokens takes the {what} from "
             f"{100 * m['fault_rate_unpatched']:.1f}% to {100 * m['fault_rate_known_patched']:.1f}% "
             f"(fault-free: {100 * m['fault_rate_clean']:.1f}%, allowed gap {100 * m['max_gap']:.1f} points)")
    if not m["fault_present"]:
        return (f"attention mediation: nothing to check: the debugging set's faulty inputs show the {what} of its "
                f"fault-free inputs ({100 * m['fault_rate_unpatched']:.1f}% vs {100 * m['fault_rate_clean']:.1f}%), so "
                f"this model shows no fault there for AtPatch to remove.")
    if m["passed"]:
        return f"attention mediation PASSED: {rates}; the fault runs through over-attention, which AtPatch can patch."
    return (f"attention mediation FAILED: {rates}. This model does not carry the fault through over-attention, "
            f"so AtPatch cannot remove it, however good the detector: do not trust the patch (retrain the model or "
            f"use a weight-level defence).")


def fairness_mediation(flip_unpatched: float, flip_known_patched: float, n_rows: int, max_gap: float = MAX_GAP) -> dict:
    """The check on a fairness debugging split: the counterfactual flip rate before and with the protected
    attribute's tokens patched in every row and counterfactual (the fault-free rate is zero flips)."""
    return judged({"family": "fairness", "n_rows": n_rows, "fault_rate_unpatched": flip_unpatched,
                   "fault_rate_known_patched": flip_known_patched, "fault_rate_clean": 0.0}, max_gap)


def judged(block: dict, max_gap: float) -> dict:
    """The verdict on the rates of `block` at `max_gap`: gap (known-patched minus fault-free rate), passed,
    message. A debugging set whose faulty inputs show no more fault than the fault-free rate (plus `max_gap`)
    has nothing to mediate: that passes, and the message says the check was empty."""
    gap = block["fault_rate_known_patched"] - block["fault_rate_clean"]
    empty = block["fault_rate_unpatched"] - block["fault_rate_clean"] <= max_gap
    out = {**block, "gap": gap, "max_gap": max_gap, "fault_present": not empty, "passed": bool(empty or gap <= max_gap)}
    out["message"] = message(out)
    return out
