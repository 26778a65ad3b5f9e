"""Models loaded once per process from where the driver loaded them: what a shard worker runs.

A sharded pass must not ship the victim with every shard, nor load it for every shard. On the driver,
`spec_of` turns a loaded classifier, a Detector or a PatchedClassifier into a small picklable spec: its
directory, attention implementation and a fingerprint of its weights (anything else passes through
unchanged). On a worker, `materialize` returns the object for a spec, loading it the first time this
process sees the spec and reusing it for every later shard. The fingerprint is checked after loading,
so a shard never runs on weights that differ from the driver's (files rewritten since, or a model
edited in memory). `loads()` counts this process's loads, per model.
"""

from __future__ import annotations

import collections
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from atpatch.core.detector import Detector
from atpatch.core.errors import AtPatchError
from atpatch.core.patched import PatchedClassifier

# Specs kept per process. A worker of a long-lived cluster serves run after run: the oldest model goes
# once more than this many are cached (a pass needs at most a victim, a detector and a patch or two).
MAX_CACHED = 8


@dataclass(frozen=True)
class ModelSpec:
    directory: str
    attn_implementation: str
    fingerprint: str


@dataclass(frozen=True)
class DetectorSpec:
    directory: str
    fingerprint: str


@dataclass(frozen=True)
class PatchSpec:
    model: ModelSpec
    detector: DetectorSpec
    mode: str
    patch_layers: tuple[int, ...]
    benign_value: str


Spec = ModelSpec | DetectorSpec | PatchSpec

_cache: collections.OrderedDict[Spec, Any] = collections.OrderedDict()
_loads: collections.Counter[str] = collections.Counter()


def fingerprint(module: torch.nn.Module) -> str:
    """sha256 of a module's state (names, dtypes, shapes, bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _directory(path: Any, what: str) -> str:
    if not path or not Path(path).is_dir():
        raise AtPatchError(f"cannot shard a pass over a {what} that was not loaded from a directory "
                           f"(got {path!r}): a worker loads it from where the driver did")
    return str(Path(path).resolve())


def spec_of(obj: Any) -> Any:
    """The spec a worker rebuilds `obj` from, for a classifier, Detector or PatchedClassifier; else `obj`."""
    from transformers import PreTrainedModel

    if isinstance(obj, PatchedClassifier):
        return PatchSpec(spec_of(obj.model), spec_of(obj.detector), obj.mode, tuple(obj.patch_layers), obj.benign_value)
    if isinstance(obj, Detector):
        return DetectorSpec(_directory(obj.source_dir, "detector"), fingerprint(obj))
    if isinstance(obj, PreTrainedModel):
        return ModelSpec(_directory(obj.name_or_path, "model"), obj.config._attn_implementation, fingerprint(obj))
    return obj


def _load(spec: Spec) -> Any:
    from atpatch.scenarios.models.loading import load_classifier

    if isinstance(spec, PatchSpec):  # built from cached parts: no file is read
        return PatchedClassifier(materialize(spec.model), materialize(spec.detector), mode=spec.mode,
                                 patch_layers=list(spec.patch_layers), benign_value=spec.benign_value)
    if isinstance(spec, ModelSpec):
        obj, label = (load_classifier(spec.directory, attn_implementation=spec.attn_implementation),
                      f"model {spec.directory} ({spec.attn_implementation})")
    else:
        obj, label = Detector.load(spec.directory), f"detector {spec.directory}"
    got = fingerprint(obj)
    if got != spec.fingerprint:
        raise AtPatchError(f"{spec.directory}: the weights loaded there (sha256 {got[:12]}) differ from the driver's "
                           f"({spec.fingerprint[:12]}): the files changed after the driver loaded them, or the "
                           "driver's copy was changed in memory; a shard would not reproduce the serial run")
    _loads[label] += 1
    return obj


def materialize(spec: Any) -> Any:
    """The object for `spec`, loaded on first use in this process (anything that is not a spec: itself)."""
    if not isinstance(spec, (ModelSpec, DetectorSpec, PatchSpec)):
        return spec
    if spec in _cache:
        _cache.move_to_end(spec)
        return _cache[spec]
    obj = _cache[spec] = _load(spec)
    while len(_cache) > MAX_CACHED:
        _cache.popitem(last=False)
    return obj


def loads() -> dict[str, int]:
    """How many times this process loaded each model (label: kind, directory, attention implementation)."""
    return dict(_loads)
