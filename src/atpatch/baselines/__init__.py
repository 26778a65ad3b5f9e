"""Baseline defenses that AtPatch is measured against (issue 5), all behind one interface.

    from atpatch.baselines import make
    defended = make("fine_pruning")(victim, repair, params, seed=0)   # or BASELINES[name](...)
    labels = defended.predict(test_inputs)                            # np.ndarray [N]
    defended.repair_seconds, defended.changes, defended.name

`apply(model, repair, params, seed) -> Defended`. The victim is never modified: methods that edit
weights work on a deep copy (`Defended.model`), so the caller can hand the same victim to every
method. `params` is the method's section of params.yaml; missing keys take the module's `DEFAULTS`
(nested dicts merged key by key), and `Defended.changes["params"]` holds what was used.

`repair` holds what a defense may use, all as model-input dicts of batch-first tensors (see
`REPAIR_KEYS`). Give every method the same budget as AtPatch's debugging set: its clean inputs (with
labels) as `clean_inputs`, its triggered inputs as `triggered_inputs`, its held-out calibration
inputs as `calib_inputs`; for fairness its inputs, their counterfactuals and the sensitive feature.
Each module's `USES` says which keys it reads:

    none                 nothing
    fine_pruning         clean_inputs, clean_labels (a defender with clean data only, as in Liu et al.)
    care                 clean_inputs, clean_labels, and the faulty behaviour: triggered_inputs +
                         target_label (backdoor) or counterfactual_inputs (fairness)
    attention_block      calib_inputs (clean; default clean_inputs) to set the outlier threshold at
                         params["fpr"], AtPatch's calibration FPR; layout
    threshold_optimizer  clean_inputs, clean_labels, sensitive; and the sensitive feature at predict time

The shared neuron helpers below (`ffn_layers`, `ffn_stats`, `ffn_pre_hooks`) locate the feed-forward
("intermediate") neurons of ViT/DeiT, BERT/RoBERTa, DistilBERT and the feature-token tabular model:
a neuron is one input of the layer's down projection (after the activation), so hooks and weight
edits are the same for every family.
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from atpatch.core.errors import AtPatchError, ShapeError, UnsupportedModelError
from atpatch.eval.evaluation import Inputs, n_rows, rows

REPAIR_KEYS = {
    "clean_inputs": "Inputs, N rows: small clean set (AtPatch's debugging set's clean inputs)",
    "clean_labels": "int [N]: true labels of clean_inputs",
    "triggered_inputs": "Inputs: the debugging set's triggered inputs (backdoor scenarios)",
    "target_label": "int: the attack's target class (backdoor scenarios)",
    "counterfactual_inputs": "list of Inputs, each N rows aligned with clean_inputs, only the protected "
                             "attribute changed (fairness scenarios)",
    "sensitive": "[N] the sensitive feature of clean_inputs (fairness scenarios)",
    "calib_inputs": "Inputs: held-out clean inputs to calibrate a detection threshold (default clean_inputs)",
    "layout": "atpatch.TokenLayout: positions that may be flagged (default atpatch.ops.patching.layout_for(model))",
}


@dataclass
class Defended:
    """A victim with a defense applied.

    predict(inputs, sensitive=None) -> int labels [N]. `changes` says what was changed (pruned
    neurons, scaled neurons and factors, thresholds, ...) plus the params used; `model` is the edited
    copy where the defense edits weights (save it with `save_pretrained`), else the victim. `flagged`
    holds the last predict's per-input flags [N] for input-level defenses (None otherwise).
    """

    name: str
    predict_fn: Callable[[Inputs, Any], np.ndarray]
    repair_seconds: float
    changes: dict = field(default_factory=dict)
    model: nn.Module | None = None
    needs_sensitive: bool = False
    flagged: np.ndarray | None = None

    def predict(self, inputs: Inputs, sensitive=None) -> np.ndarray:
        if self.needs_sensitive and sensitive is None:
            raise AtPatchError(f"{self.name}: predict needs the sensitive feature of every input "
                               "(predict(inputs, sensitive=...)); AtPatch does not")
        return np.asarray(self.predict_fn(inputs, sensitive))


# -- params and repair data ------------------------------------------------------------------------

def merged(defaults: dict, params: dict | None) -> dict:
    """defaults updated by params, nested dicts merged key by key; unknown keys are an error."""
    params = dict(params or {})
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise AtPatchError(f"unknown params {unknown}; known: {sorted(defaults)}")
    out = copy.deepcopy(defaults)
    for key, value in params.items():
        if isinstance(out[key], dict) and isinstance(value, dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def need(repair: dict, *keys: str, method: str) -> list:
    """repair[key] for each key; AtPatchError naming the method and the missing keys."""
    missing = [k for k in keys if repair.get(k) is None]
    if missing:
        raise AtPatchError(f"{method}: the repair data lacks {missing} ({'; '.join(f'{k}: {REPAIR_KEYS[k]}' for k in missing)})")
    return [repair[k] for k in keys]


def task_of(repair: dict) -> str:
    """'backdoor' when the repair data has triggered inputs, 'fairness' when it has counterfactuals."""
    if repair.get("triggered_inputs") is not None:
        return "backdoor"
    if repair.get("counterfactual_inputs") is not None:
        return "fairness"
    raise AtPatchError("the repair data has neither triggered_inputs (backdoor) nor counterfactual_inputs (fairness)")


def as_labels(labels) -> torch.Tensor:
    return torch.as_tensor(np.asarray(labels), dtype=torch.long)


def working_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode (the caller's victim stays as it is)."""
    return copy.deepcopy(model).eval()


class Timer:
    """with Timer() as t: ...; t.seconds"""

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


@torch.no_grad()
def logits_of(model: nn.Module, inputs: Inputs, batch: int = 256) -> torch.Tensor:
    """[N, C] logits in eval mode, batch by batch."""
    was = model.training
    model.eval()
    out = [model(**rows(inputs, s, s + batch)).logits for s in range(0, n_rows(inputs), batch)]
    model.train(was)
    return torch.cat(out)


def accuracy(model: nn.Module, inputs: Inputs, labels, batch: int = 256) -> float:
    return float((logits_of(model, inputs, batch).argmax(-1) == as_labels(labels)).float().mean())


def plain_predictor(model: nn.Module, batch: int = 256) -> Callable[[Inputs, Any], np.ndarray]:
    return lambda inputs, sensitive=None: logits_of(model, inputs, batch).argmax(-1).numpy()


# -- feed-forward neurons ---------------------------------------------------------------------------

# (up projection, down projection) attribute paths inside one transformer block, by family.
_FFN_PATHS = (("intermediate.dense", "output.dense"),  # BERT, RoBERTa, the tabular model
              ("mlp.fc1", "mlp.fc2"),                  # ViT, DeiT (transformers 5)
              ("ffn.lin1", "ffn.lin2"))                # DistilBERT


@dataclass(frozen=True)
class FFN:
    """One block's feed-forward layer: neuron i = row i of `up`, column i of `down`."""

    index: int
    block: nn.Module
    up: nn.Linear
    down: nn.Linear

    @property
    def size(self) -> int:
        return self.down.in_features


def block_owner(model: nn.Module) -> tuple[nn.Module, str]:
    """(module, attribute) whose ModuleList holds the transformer blocks: encoder.layer (BERT family),
    transformer.layer (DistilBERT) or the base model's own .layers (ViT, DeiT in transformers 5)."""
    base = getattr(model, "base_model", model)
    for owner, attr in ((getattr(base, "encoder", None), "layer"), (getattr(base, "transformer", None), "layer"),
                        (base, "layers"), (getattr(base, "encoder", None), "layers")):
        blocks = getattr(owner, attr, None)
        if isinstance(blocks, nn.ModuleList) and len(blocks):
            return owner, attr
    raise UnsupportedModelError(f"{type(model).__name__}: no transformer block list (encoder.layer, "
                                "transformer.layer, layers) found")


def block_list(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a Hugging Face encoder classifier, in order."""
    owner, attr = block_owner(model)
    return getattr(owner, attr)


def ffn_layers(model: nn.Module) -> list[FFN]:
    """Every block's feed-forward layer, in order. Raises UnsupportedModelError if a block has none."""
    out = []
    for i, block in enumerate(block_list(model)):
        for up_path, down_path in _FFN_PATHS:
            try:
                up, down = block.get_submodule(up_path), block.get_submodule(down_path)
            except AttributeError:
                continue
            if isinstance(up, nn.Linear) and isinstance(down, nn.Linear) and up.out_features == down.in_features:
                out.append(FFN(i, block, up, down))
                break
        else:
            raise UnsupportedModelError(f"{type(model).__name__} block {i} ({type(block).__name__}): no feed-forward "
                                        f"up/down projections at {[p for p in _FFN_PATHS]}")
    return out


def pick_layers(model: nn.Module, layers) -> list[FFN]:
    """layers: None (all), an int k (the last k blocks) or a list of block indices."""
    ffns = ffn_layers(model)
    if layers is None:
        return ffns
    if isinstance(layers, int):
        if not 1 <= layers <= len(ffns):
            raise AtPatchError(f"layers: the last k blocks needs 1 <= k <= {len(ffns)}, got {layers}")
        return ffns[-layers:]
    bad = [i for i in layers if not -len(ffns) <= int(i) < len(ffns)]
    if bad:
        raise AtPatchError(f"layers: block indices {bad} out of range for {len(ffns)} blocks")
    return [ffns[int(i)] for i in layers]


@contextlib.contextmanager
def ffn_pre_hooks(ffns: list[FFN], fns: dict[int, Callable[[torch.Tensor], torch.Tensor | None]]) -> Iterator[None]:
    """Call fns[block index](activations [B, T, I]) on the input of that block's down projection;
    a returned tensor replaces the activations. Hooks are removed on exit."""
    handles = []
    by_index = {f.index: f for f in ffns}
    try:
        for index, fn in fns.items():
            def hook(module, args, fn=fn):
                new = fn(args[0])
                return None if new is None else (new, *args[1:])
            handles.append(by_index[index].down.register_forward_pre_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def token_mask(inputs: Inputs, acts: torch.Tensor) -> torch.Tensor:
    """[B, T] float: 1 for real tokens (attention_mask where given and shaped like the tokens)."""
    mask = inputs.get("attention_mask")
    if mask is None or tuple(mask.shape) != tuple(acts.shape[:2]):
        return torch.ones(acts.shape[:2], dtype=acts.dtype)
    return mask.to(acts.dtype)


@torch.no_grad()
def ffn_stats(model: nn.Module, ffns: list[FFN], inputs: Inputs, batch: int = 256) -> dict[int, dict[str, torch.Tensor]]:
    """Per block index: "mean" and "mean_abs" activation [I] of each neuron over the real tokens of `inputs`."""
    sums = {f.index: [torch.zeros(f.size, dtype=torch.float64), torch.zeros(f.size, dtype=torch.float64)] for f in ffns}
    count = [0.0]
    current: dict = {}

    def collect(index):
        def fn(acts):
            m = token_mask(current["inputs"], acts)[..., None]
            sums[index][0] += (acts * m).sum((0, 1)).double()
            sums[index][1] += (acts.abs() * m).sum((0, 1)).double()
            if index == ffns[0].index:
                count[0] += float(m.sum())
        return fn

    was = model.training
    model.eval()
    with ffn_pre_hooks(ffns, {f.index: collect(f.index) for f in ffns}):
        for s in range(0, n_rows(inputs), batch):
            current["inputs"] = rows(inputs, s, s + batch)
            model(**current["inputs"])
    model.train(was)
    if count[0] == 0:
        raise ShapeError("ffn_stats: no real tokens in the inputs")
    return {i: {"mean": (v[0] / count[0]).float(), "mean_abs": (v[1] / count[0]).float()} for i, v in sums.items()}


# -- registry -----------------------------------------------------------------------------------------

from atpatch.baselines import attention_block, care, fine_pruning, none, threshold_optimizer  # noqa: E402

BASELINES: dict[str, Callable[..., Defended]] = {
    "none": none.apply,
    "fine_pruning": fine_pruning.apply,
    "care": care.apply,
    "attention_block": attention_block.apply,
    "threshold_optimizer": threshold_optimizer.apply,
}
MODULES = {"none": none, "fine_pruning": fine_pruning, "care": care, "attention_block": attention_block,
           "threshold_optimizer": threshold_optimizer}


def make(name: str) -> Callable[..., Defended]:
    """The `apply(model, repair, params, seed) -> Defended` of baseline `name`."""
    if name not in BASELINES:
        raise AtPatchError(f"unknown baseline {name!r}; known: {sorted(BASELINES)}")
    return BASELINES[name]
