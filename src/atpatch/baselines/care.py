"""Causal neuron repair in the manner of CARE (Sun, Sun, Wang and Wang, ICSE 2022).

1. Fault localisation by intervention. The faulty behaviour is measured on a set of faulty inputs:
   backdoor — the mean probability of the target class on the debugging set's triggered inputs;
   fairness — the mean counterfactual gap 0.5 * sum_c |p(x)_c - p(x')_c| (a smooth count of
   flips; x' changes only the protected attribute) on the `max_inputs` rows with the largest gap.
   Each candidate neuron (the feed-forward neurons of blocks `layers`) gets do(a = v) at every
   token, v its mean on the clean repair set (`intervention: clean_mean`) or 0 (`zero`); its causal
   effect is fault(no intervention) - fault(do). Neurons are swept in batches (the faulty inputs
   repeated once per neuron), and the blocks before the intervened one run once: their output is
   cached (checked against the full forward; without a match the full forward runs).
   When there are more candidates than `max_candidates`, a first-order estimate of the same
   intervention (gradient x (v - a)) pre-screens them and the exact intervention ranks the rest.
2. Repair: the `top_k` neurons with the largest effect get a scaling factor each (their activation
   is multiplied by it; every weight frozen). CARE searched the factors with particle swarm
   optimisation; here they are optimised by gradient (Adam, projected to `bounds`) on
   CE(clean repair set) + fault_weight * fault term, where the fault term is -log(1 - p_target)
   on triggered inputs (backdoor) or the counterfactual gap (fairness). Gradient search over 16-64
   factors reaches what PSO does at a fraction of the forward passes.
3. The factors are folded into the down projection (its column of each chosen neuron), so the
   repaired model is a plain model that `save_pretrained` keeps.

Uses: clean_inputs + clean_labels (intervention values, the accuracy term) and the faulty behaviour:
triggered_inputs + target_label (backdoor) or counterfactual_inputs (fairness). `changes` lists the
chosen neurons with their effect and factor, the fault and clean accuracy before and after.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from atpatch.core.errors import AtPatchError, ShapeError
from atpatch.eval.evaluation import Inputs, n_rows, rows
from atpatch.baselines import (FFN, Defended, Timer, accuracy, as_labels, block_owner, ffn_pre_hooks, ffn_stats, logits_of, merged,
               need, pick_layers, plain_predictor, task_of, working_copy)

NAME = "care"
USES = ("clean_inputs", "clean_labels", "triggered_inputs", "target_label", "counterfactual_inputs")
DEFAULTS = {
    "layers": None,              # candidate blocks: null (all), the last k (int) or a list of indices
    "intervention": "clean_mean",  # clean_mean | zero: the value v of do(a = v)
    "max_inputs": 64,            # faulty inputs (fairness: rows, each with its counterfactuals) for localisation
    "max_candidates": 1024,      # exact interventions on at most this many neurons (first-order pre-screen)
    "top_k": 16,                 # neurons repaired
    "optimise": {"steps": 200, "lr": 0.05, "batch_size": 64, "fault_weight": 1.0, "bounds": [0.0, 2.0]},
    "batch_size": 256,           # rows per forward in the intervention sweep
}


def _cat(parts: list[Inputs]) -> Inputs:
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _take(inputs: Inputs, idx: torch.Tensor) -> Inputs:
    return {k: v[idx] for k, v in inputs.items()}


@dataclass
class Fault:
    """Faulty inputs (M rows) and the fault measure fn(probs [G, M, C]) -> [G] (higher: more fault)."""

    inputs: Inputs
    fn: Callable[[torch.Tensor], torch.Tensor]
    description: str


def backdoor_fault(triggered: Inputs, target: int) -> Fault:
    return Fault(triggered, lambda probs: probs[..., target].mean(-1), f"mean P(target={target}) on triggered inputs")


def _gap(probs: torch.Tensor, groups: int) -> torch.Tensor:
    """probs [G, (1 + m) * n, C] laid out [x; x'_1; ...; x'_m] -> mean gap [G]."""
    g, rows_, c = probs.shape
    p = probs.reshape(g, groups, rows_ // groups, c)
    return 0.5 * (p[:, 1:] - p[:, :1]).abs().sum(-1).mean((1, 2))


def fairness_fault(model, clean: Inputs, counterfactuals: list[Inputs], max_inputs: int, batch: int) -> Fault:
    """The max_inputs rows whose counterfactual gap is largest, with their counterfactuals."""
    n = n_rows(clean)
    for i, cf in enumerate(counterfactuals):
        if n_rows(cf) != n:
            raise ShapeError(f"counterfactual_inputs[{i}]: {n_rows(cf)} rows, clean_inputs has {n}")
    p = logits_of(model, clean, batch).softmax(-1)
    gaps = torch.stack([0.5 * (logits_of(model, cf, batch).softmax(-1) - p).abs().sum(-1) for cf in counterfactuals])
    chosen = torch.argsort(gaps.mean(0), descending=True, stable=True)[:max_inputs]
    groups = 1 + len(counterfactuals)
    inputs = _cat([_take(clean, chosen)] + [_take(cf, chosen) for cf in counterfactuals])
    return Fault(inputs, lambda probs: _gap(probs, groups), "mean counterfactual gap 0.5*|p(x) - p(x')|_1")


class _Cached(nn.Module):
    """Stands in for the blocks before the intervened one: returns their cached output, repeated."""

    def __init__(self, hidden: torch.Tensor):
        super().__init__()
        self.hidden = hidden

    def forward(self, hidden_states, *args, **kwargs):
        return self.hidden.repeat(hidden_states.shape[0] // self.hidden.shape[0], *([1] * (self.hidden.dim() - 1)))


@contextlib.contextmanager
def _suffix(model, block: int, inputs: Inputs):
    """Within the block, model(**inputs repeated G times) runs blocks >= `block` only (the earlier
    ones' output on `inputs` is cached). Yields True when the cache reproduces the full forward."""
    owner, attr = block_owner(model)
    blocks = getattr(owner, attr)
    if block == 0:
        yield False
        return
    captured = {}

    def grab(module, args, kwargs):
        captured["h"] = (args[0] if args else kwargs["hidden_states"]).detach()

    handle = blocks[block].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            full = model(**inputs).logits
    finally:
        handle.remove()
    setattr(owner, attr, nn.ModuleList([_Cached(captured["h"]), *list(blocks)[block:]]))
    try:
        with torch.no_grad():
            same = torch.allclose(model(**inputs).logits, full, atol=1e-5, rtol=1e-4)
        if not same:
            setattr(owner, attr, blocks)
        yield same
    finally:
        setattr(owner, attr, blocks)


@torch.no_grad()
def causal_effects(model, ffns: list[FFN], fault: Fault, values: dict[int, torch.Tensor],
                   candidates: dict[int, torch.Tensor] | None = None, batch: int = 256) -> tuple[dict[int, torch.Tensor], dict]:
    """Per block index: effect [len(candidates[block])] = fault - fault(do(neuron = values[block][neuron])).

    candidates: block -> neuron indices (default: all neurons of every block in `ffns`).
    Returns (effects, info) with info: baseline fault, which blocks used the cached prefix.
    """
    model.eval()
    m = n_rows(fault.inputs)
    base = float(fault.fn(logits_of(model, fault.inputs, batch).softmax(-1)[None])[0])
    candidates = candidates or {f.index: torch.arange(f.size) for f in ffns}
    group = max(1, batch // m)
    effects, cached = {}, {}
    for f in ffns:
        idx = candidates.get(f.index)
        if idx is None or len(idx) == 0:
            continue
        out = []
        with _suffix(model, f.index, fault.inputs) as cached[f.index]:
            for start in range(0, len(idx), group):
                chunk = idx[start:start + group]
                g = len(chunk)
                vals = values[f.index][chunk].to(torch.float32)

                def intervene(acts, chunk=chunk, vals=vals, g=g):
                    acts = acts.clone()
                    view = acts.view(g, m, *acts.shape[1:])
                    view[torch.arange(g), ..., chunk] = vals[:, None, None].to(acts.dtype)
                    return acts

                with ffn_pre_hooks(ffns, {f.index: intervene}):
                    logits = model(**{k: v.repeat(g, *([1] * (v.dim() - 1))) for k, v in fault.inputs.items()}).logits
                out.append(base - fault.fn(logits.softmax(-1).view(g, m, -1)))
        effects[f.index] = torch.cat(out)
    return effects, {"baseline_fault": base, "cached_prefix": {int(k): bool(v) for k, v in cached.items()}}


def first_order_effects(model, ffns: list[FFN], fault: Fault, values: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    """First-order estimate of causal_effects: -sum over rows and tokens of dfault/da * (v - a)."""
    acts = {}

    def keep(index):
        def fn(a):
            a.retain_grad()
            acts[index] = a
        return fn

    model.eval()
    with torch.enable_grad(), ffn_pre_hooks(ffns, {f.index: keep(f.index) for f in ffns}):
        fault.fn(model(**fault.inputs).logits.softmax(-1)[None]).sum().backward()
    model.zero_grad(set_to_none=True)
    return {i: -(a.grad * (values[i].to(a.dtype) - a.detach())).sum((0, 1)) for i, a in acts.items()}


def _fault_loss(model, task: str, repair: dict, gen: torch.Generator, batch: int) -> torch.Tensor:
    if task == "backdoor":
        triggered = repair["triggered_inputs"]
        idx = torch.randint(0, n_rows(triggered), (batch,), generator=gen)
        p = model(**_take(triggered, idx)).logits.softmax(-1)[:, int(repair["target_label"])]
        return -torch.log1p(-p.clamp(max=1 - 1e-6)).mean()
    clean, cfs = repair["clean_inputs"], repair["counterfactual_inputs"]
    idx = torch.randint(0, n_rows(clean), (batch,), generator=gen)
    probs = model(**_cat([_take(clean, idx)] + [_take(cf, idx) for cf in cfs])).logits.softmax(-1)
    return _gap(probs[None], 1 + len(cfs))[0]


def _fault_rate(model, task: str, repair: dict, batch: int) -> float:
    """ASR on the triggered repair inputs, or the counterfactual flip rate of the clean repair inputs."""
    if task == "backdoor":
        pred = logits_of(model, repair["triggered_inputs"], batch).argmax(-1)
        return float((pred == int(repair["target_label"])).float().mean())
    pred = logits_of(model, repair["clean_inputs"], batch).argmax(-1)
    flips = torch.stack([logits_of(model, cf, batch).argmax(-1) != pred for cf in repair["counterfactual_inputs"]])
    return float(flips.any(0).float().mean())


def optimise_factors(model, ffns: list[FFN], selected: dict[int, torch.Tensor], task: str, repair: dict,
                     p: dict, seed: int) -> dict[int, torch.Tensor]:
    """Scaling factors of the selected neurons (block -> [k]), everything else frozen."""
    factors = {i: nn.Parameter(torch.ones(len(idx))) for i, idx in selected.items() if len(idx)}
    lo, hi = p["bounds"]

    def scale(index):
        idx = selected[index]
        return lambda a: a.index_copy(-1, idx, a[..., idx] * factors[index].to(a.dtype))

    clean, labels = repair["clean_inputs"], as_labels(repair["clean_labels"])
    gen = torch.Generator().manual_seed(seed)
    frozen = [(q, q.requires_grad) for q in model.parameters()]
    for q, _ in frozen:
        q.requires_grad_(False)
    opt = torch.optim.Adam(list(factors.values()), lr=p["lr"])
    model.eval()  # the repaired model is judged without dropout; only the factors move
    try:
        with torch.enable_grad(), ffn_pre_hooks(ffns, {i: scale(i) for i in factors}):
            for _ in range(p["steps"]):
                idx = torch.randint(0, n_rows(clean), (p["batch_size"],), generator=gen)
                ce = nn.functional.cross_entropy(model(**_take(clean, idx)).logits, labels[idx])
                loss = ce + p["fault_weight"] * _fault_loss(model, task, repair, gen, p["batch_size"])
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    for f in factors.values():
                        f.clamp_(lo, hi)
    finally:
        for q, flag in frozen:
            q.requires_grad_(flag)
    return {i: f.detach().clone() for i, f in factors.items()}


@torch.no_grad()
def fold(ffns: list[FFN], selected: dict[int, torch.Tensor], factors: dict[int, torch.Tensor]) -> None:
    """Multiply each selected neuron's down-projection column by its factor (= scaling its activation)."""
    by_index = {f.index: f for f in ffns}
    for i, s in factors.items():
        by_index[i].down.weight[:, selected[i]] *= s.to(by_index[i].down.weight.dtype)


def localise(model, ffns: list[FFN], fault: Fault, values: dict[int, torch.Tensor], p: dict) -> tuple[list, dict]:
    """[(effect, block, neuron)] sorted by effect (largest first) and info."""
    total = sum(f.size for f in ffns)
    candidates, screened = None, False
    if total > p["max_candidates"]:
        est = first_order_effects(model, ffns, fault, values)
        flat = sorted(((float(e), i, n) for i, es in est.items() for n, e in enumerate(es.tolist())), reverse=True)
        keep = flat[: p["max_candidates"]]
        candidates = {f.index: torch.tensor(sorted(n for _, i, n in keep if i == f.index), dtype=torch.long)
                      for f in ffns}
        screened = True
    effects, info = causal_effects(model, ffns, fault, values, candidates, p["batch_size"])
    ranked = []
    for i, es in effects.items():
        idx = candidates[i] if candidates else torch.arange(len(es))
        ranked += [(float(e), i, int(n)) for e, n in zip(es.tolist(), idx.tolist())]
    ranked.sort(key=lambda t: (-t[0], t[1], t[2]))
    return ranked, {**info, "candidates": total, "intervened": len(ranked), "pre_screened": screened}


def apply(model, repair: dict, params: dict | None = None, seed: int = 0) -> Defended:
    p = merged(DEFAULTS, params)
    task = task_of(repair)
    clean, labels = need(repair, "clean_inputs", "clean_labels", method=NAME)
    if task == "backdoor":
        triggered, target = need(repair, "triggered_inputs", "target_label", method=NAME)
    else:
        counterfactuals = list(need(repair, "counterfactual_inputs", method=NAME)[0])
    if p["intervention"] not in ("clean_mean", "zero"):
        raise AtPatchError(f"{NAME}: intervention must be clean_mean or zero, got {p['intervention']!r}")
    with Timer() as timer:
        model = working_copy(model)
        ffns = pick_layers(model, p["layers"])
        stats = ffn_stats(model, ffns, clean, p["batch_size"])
        values = {i: (s["mean"] if p["intervention"] == "clean_mean" else torch.zeros_like(s["mean"]))
                  for i, s in stats.items()}
        if task == "backdoor":
            fault = backdoor_fault(rows(triggered, 0, p["max_inputs"]), int(target))
        else:
            fault = fairness_fault(model, clean, counterfactuals, p["max_inputs"], p["batch_size"])
        ranked, info = localise(model, ffns, fault, values, p)
        top = ranked[: p["top_k"]]
        selected = {f.index: torch.tensor(sorted(n for _, i, n in top if i == f.index), dtype=torch.long) for f in ffns}
        selected = {i: idx for i, idx in selected.items() if len(idx)}
        before = {"fault_rate": _fault_rate(model, task, repair, p["batch_size"]),
                  "clean_acc": accuracy(model, clean, labels, p["batch_size"])}
        factors = optimise_factors(model, ffns, selected, task, repair, p["optimise"], seed)
        fold(ffns, selected, factors)
        after = {"fault_rate": _fault_rate(model, task, repair, p["batch_size"]),
                 "clean_acc": accuracy(model, clean, labels, p["batch_size"])}
    factor_of = {(i, int(n)): float(s) for i, idx in selected.items() for n, s in zip(idx.tolist(), factors[i].tolist())}
    changes = {
        "task": task,
        "fault_measure": fault.description,
        "neurons": [{"layer": i, "neuron": n, "effect": e, "factor": factor_of[(i, n)]} for e, i, n in top],
        "localisation": info,
        "optimiser": "Adam on per-neuron scaling factors (gradient-based; CARE used PSO)",
        "repair_set": {"fault_rate": {"before": before["fault_rate"], "after": after["fault_rate"]},
                       "clean_acc": {"before": before["clean_acc"], "after": after["clean_acc"]}},
        "params": p,
    }
    return Defended(NAME, plain_predictor(model, p["batch_size"]), timer.seconds, changes, model)
