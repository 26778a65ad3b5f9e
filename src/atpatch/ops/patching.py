"""Build a patch (detector + patch config) for any supported Hugging Face classifier and a debugging set.

This is what the pipeline's `extract` and `train_detector` stages do, as library functions that take
a model directory and a debugging-set file instead of params.yaml sections (used by `atpatch patch`):

    from atpatch.ops.patching import build_patch
    build_patch("my-vit/", "debug.safetensors", "my-patch/")   # -> my-patch/detector/, patch.json, metrics.json,
                                                                 #    mediation.json (atpatch.eval.mediation)

Debugging-set file format (`DEBUG_SET_FORMAT`): one safetensors file holding

- the model inputs, under the names the model's forward takes, already preprocessed:
  `pixel_values` float [N, C, H, W] (image models), or `input_ids` int [N, T] with optional
  `attention_mask` int [N, T] and `token_type_ids` (text models), or `inputs_embeds` float [N, T, D]
  with optional `attention_mask` (a bare encoder over feature tokens);
- `token_labels` int [N, K]: 1 where the token is a known fault carrier (trigger patch or word piece,
  protected attribute), 0 elsewhere; K is the model's token count (ViT: 1 + patches, with position 0
  the CLS token; text: T). Special and padding tokens are never candidates, whatever their label;
- optional `triggered` bool/int [N]: which inputs carry a fault (default: any token label is 1);
- optional `calib` bool/int [N]: held-out clean inputs used only to calibrate the threshold
  (default: a seeded half of the clean inputs). The rest ("fit") trains the detector.

It needs at least one labelled token in the fit part, one clean fit input, and one calib input.
"""

from __future__ import annotations

from pathlib import Path

import torch

from atpatch.core.errors import AtPatchError
from atpatch.core.detector import DETECTOR_DEFAULTS
from atpatch.core.features import KINDS, TokenLayout, record, select_kind
from atpatch.eval import rowwise

MODEL_INPUTS = ("pixel_values", "input_ids", "attention_mask", "token_type_ids", "inputs_embeds")
PRIMARY_INPUTS = ("pixel_values", "input_ids", "inputs_embeds")
IMAGE_MODEL_TYPES = {"vit": 1, "deit": 2}  # model type -> leading special tokens (CLS, distillation)

DEBUG_SET_FORMAT = __doc__[__doc__.index("Debugging-set file format"):].strip()


def layout_for(model) -> TokenLayout:
    """Which positions of `model`'s inputs may be flagged: image models skip CLS (and DeiT's
    distillation token); text models skip their special tokens (pad/cls/sep/bos/eos ids in the config)."""
    config = model.config
    if config.model_type in IMAGE_MODEL_TYPES:
        return TokenLayout(prefix=IMAGE_MODEL_TYPES[config.model_type])
    ids = {getattr(config, name, None) for name in
           ("pad_token_id", "cls_token_id", "sep_token_id", "bos_token_id", "eos_token_id")}
    return TokenLayout(prefix=1, special_ids=tuple(sorted(i for i in ids if isinstance(i, int))))


def input_kind(model) -> str:
    """The serving input kind of a model ("image" or "text")."""
    return "image" if model.config.model_type in IMAGE_MODEL_TYPES else "text"


def _flag(tensor: torch.Tensor | None, n: int, name: str, path: Path) -> torch.Tensor | None:
    if tensor is None:
        return None
    if tuple(tensor.shape) != (n,):
        raise AtPatchError(f"{path}: tensor {name!r}: expected shape ({n},), got {tuple(tensor.shape)}")
    return tensor.bool()


def load_debug_set(path: str | Path, seed: int = 0) -> dict:
    """Read and check a debugging-set file (format: DEBUG_SET_FORMAT).

    Returns {"inputs": {name: tensor}, "token_labels": [N, K] long, "triggered": [N] bool,
    "calib": [N] bool}; AtPatchError naming the file and the problem otherwise.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise AtPatchError(f"{path}: debugging set not found (expected a .safetensors file)")
    try:
        raw = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise AtPatchError(f"{path}: not a readable safetensors file ({exc})") from exc
    inputs = {k: raw[k] for k in MODEL_INPUTS if k in raw}
    primary = [k for k in PRIMARY_INPUTS if k in inputs]
    if len(primary) != 1:
        raise AtPatchError(f"{path}: expected exactly one of {list(PRIMARY_INPUTS)} as the model input, "
                           f"got {primary or 'none'} (tensors present: {sorted(raw)})")
    if "token_labels" not in raw:
        raise AtPatchError(f"{path}: tensor 'token_labels' [N, K] is missing (tensors present: {sorted(raw)})")
    labels = raw["token_labels"]
    n = len(inputs[primary[0]])
    if labels.dim() != 2 or len(labels) != n:
        raise AtPatchError(f"{path}: tensor 'token_labels': expected shape ({n}, K), got {tuple(labels.shape)}")
    if labels.is_floating_point() or not bool(((labels == 0) | (labels == 1)).all()):
        raise AtPatchError(f"{path}: tensor 'token_labels': expected integers 0 or 1")
    for name, tensor in inputs.items():
        if len(tensor) != n:
            raise AtPatchError(f"{path}: tensor {name!r} has {len(tensor)} rows, {primary[0]!r} has {n}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise AtPatchError(f"{path}: tensor {name!r} holds NaN or infinite values")
    labels = labels.long()
    triggered = _flag(raw.get("triggered"), n, "triggered", path)
    triggered = labels.any(1) if triggered is None else triggered
    calib = _flag(raw.get("calib"), n, "calib", path)
    if calib is None:
        clean = torch.nonzero(~triggered).squeeze(1)
        order = clean[torch.randperm(len(clean), generator=torch.Generator().manual_seed(seed))]
        calib = torch.zeros(n, dtype=torch.bool)
        calib[order[: len(order) // 2]] = True
    if bool((calib & triggered).any()):
        raise AtPatchError(f"{path}: tensor 'calib' marks triggered inputs; calibration inputs must be clean")
    fit = ~calib
    problems = [what for what, ok in (("a labelled token (token_labels == 1) among the fit inputs",
                                       bool(labels[fit].any())),
                                      ("a clean fit input", bool((fit & ~triggered).any())),
                                      ("a calib input", bool(calib.any()))) if not ok]
    if problems:
        raise AtPatchError(f"{path}: the debugging set needs {' and '.join(problems)} "
                           f"({n} inputs, {int(triggered.sum())} triggered, {int(calib.sum())} calib)")
    return {"inputs": inputs, "token_labels": labels, "triggered": triggered, "calib": calib}


def extract_features(model, inputs: dict, layout: TokenLayout, batch: int = 256, kinds=KINDS,
                     progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Column features [N, K, L, F] of every layer and the candidate mask [N, K], batch by batch;
    sharded inside atpatch.eval.rowwise.sharded (stage `extract` through flows/sharded.py)."""
    return rowwise.run(_extract_features, {"inputs": inputs}, model=model, layout=layout, batch=batch,
                       kinds=tuple(kinds), progress=progress)


def _extract_features(model, inputs: dict, layout: TokenLayout, batch: int, kinds, progress: bool):
    from tqdm.auto import tqdm

    n = len(next(iter(inputs.values())))
    feats, cands = [], []
    for start in tqdm(range(0, n, batch), desc="extract", leave=False, disable=not progress):
        rec = record(model, {k: v[start:start + batch] for k, v in inputs.items()}, layout, kinds=kinds)
        feats.append(rec.stacked())
        cands.append(rec.candidate)
    return torch.cat(feats), torch.cat(cands)


def fit_detector(data: dict, p: dict, model_type: str, heads: int, seed: int,
                 layout: TokenLayout, progress: bool = True) -> tuple:
    """Fit the detector, estimate u[l, h] and calibrate per input; return (detector, training metrics).

    data: {"features" [N, K, L, F], "candidate" [N, K], "token_labels" [N, K], "triggered" [N],
    "calib" [N]}; p: a train_detector section (layers, kinds, network, calibration_fpr, min_threshold,
    optional recall_holdout / calibration_recall).
    Stage `train_detector`'s `fit_detector` is this with layout=VISION_LAYOUT.
    """
    from atpatch.core.detector import Detector, DetectorConfig
    from atpatch.eval.metrics import detection_metrics, input_flag_rate
    from atpatch.core.patch import benign_attention

    feats, cand, labels = data["features"], data["candidate"].bool(), data["token_labels"].long()
    calib, triggered = data["calib"].bool(), data["triggered"].bool()
    held = recall_holdout(triggered & ~calib, p.get("recall_holdout") or 0.0, seed)
    fit = ~calib & ~held
    n_layers = feats.shape[2]
    layers = list(range(n_layers)) if p["layers"] is None else list(p["layers"])
    network = dict(p["network"])
    # positional: true -> the token count of this model's inputs (a fixed grid; atpatch.core.detector)
    network["positions"] = feats.shape[1] if network.pop("positional", False) else 0
    config = DetectorConfig(layers=layers, heads=heads, kinds=list(p["kinds"]), model_type=model_type,
                            layout=layout.to_dict(), seed=seed, **network)
    det = Detector(config)
    x = feats[:, :, layers]  # [N, K, L', F]
    mask = cand & fit[:, None]
    clean_fit = fit & ~triggered
    if config.positions:
        det.fit_positions(x[clean_fit], cand[clean_fit])
    losses = det.fit(det.prepare(x)[mask], labels[mask], progress=progress)
    mass = select_kind(feats[clean_fit], heads, tuple(p["kinds"]), "mean")  # [N, K, L, H]
    det.benign = benign_attention(mass, cand[clean_fit], labels[clean_fit])
    faulty = (x[held], cand[held] & labels[held].bool()) if bool(held.any()) else None
    det.calibrate(x[calib], cand[calib], fpr=p["calibration_fpr"], min_threshold=p["min_threshold"],
                  faulty=faulty, recall=p.get("calibration_recall"))
    scores, flagged = det.score(x[fit]), det.flags(det.logits(x[fit]).detach())
    metrics = {**losses, "threshold": det.config.threshold,
               "calib_input_flag_rate": det.config.calibration["flagged_rate"],
               **({"recall_holdout_inputs": int(held.sum()),
                   "recall_holdout_flag_rate": det.config.calibration["faulty_flagged_rate"]} if faulty else {}),
               **{f"fit_{k}": v for k, v in detection_metrics(
                   scores[cand[fit]].numpy(), labels[fit][cand[fit]].numpy(),
                   flagged[cand[fit]].numpy()).items()},
               "fit_input_flag_rate_triggered": input_flag_rate(
                   (flagged & cand[fit])[triggered[fit]].numpy())}
    return det, metrics


def recall_holdout(faulty: torch.Tensor, share: float, seed: int) -> torch.Tensor:
    """[N] bool: a seeded `share` of the `faulty` inputs, kept out of training to calibrate recall."""
    if not 0.0 <= share < 1.0:
        raise AtPatchError(f"train_detector.recall_holdout: expected a share in [0, 1), got {share}")
    idx = torch.nonzero(faulty).squeeze(1)
    idx = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed))]
    held = torch.zeros_like(faulty)
    held[idx[: int(share * len(idx))]] = True
    return held


def detector_settings(overrides: dict | None = None) -> dict:
    """DETECTOR_DEFAULTS with `overrides` merged in (the `network` sub-dict key by key)."""
    out = {**DETECTOR_DEFAULTS, **{k: v for k, v in (overrides or {}).items() if k != "network"}}
    out["network"] = {**DETECTOR_DEFAULTS["network"], **((overrides or {}).get("network") or {})}
    unknown = set(out) - set(DETECTOR_DEFAULTS)
    if unknown:
        raise AtPatchError(f"detector settings: unknown keys {sorted(unknown)} (known: {sorted(DETECTOR_DEFAULTS)})")
    return out


CANDIDATE_KEYS = ("positions", "candidate_ids", "flag_as_group", "flag_same_token")


def narrowed_layout(layout: TokenLayout, candidates: dict | None) -> TokenLayout:
    """`layout` with the candidates narrowed: {"positions": [...], "candidate_ids": [...],
    "flag_as_group": bool, "flag_same_token": bool} (any subset; see TokenLayout), e.g. a protected
    attribute's tokens, or a trigger word's every copy."""
    from dataclasses import replace

    candidates = candidates or {}
    unknown = set(candidates) - set(CANDIDATE_KEYS)
    if unknown:
        raise AtPatchError(f"candidates: unknown keys {sorted(unknown)} (known: {list(CANDIDATE_KEYS)})")
    bad = [p for p in candidates.get("positions", ()) if int(p) < layout.prefix]
    if bad:
        raise AtPatchError(f"candidates.positions: {bad} fall on the model's leading special tokens "
                           f"(positions < {layout.prefix} are never flagged)")
    return replace(layout, positions=tuple(int(p) for p in candidates.get("positions", ())),
                   candidate_ids=tuple(int(i) for i in candidates.get("candidate_ids", ())),
                   flag_as_group=bool(candidates.get("flag_as_group", False)),
                   flag_same_token=bool(candidates.get("flag_same_token", layout.flag_same_token)))


def build_patch(model_dir: str | Path, debug_set: str | Path, out_dir: str | Path, settings: dict | None = None,
                patch: dict | None = None, seed: int = 0, batch: int = 256, progress: bool = True,
                candidates: dict | None = None, target: int | None = None) -> dict:
    """A user's checkpoint + debugging set -> `out_dir/detector/` (Detector.save), `out_dir/patch.json`
    (mode, patch_layers, benign_value, input) and `out_dir/metrics.json` (training-side metrics).

    settings: overrides of DETECTOR_DEFAULTS; patch: overrides of PATCH_DEFAULTS; candidates: which
    tokens may be flagged (`narrowed_layout`; default: every real token); target: the backdoor's target class
    for the attention-mediation check (default: the faulty inputs' most frequent prediction), whose result goes
    to `out_dir/mediation.json`. Returns {"detector", "patch_config", "metrics", "config", "mediation"}
    (paths as strings, config as written).
    """
    from atpatch.io import atomic_dir, write_json_atomic
    from atpatch.scenarios.models.loading import load_classifier
    from atpatch.core.patched import BENIGN_VALUES, MODES, PATCH_DEFAULTS

    p = detector_settings(settings)
    config = {**PATCH_DEFAULTS, **(patch or {})}
    if config["mode"] not in MODES:
        raise AtPatchError(f"patch mode: expected one of {MODES}, got {config['mode']!r}")
    if config["benign_value"] not in BENIGN_VALUES:
        raise AtPatchError(f"benign value: expected one of {BENIGN_VALUES}, got {config['benign_value']!r}")
    model = load_classifier(model_dir)
    data = load_debug_set(debug_set, seed=seed)
    layout = narrowed_layout(layout_for(model), candidates)
    if layout.candidate_ids and "input_ids" not in data["inputs"]:
        raise AtPatchError(f"candidates.candidate_ids: token ids need a text model's input_ids; {debug_set} holds "
                           f"{sorted(data['inputs'])} (use positions instead)")
    try:
        features, candidate = extract_features(model, data["inputs"], layout, batch, tuple(p["kinds"]), progress)
    except (TypeError, ValueError, RuntimeError, IndexError) as exc:
        names = {k: tuple(v.shape) for k, v in data["inputs"].items()}
        raise AtPatchError(f"{debug_set}: the model in {model_dir} cannot run on inputs {names} ({exc})") from exc
    if tuple(features.shape[:2]) != tuple(data["token_labels"].shape):
        raise AtPatchError(f"{debug_set}: tensor 'token_labels': expected shape {tuple(features.shape[:2])} "
                           f"(inputs x the model's tokens), got {tuple(data['token_labels'].shape)}")
    if not bool((data["token_labels"].bool() & candidate & ~data["calib"][:, None]).any()):
        raise AtPatchError(f"{debug_set}: no labelled token of the fit inputs may be flagged (each is a special or "
                           "padding token, or outside the given candidates); label the fault-carrying tokens")
    det, metrics = fit_detector({"features": features, "candidate": candidate, **data}, p,
                                model.config.model_type, model.config.num_attention_heads, seed, layout, progress)
    mediation = debug_set_mediation(model, det, data, candidate, config, target, batch)
    config["input"] = input_kind(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out / "detector") as tmp:
        det.save(tmp)
    write_json_atomic(out / "patch.json", config)
    write_json_atomic(out / "metrics.json", metrics)
    write_json_atomic(out / "mediation.json", mediation)
    return {"detector": str(out / "detector"), "patch_config": str(out / "patch.json"),
            "metrics": metrics, "config": config, "mediation": mediation}


def debug_set_mediation(model, det, data: dict, candidate: torch.Tensor, config: dict, target: int | None,
                        batch: int) -> dict:
    """The attention-mediation check (atpatch.eval.mediation) on a user's backdoor debugging set, patched as
    `config` ships (benign value, layers); only candidate tokens count as known fault tokens."""
    from atpatch.eval.mediation import backdoor_mediation
    from atpatch.core.patched import PatchedClassifier

    shipped = PatchedClassifier(model, det, config["mode"], config["patch_layers"], config["benign_value"])
    return backdoor_mediation(model, data["inputs"], data["token_labels"].bool() & candidate, data["triggered"],
                              shipped.benign, shipped.patch_layers, target=target, batch=batch)

