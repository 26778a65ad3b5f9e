"""Baselines and ablations of AtPatch side by side, measured in one run on one workspace (issue 5).

Loads a pipeline workspace's victim, AtPatch detector (data/<scenario>/detector) and test sets, builds
every baseline's repair data from the scenario's debugging set (the inputs AtPatch's detector learned
from), applies each baseline (`atpatch.baselines`), runs AtPatch as shipped (two-pass, online) and its
ablations (detector refits reuse data/<scenario>/features.safetensors), and scores everything with the
same metric code (`atpatch.backdoor_eval`, `atpatch.fairness_eval`, `atpatch.metrics`).

Writes benchmarks/results/baselines-<scenario>.json, the scenario's section of benchmarks/BASELINES.md
(replaced in place between markers), benchmarks/results/tradeoff-<scenario>.png and an MLflow run.
Params: benchmarks/baselines.yaml.

    .venv/bin/python benchmarks/baselines.py --workspace .work/small --scenario vision-backdoor
    .venv/bin/python benchmarks/baselines.py --workspace .work/tab --scenario tabular-fairness \\
        --methods none care threshold_optimizer --ablations benign_value calibration_fpr
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from atpatch.errors import AtPatchError  # noqa: E402
from atpatch.io import load_params, write_bytes_atomic, write_json_atomic  # noqa: E402

CONFIG = REPO / "benchmarks" / "baselines.yaml"
RESULTS = REPO / "benchmarks" / "results"
MARKDOWN = REPO / "benchmarks" / "BASELINES.md"
ABLATIONS = ("mode", "loss", "benign_value", "patch_layers", "debug_size", "calibration_fpr")

DEFINITIONS_EXTRA = {
    "DER_flip": "fairness analogue of DER: (max(0, flip_before - flip_after) - max(0, CA_before - CA_after) + 1) / 2, "
                "flip rate of the primary attribute",
    "latency_ratio": "batch latency of the method's prediction / the unpatched victim with its default attention "
                     "(round-robin over all methods in one loop, clean test inputs; the statistic over the repeats is "
                     "evaluation.latency_statistic, min by default: the least disturbed by other processes)",
    "repair_seconds": "time to apply the defense to the victim (weight edits, fitting); 0 for AtPatch, whose "
                      "setup (feature extraction + detector fit on the debugging set) is reported separately",
    "input_flag_rate": "share of inputs the method touched (AtPatch: any flagged position; attention_block: "
                       "its outlier gate fired and it blocked a token)",
    "blocked_is_trigger": "attention_block: share of touched triggered inputs whose blocked token is a trigger token",
}


# -- config and workspace ------------------------------------------------------------------------

def load_config(path: Path = CONFIG) -> dict:
    import yaml

    cfg = yaml.safe_load(Path(path).read_text())
    unknown = set(cfg["ablations"]) - set(ABLATIONS)
    if unknown:
        raise AtPatchError(f"{path}: unknown ablations {sorted(unknown)} (known: {list(ABLATIONS)})")
    return cfg


def profile_of(ws_params: dict, scenario: str) -> str:
    """'default', 'small' or 'custom': which repository profile the workspace's scenario params equal."""
    from atpatch.workspace import merged_params

    mine = ws_params["scenarios"][scenario]
    for name in (None, "small"):
        try:
            if merged_params(name)["scenarios"].get(scenario) == mine:
                return name or "default"
        except AtPatchError:
            pass
    return "custom"


def debug_labels(kind, flat: dict) -> np.ndarray:
    """True labels of the debugging split's rows, in the order of kind.debug_set."""
    if hasattr(kind, "debug_labels"):
        return np.asarray(kind.debug_labels(flat))
    if hasattr(kind, "read_split"):  # tabular and text kinds: debug.parquet
        return kind.read_split(flat, "debug")["label"].to_numpy()
    if hasattr(kind, "_split"):  # image/text kinds: generated/debug (HF datasets)
        return np.asarray(kind._split(flat, "debug")["label"])
    raise AtPatchError(f"{kind.__name__}: no way to read the debugging split's labels")


def take(inputs: dict, idx) -> dict:
    idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
    return {k: v[idx] for k, v in inputs.items()}


def n_of(inputs: dict | None) -> int:
    return 0 if inputs is None else len(next(iter(inputs.values())))


def clean_float(v):
    """JSON-safe numbers (NaN -> None), recursively."""
    if isinstance(v, dict):
        return {str(k): clean_float(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [clean_float(x) for x in v]
    if isinstance(v, (np.floating, float)):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, np.ndarray):
        return clean_float(v.tolist())
    if isinstance(v, (np.bool_,)):
        return bool(v)
    return v


# -- repair data ----------------------------------------------------------------------------------

def build_repair(kind, flat: dict, model, features: dict, fairness: bool, cfg: dict) -> tuple[dict, dict]:
    """The repair dict every baseline gets, and a description of the budget (counts per key)."""
    debug = kind.debug_set(flat, model)
    labels = debug_labels(kind, flat)
    inputs = debug["inputs"]
    n = n_of(inputs)
    for key in ("token_labels", "triggered", "calib"):
        if not torch.equal(debug[key].bool(), features[key].bool()):
            raise AtPatchError(f"debugging set: {key} differs from {flat['extract']['out']} (stale features? "
                               f"run dvc repro extract@{flat['scenario']})")
    if len(labels) != n:
        raise AtPatchError(f"debugging split: {len(labels)} labels for {n} inputs")
    triggered, calib = features["triggered"].bool().numpy(), features["calib"].bool().numpy()
    mode = cfg["repair"]["clean"]
    if mode not in ("all", "fit"):
        raise AtPatchError(f"baselines.yaml repair.clean: expected all or fit, got {mode!r}")
    clean_rows = np.ones(n, bool) if fairness else ~triggered
    if mode == "fit":
        clean_rows &= ~calib
    clean_idx = np.flatnonzero(clean_rows)
    repair = {"clean_inputs": take(inputs, clean_idx), "clean_labels": labels[clean_idx],
              "calib_inputs": take(inputs, np.flatnonzero(calib)), "layout": kind.layout(model)}
    budget = {"debugging set": {"inputs": n, "fit": int((~calib).sum()),
                                "fit faulty" if fairness else "fit triggered": int((triggered & ~calib).sum()),
                                "calib (clean)": int(calib.sum())},
              "clean_inputs": len(clean_idx), "calib_inputs": int(calib.sum())}
    if fairness:
        if not all(hasattr(kind, f) for f in ("read_split", "protected", "counterfactual_sets")):
            raise AtPatchError(f"{kind.__name__}: a fairness kind needs read_split, protected and counterfactual_sets")
        sub = kind.read_split(flat, "debug").iloc[clean_idx].reset_index(drop=True)
        protected = kind.protected(flat)
        cfs = [cf for a in protected for cf in kind.counterfactual_sets(flat, model, sub, a)]
        repair["counterfactual_inputs"] = cfs
        repair["sensitive"] = sub[protected[0]].to_numpy()
        budget.update(counterfactual_inputs=f"{len(cfs)} sets x {len(clean_idx)} rows (every other value of "
                                            f"{', '.join(protected)})",
                      sensitive=f"{protected[0]} of the {len(clean_idx)} clean_inputs")
    else:
        trig_idx = np.flatnonzero(triggered)
        repair["triggered_inputs"] = take(inputs, trig_idx)
        repair["target_label"] = kind.target_label(flat)
        repair["_triggered_labels"] = labels[trig_idx]  # the runner's own (selection on the repair set); no baseline reads it
        budget["triggered_inputs"] = len(trig_idx)
    return repair, budget


def method_budget(module, repair: dict, budget: dict, params: dict) -> dict:
    """What one baseline read of the repair data, and its params."""
    used = {}
    for key in module.USES:
        if repair.get(key) is None:
            continue
        if key in budget:
            used[key] = budget[key]
        elif key == "clean_labels":
            used[key] = f"{len(repair[key])} true labels"
        elif key == "target_label":
            used[key] = repair[key]
        elif key == "layout":
            used[key] = repair[key].to_dict()
    if module.NAME == "attention_block" and "calib_inputs" in used:
        used.pop("clean_inputs", None)
    return {"uses": used, "params": params}


def repair_score(defended, repair: dict, model) -> dict:
    """The method's DER (backdoor) or DER_flip (fairness) measured on the repair data itself (the debugging set),
    the only data a defender has for choosing among settings; the test sets are never used for selection."""
    from atpatch.baselines import plain_predictor
    from atpatch.metrics import accuracy, attack_success_rate, der

    plain = plain_predictor(model)
    clean, labels = repair["clean_inputs"], repair["clean_labels"]
    before_acc, after_acc = accuracy(plain(clean), labels), accuracy(defended.predict(clean), labels)
    if repair.get("triggered_inputs") is not None:
        trig, t_labels, target = repair["triggered_inputs"], repair["_triggered_labels"], repair["target_label"]
        b = attack_success_rate(plain(trig), t_labels, target)
        a = attack_success_rate(defended.predict(trig), t_labels, target)
        return {"score": der(b, a, before_acc, after_acc), "metric": "DER", "fault_before": b, "fault_after": a,
                "acc_before": before_acc, "acc_after": after_acc}

    def flip_rate(predict):
        pred = predict(clean)
        return float(np.mean(np.any([predict(cf) != pred for cf in repair["counterfactual_inputs"]], axis=0)))

    if defended.needs_sensitive:
        raise AtPatchError(f"{defended.name}: selection on the repair set needs the counterfactuals' sensitive feature")
    b, a = flip_rate(plain), flip_rate(defended.predict)
    return {"score": der(b, a, before_acc, after_acc), "metric": "DER_flip", "fault_before": b, "fault_after": a,
            "acc_before": before_acc, "acc_after": after_acc}


def apply_best(name: str, params: dict, grid: list[dict], model, repair: dict, seed: int, log) -> tuple:
    """Apply every variant (params deep-merged with each grid entry); keep the best by repair_score.
    Returns (defended, params used, selection record or None, seconds spent on all variants)."""
    from atpatch.baselines import make
    from atpatch.workspace import deep_merge

    grid = grid or [{}]
    best, tried, total = None, [], 0.0
    for i, override in enumerate(grid):
        p = deep_merge(params, override)
        defended = make(name)(model, repair, p, seed)
        total += defended.repair_seconds
        if len(grid) == 1:
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


def method_note(name: str, ch: dict) -> str:
    """One line on what the defense changed (from Defended.changes)."""
    def f(v):
        return "?" if v is None else f"{100 * v:.1f}%"

    if name == "fine_pruning":
        a = ch.get("clean_acc", {})
        return (f"pruned {ch.get('n_pruned')}/{ch.get('n_candidates')} feed-forward neurons (ratio {ch.get('prune_ratio')}); "
                f"repair-set accuracy {f(a.get('before'))} -> pruned {f(a.get('pruned'))} -> fine-tuned {f(a.get('finetuned'))}")
    if name == "care":
        rs, neurons = ch.get("repair_set", {}), ch.get("neurons") or []
        top = max((n["effect"] for n in neurons), default=float("nan"))
        return (f"{len(neurons)} neurons rescaled (largest causal effect {top:.3g} on {ch.get('fault_measure')}); "
                f"repair-set fault rate {f(rs.get('fault_rate', {}).get('before'))} -> {f(rs.get('fault_rate', {}).get('after'))}, "
                f"accuracy {f(rs.get('clean_acc', {}).get('before'))} -> {f(rs.get('clean_acc', {}).get('after'))}")
    if name == "attention_block":
        return (f"{ch.get('score')} score; outlier threshold z > {ch.get('threshold_z', float('nan')):.3g} at fpr {ch.get('fpr')} "
                f"({f(ch.get('calib_touched_rate'))} of {ch.get('calib_inputs')} calibration inputs touched)")
    if name == "threshold_optimizer":
        return f"{ch.get('constraints')} thresholds per group {sorted(ch.get('groups', {}))}; needs the sensitive feature at predict time"
    return ""


def resolve_params(name: str, raw: dict | None, model, flat: dict) -> dict:
    """baselines.yaml's params for `name`, with its symbolic values resolved for this victim."""
    from atpatch.baselines import block_list

    p = copy.deepcopy(raw or {})
    if name == "attention_block" and p.get("fpr") == "atpatch":
        p["fpr"] = float(flat["train_detector"]["calibration_fpr"])
    n_blocks = len(block_list(model))
    if isinstance(p.get("layers"), int) and not isinstance(p.get("layers"), bool):
        p["layers"] = min(p["layers"], n_blocks)
    return p


# -- latency ----------------------------------------------------------------------------------------

def round_robin_latency(fns: dict[str, Callable], inputs: dict, sensitive, batch: int, repeats: int,
                        warmup: int = 2) -> dict:
    """Median seconds per full batch of `inputs` for every fn(chunk, sensitive_chunk), interleaved."""
    n = n_of(inputs)
    starts = list(range(0, max(n - batch + 1, 1), batch))
    chunks = [({k: v[s:s + batch] for k, v in inputs.items()}, None if sensitive is None else sensitive[s:s + batch])
              for s in starts]
    times = {name: [] for name in fns}
    names = list(fns)
    with torch.no_grad():
        for _ in range(warmup):
            for fn in fns.values():
                fn(*chunks[0])
        for i in range(repeats):
            chunk = chunks[i % len(chunks)]
            shift = i % len(names)  # rotate the order: no method is always first after another
            for name in names[shift:] + names[:shift]:
                t0 = time.perf_counter()
                fns[name](*chunk)
                times[name].append(time.perf_counter() - t0)
    return {name: {"median": float(np.median(t)), "min": float(np.min(t))} for name, t in times.items()}


# -- evaluation -------------------------------------------------------------------------------------

class Bench:
    """Everything loaded once for one scenario: victim, detector, test sets, features, base metrics.

    split: the split scored ("test"; fairness scenarios also "debug", the debugging split, whose rows
    the detector was fit and calibrated on: for choosing settings without looking at the test split).
    """

    def __init__(self, flat: dict, cfg: dict, split: str = "test"):
        from safetensors import safe_open
        from safetensors.torch import load_file

        from atpatch.detector import Detector
        from atpatch.features import TokenLayout
        from atpatch.models.loading import load_classifier
        from atpatch.scenarios import is_fairness, kind_module

        self.flat, self.cfg = flat, cfg
        self.seed = int(cfg.get("seed", flat["seed"]))
        self.p = flat["evaluate"]
        self.batch = int(self.p["batch_size"])
        self.kind = kind_module(flat)
        self.fairness = is_fairness(flat)
        self.model = load_classifier(flat["train_victim"]["out"], attn_implementation=self.p["default_attention"])
        self.det = Detector.load(flat["train_detector"]["out"])
        if split != "test" and not self.fairness:
            raise AtPatchError(f"split {split!r}: only fairness scenarios score another split than 'test'")
        self.data = self.kind.test_sets(flat, self.model, **({} if split == "test" else {"split": split}))
        path = flat["extract"]["out"]
        self.features = load_file(path)
        with safe_open(path, "pt") as fh:
            self.meta = fh.metadata()
        self.layout = TokenLayout.from_dict(json.loads(self.meta["layout"]))
        self.n_layers = int(self.det.benign.shape[0])
        self.shipped = flat.get("register") or {}
        if self.fairness:
            self._fairness_base()
        else:
            from atpatch.backdoor_eval import baseline

            self.target = int(self.data["target"])
            self.base = baseline(self.model, self.data, self.p, self.target)

    # -- fairness helpers
    def _fairness_base(self):
        from atpatch.evaluation import predict_plain
        from atpatch.fairness_eval import attribute_metrics, summary

        self.primary = self.data["primary"]
        pred, per_attr = attribute_metrics(lambda x, d: predict_plain(self.model, x, self.batch, d).labels, self.data)
        self.base = summary(pred, self.data["y"], per_attr, self.primary)
        self.base_flipped = per_attr[self.primary]["flipped"]
        self.sensitive_of = self._sensitive_table()

    def _sensitive_table(self) -> dict[int, np.ndarray]:
        """id(inputs dict) -> the primary attribute's value of each row (counterfactuals: after the swap)."""
        original = np.asarray(self.data["attributes"][self.primary]["sensitive"])
        table = {id(self.data["x"]): original}
        for name, a in self.data["attributes"].items():
            if name != self.primary:
                for x_cf in a["x_cf"]:
                    table[id(x_cf)] = original
                continue
            values = self.kind.counterfactual_sensitive(self.model, name, original)
            if len(values) != len(a["x_cf"]):
                raise AtPatchError(f"{name}: {len(a['x_cf'])} counterfactual sets, {len(values)} known value sets")
            for value, x_cf in zip(values, a["x_cf"]):
                table[id(x_cf)] = value
        return table

    def sensitive_for(self, inputs: dict):
        if id(inputs) not in self.sensitive_of:
            raise AtPatchError("the sensitive feature of these counterfactual inputs is unknown for this kind")
        return self.sensitive_of[id(inputs)]

    # -- metrics of one predictor
    def eval_baseline(self, defended) -> dict:
        from atpatch.metrics import accuracy, attack_success_rate, der, input_flag_rate

        if self.fairness:
            from atpatch.fairness_eval import attribute_metrics, reductions, summary

            flags = {}

            def predict(x, desc):
                labels = defended.predict(x, sensitive=self.sensitive_for(x) if defended.needs_sensitive else None)
                if desc == "test" and defended.flagged is not None:
                    flags["test"] = np.asarray(defended.flagged)
                return labels

            pred, per_attr = attribute_metrics(predict, self.data)
            m = summary(pred, self.data["y"], per_attr, self.primary)
            m.update(reductions(self.base, m))
            m["DER_flip"] = der(self.base["flip_rate"], m["flip_rate"], self.base["CA"], m["CA"])
            if "test" in flags:
                f = flags["test"]
                m["input_flag_rate_clean"] = float(f[~self.base_flipped].mean())
                m["input_flag_rate_faulty"] = float(f[self.base_flipped].mean()) if self.base_flipped.any() else None
            return m
        d = self.data
        clean = defended.predict(d["x_clean"])
        flag_c = None if defended.flagged is None else np.asarray(defended.flagged)
        trig = defended.predict(d["x_trig"])
        flag_t = None if defended.flagged is None else np.asarray(defended.flagged)
        ca, asr = accuracy(clean, d["y_clean"]), attack_success_rate(trig, d["y_trig"], self.target)
        m = {"CA": ca, "ASR": asr, "DER": der(self.base["ASR"], asr, self.base["CA"], ca)}
        if flag_c is not None:
            m["input_flag_rate_clean"] = input_flag_rate(flag_c[:, None])
            m["input_flag_rate_triggered"] = input_flag_rate(flag_t[:, None])
            if defended.name == "attention_block" and flag_t.any():
                m["blocked_is_trigger"] = self._blocked_is_trigger(defended, flag_t)
        return m

    def _blocked_is_trigger(self, defended, flagged: np.ndarray) -> float:
        from atpatch.baselines import attention_block

        ch = defended.changes
        top, _, _ = attention_block.scores(self.model, self.data["x_trig"], self.layout, ch["score"],
                                           ch["params"]["head_fusion"], ch["params"]["batch_size"])
        tokens = np.asarray(self.data["tokens_trig"]).astype(bool)
        hit = tokens[np.arange(len(tokens)), top.numpy()]
        return float(hit[flagged].mean())

    def eval_patched(self, patched) -> dict:
        """AtPatch with the evaluate stage's own per-mode code (backdoor) or its fairness equivalent."""
        from atpatch.metrics import der

        if not self.fairness:
            from atpatch.backdoor_eval import mode_metrics

            m, _ = mode_metrics(patched, self.data, self.base, self.target, self.batch)
            return m
        from atpatch.evaluation import predict_patched
        from atpatch.fairness_eval import attribute_metrics, reductions, summary
        from atpatch.metrics import detection_metrics, input_flag_rate

        runs = {}

        def predict(x, desc):
            out = predict_patched(patched, x, self.batch, desc)
            runs.setdefault(desc, out)
            return out.labels

        pred, per_attr = attribute_metrics(predict, self.data)
        test = runs["test"]
        faults = self.data["attributes"][self.primary]["fault_mask"] & self.base_flipped[:, None]
        cand = patched.layout.masks(self.data["x"], len(self.data["y"]), test.scores.shape[1])[1].numpy()
        m = summary(pred, self.data["y"], per_attr, self.primary)
        m.update(reductions(self.base, m), **detection_metrics(test.scores[cand], faults[cand].astype(int),
                                                                test.flagged[cand]))
        m["DER_flip"] = der(self.base["flip_rate"], m["flip_rate"], self.base["CA"], m["CA"])
        m["input_flag_rate_clean"] = input_flag_rate(test.flagged[~self.base_flipped])
        m["input_flag_rate_faulty"] = input_flag_rate(test.flagged[self.base_flipped]) if self.base_flipped.any() else None
        return m

    def unpatched_row(self) -> dict:
        from atpatch.backdoor_eval import report_block

        b = report_block(self.base)
        if not self.fairness:
            b["DER"] = 0.5
        else:
            b.update({"flip_rate_reduction": 0.0, "dp_diff_reduction": 0.0, "eo_diff_reduction": 0.0, "DER_flip": 0.5})
        return b

    # -- prediction callables for the latency loop
    def latency_inputs(self):
        if self.fairness:
            return self.data["x"], np.asarray(self.data["attributes"][self.primary]["sensitive"])
        return self.data["x_clean"], None


# -- AtPatch variants ---------------------------------------------------------------------------------

def patcher(bench: Bench, det, mode: str | None = None, patch_layers="shipped", benign_value: str | None = None):
    from atpatch.patched import PatchedClassifier

    s = bench.shipped
    layers = s.get("patch_layers") if patch_layers == "shipped" else patch_layers
    return PatchedClassifier(bench.model, det, mode=mode or bench.p["default_mode"], patch_layers=layers,
                             benign_value=benign_value or s.get("benign_value") or "unified")


def recalibrated(bench: Bench, fpr: float, min_threshold: float):
    """A copy of the shipped detector with its threshold set for `fpr` on the calibration part (no refit)."""
    det = copy.deepcopy(bench.det)
    feats = bench.features
    calib = feats["calib"].bool()
    x = feats["features"][:, :, det.config.layers]
    det.calibrate(x[calib], feats["candidate"][calib].bool(), fpr=fpr, min_threshold=min_threshold)
    return det


def detector_params(bench: Bench, **network) -> dict:
    p = copy.deepcopy(bench.flat["train_detector"])
    p["network"] = {**p["network"], **network}
    return p


def refit(bench: Bench, data: dict, p: dict):
    from atpatch.patching import fit_detector

    t0 = time.perf_counter()
    det, metrics = fit_detector(data, p, bench.meta["model_type"], int(bench.meta["heads"]), bench.seed, bench.layout,
                                progress=False)
    return det, metrics, time.perf_counter() - t0


def subsample_fit(features: dict, n: int, seed: int) -> dict:
    """The features with the fit part cut to n inputs (stratified by triggered/faulty, seeded); calib kept."""
    calib, trig = features["calib"].bool().numpy(), features["triggered"].bool().numpy()
    fit = np.flatnonzero(~calib)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 5]))
    fit_t, fit_c = fit[trig[fit]], fit[~trig[fit]]
    n_t = min(len(fit_t), max(1, round(n * len(fit_t) / len(fit))))
    n_c = min(len(fit_c), n - n_t)
    keep = np.sort(np.concatenate([rng.choice(fit_t, n_t, replace=False), rng.choice(fit_c, n_c, replace=False),
                                   np.flatnonzero(calib)]))
    idx = torch.as_tensor(keep)
    return {k: v[idx] for k, v in features.items()}


def setup_cost(bench: Bench) -> dict:
    """AtPatch's one-off cost: extract the debugging set's features and fit + calibrate the detector, timed."""
    from atpatch.patching import extract_features

    out = {}
    debug = bench.kind.debug_set(bench.flat, bench.model)
    t0 = time.perf_counter()
    feats, _ = extract_features(bench.model, debug["inputs"], bench.layout, int(bench.flat["extract"]["batch_size"]),
                                tuple(bench.flat["extract"]["kinds"]), progress=False)
    out["extract_seconds"] = time.perf_counter() - t0
    out["features_match_workspace"] = bool(torch.allclose(feats, bench.features["features"], atol=1e-4))
    det, metrics, seconds = refit(bench, bench.features, detector_params(bench))
    out["fit_seconds"] = seconds
    out["seconds"] = out["extract_seconds"] + seconds
    with torch.no_grad():
        x = bench.features["features"][:, :, det.config.layers]
        out["refit_max_score_diff_vs_shipped"] = float((det.score(x) - bench.det.score(x)).abs().max())
    out["refit_threshold"], out["shipped_threshold"] = det.config.threshold, bench.det.config.threshold
    return out


def ablations(bench: Bench, groups: list[str], reference: dict, main: dict, log: Callable) -> tuple[list[dict], dict]:
    """Rows {group, value, metrics, ...}; `reference` = the shipped default-mode metrics and `main` = mode -> the
    shipped metrics of each mode already measured (reused, not rerun)."""
    grid, rows, patchers = bench.cfg["ablations"], [], {}
    default_mode = bench.p["default_mode"]
    feats = bench.features
    L = bench.n_layers
    layer_sets = {"all": None, "last_half": list(range(L // 2, L)), "first": [0]}
    shipped_layers = bench.shipped.get("patch_layers")

    def add(group, value, make, note=None, **extra):
        t0 = time.perf_counter()
        patched = make()
        key = f"ablation:{group}={value}"
        m = bench.eval_patched(patched)
        patchers[key] = patched
        rows.append({"group": group, "value": value, "metrics": m, "note": note, **extra})
        log(f"  {key}: {fmt_short(m, bench.fairness)} ({time.perf_counter() - t0:.1f} s)")

    for group in groups:
        for value in grid.get(group) or []:
            if group == "mode":
                if value == default_mode:
                    rows.append({"group": group, "value": value, "metrics": reference, "note": "reference"})
                    continue
                if value in main:  # already measured as a main row: reuse (the latency comes from that row too)
                    rows.append({"group": group, "value": value, "metrics": main[value], "note": f"= AtPatch {value}"})
                    continue
                add(group, value, lambda v=value: patcher(bench, bench.det, mode=v))
            elif group == "benign_value":
                if value == (bench.shipped.get("benign_value") or "unified"):
                    rows.append({"group": group, "value": value, "metrics": reference, "note": "reference"})
                    continue
                add(group, value, lambda v=value: patcher(bench, bench.det, benign_value=v))
            elif group == "patch_layers":
                layers = layer_sets[value]
                resolved = list(range(L)) if layers is None else layers
                same = [r for r in rows if r["group"] == group and r.get("layers") == resolved]
                shipped_resolved = list(range(L)) if shipped_layers is None else list(shipped_layers)
                if resolved == shipped_resolved:
                    rows.append({"group": group, "value": value, "metrics": reference, "layers": resolved,
                                 "note": "reference"})
                elif same:
                    rows.append({"group": group, "value": value, "metrics": same[0]["metrics"], "layers": resolved,
                                 "note": f"same layers as {same[0]['value']}"})
                else:
                    add(group, value, lambda ls=layers: patcher(bench, bench.det, patch_layers=ls), layers=resolved)
            elif group == "calibration_fpr":
                fpr = float(value)
                if math.isclose(fpr, float(bench.flat["train_detector"]["calibration_fpr"])):
                    rows.append({"group": group, "value": fpr, "metrics": reference, "note": "reference",
                                 "threshold": bench.det.config.threshold})
                    continue
                det = recalibrated(bench, fpr, float(bench.flat["train_detector"]["min_threshold"]))
                add(group, fpr, lambda d=det: patcher(bench, d), threshold=det.config.threshold,
                    calib_inputs=int(feats["calib"].bool().sum()))
            elif group == "loss":
                if value == "contrastive":
                    w = float(bench.flat["train_detector"]["network"]["contrastive_weight"])
                    rows.append({"group": group, "value": value, "metrics": reference,
                                 "note": f"reference (contrastive_weight {w})"})
                    continue
                if value != "ce_only":
                    raise AtPatchError(f"ablation loss: expected contrastive or ce_only, got {value!r}")
                det, fit_m, seconds = refit(bench, feats, detector_params(bench, contrastive_weight=0.0))
                add(group, value, lambda d=det: patcher(bench, d), fit_seconds=seconds,
                    threshold=det.config.threshold)
            elif group == "debug_size":
                n_fit = int((~feats["calib"].bool()).sum())
                n = int(value)
                if n >= n_fit:
                    rows.append({"group": group, "value": n, "metrics": reference, "fit_inputs": n_fit,
                                 "note": f"the fit part has {n_fit} inputs: the shipped detector"})
                    continue
                sub = subsample_fit(feats, n, bench.seed)
                n_trig = int((sub["triggered"].bool() & ~sub["calib"].bool()).sum())
                try:
                    det, fit_m, seconds = refit(bench, sub, detector_params(bench))
                except Exception as exc:  # e.g. no labelled token left among the fit inputs
                    rows.append({"group": group, "value": n, "metrics": None, "error": str(exc)})
                    log(f"  ablation:{group}={n}: {exc}")
                    continue
                add(group, n, lambda d=det: patcher(bench, d), fit_seconds=seconds, fit_inputs=n,
                    fit_faulty=n_trig, threshold=det.config.threshold)
            else:
                raise AtPatchError(f"unknown ablation group {group!r}")
    return rows, patchers


# -- run ----------------------------------------------------------------------------------------------

def fmt_short(m: dict | None, fairness: bool) -> str:
    if not m:
        return "n/a"
    if fairness:
        return f"CA {100 * m['CA']:.2f} flip {100 * m['flip_rate']:.2f} DP {m['dp_diff']:.3f} EO {m['eo_diff']:.3f}"
    return f"CA {100 * m['CA']:.2f} ASR {100 * m['ASR']:.2f} DER {m['DER']:.4f}"


def run(workspace: Path, scenario: str, cfg: dict, methods: list[str], groups: list[str], log=print) -> dict:
    from atpatch.baselines import MODULES
    from atpatch.fairness_eval import FAIRNESS_DEFINITIONS
    from atpatch.metrics import DEFINITIONS
    from atpatch.scenarios import scenario_params

    workspace = Path(workspace).resolve()
    ws_params = load_params(path=workspace / "params.yaml")
    flat = scenario_params(ws_params, scenario, workspace / "params.yaml")
    profile = profile_of(ws_params, scenario)  # against the repository's params as they are when the run starts
    t_start = time.perf_counter()
    torch.manual_seed(int(cfg.get("seed", 0)))
    with contextlib.chdir(workspace):
        bench = Bench(flat, cfg)
        task = "fairness" if bench.fairness else "backdoor"
        log(f"{scenario}: victim {flat['train_victim']['out']}, unpatched {fmt_short(bench.unpatched_row(), bench.fairness)}")
        repair, budget = build_repair(bench.kind, flat, bench.model, bench.features, bench.fairness, cfg)

        rows, predictors = [], {}
        rows.append({"method": "none (unpatched)", "family": "reference", "metrics": bench.unpatched_row(),
                     "repair_seconds": 0.0, "budget": {"uses": {}, "params": {}}})
        predictors["none (unpatched)"] = lambda x, s: bench.model(**x).logits.argmax(-1)

        # AtPatch as shipped
        modes = list(cfg["atpatch"]["modes"])
        det_cfg = bench.det.config
        at_budget = {"uses": {"debugging set": budget["debugging set"], "token labels": "per-token fault labels of the fit part",
                              "detector": {"steps": det_cfg.steps, "batch_size": det_cfg.batch_size,
                                           "contrastive_weight": det_cfg.contrastive_weight, "layers": det_cfg.layers},
                              "calibration_fpr": bench.det.config.calibration.get("fpr_target"),
                              "threshold": det_cfg.threshold},
                     "params": {"benign_value": bench.shipped.get("benign_value") or "unified",
                                "patch_layers": bench.shipped.get("patch_layers")}}
        reference = None
        for mode in modes:
            t0 = time.perf_counter()
            patched = patcher(bench, bench.det, mode=mode)
            m = bench.eval_patched(patched)
            name = f"AtPatch {mode}"
            rows.append({"method": name, "family": "atpatch", "metrics": m, "repair_seconds": 0.0,
                         "budget": at_budget})
            predictors[name] = lambda x, s, pc=patched: pc(**x).logits.argmax(-1)
            if mode == bench.p["default_mode"]:
                reference = m
            log(f"{name}: {fmt_short(m, bench.fairness)} ({time.perf_counter() - t0:.1f} s)")
        if reference is None:
            reference = bench.eval_patched(patcher(bench, bench.det))

        # baselines
        for name in methods:
            if name == "none":
                continue  # the unpatched row above is the "none" baseline (same predictor)
            entry = cfg["methods"].get(name)
            if entry is None:
                raise AtPatchError(f"method {name!r} is not configured in baselines.yaml (methods: {sorted(cfg['methods'])})")
            entry = entry or {}
            if task not in entry.get("tasks", ["backdoor", "fairness"]):
                log(f"{name}: not applicable to {task} scenarios (tasks {entry['tasks']}), skipped")
                continue
            params = resolve_params(name, entry.get("params"), bench.model, flat)
            t0 = time.perf_counter()
            try:
                defended, params, selection, tuning = apply_best(name, params, entry.get("grid"), bench.model, repair,
                                                                 bench.seed, log)
                m = bench.eval_baseline(defended)
            except Exception as exc:  # recorded, not hidden: the table shows the error
                log(f"{name}: FAILED {type(exc).__name__}: {exc}")
                rows.append({"method": name, "family": "baseline", "metrics": None, "error": f"{type(exc).__name__}: {exc}",
                             "budget": method_budget(MODULES[name], repair, budget, params)})
                continue
            changes = {k: v for k, v in defended.changes.items() if k not in ("finetune_history", "pruned", "fill")}
            mb = method_budget(MODULES[name], repair, budget, defended.changes.get("params", params))
            if selection:
                mb["tuning"] = {"grid": entry.get("grid"), "chosen": selection["chosen"], "criterion": selection["criterion"],
                                "seconds_all_variants": tuning}
            rows.append({"method": name, "family": "baseline", "metrics": m, "repair_seconds": defended.repair_seconds,
                         "note": method_note(name, defended.changes), "selection": selection,
                         "needs_sensitive_at_predict": defended.needs_sensitive, "changes": changes, "budget": mb})
            if defended.needs_sensitive:
                predictors[name] = lambda x, s, d=defended: d.predict(x, sensitive=s)
            else:
                predictors[name] = lambda x, s, d=defended: d.predict(x)
            log(f"{name}: {fmt_short(m, bench.fairness)}, repair {defended.repair_seconds:.1f} s "
                f"({time.perf_counter() - t0:.1f} s with tuning and evaluation)")

        setup = setup_cost(bench) if cfg["atpatch"].get("measure_setup", True) else None
        if setup:
            log(f"AtPatch setup: extract {setup['extract_seconds']:.1f} s + detector fit {setup['fit_seconds']:.1f} s")
        main_modes = {r["method"].removeprefix("AtPatch "): r["metrics"] for r in rows if r["family"] == "atpatch"}
        abl_rows, abl_patchers = ablations(bench, groups, reference, main_modes, log) if groups else ([], {})

        # latency: every predictor, round robin on the same clean batches
        x_lat, s_lat = bench.latency_inputs()
        e = cfg["evaluation"]
        fns = dict(predictors)
        fns.update({k: (lambda x, s, pc=p: pc(**x).logits.argmax(-1)) for k, p in abl_patchers.items()})
        from atpatch.models.loading import load_classifier

        eager_model = load_classifier(flat["train_victim"]["out"]).eval()  # a second copy, eager attention
        fns["unpatched eager"] = lambda x, s: eager_model(**x).logits.argmax(-1)
        lat = round_robin_latency(fns, x_lat, s_lat, int(e["latency_batch"]), int(e["latency_repeats"]),
                                  int(e.get("latency_warmup", 2)))
        stat = e.get("latency_statistic", "min")
        eager_all = lat.pop("unpatched eager")
        base_s, eager = lat["none (unpatched)"][stat], eager_all[stat]
        ratio = {k: v[stat] / base_s for k, v in lat.items()}
        for r in rows:
            if r["method"] in lat:
                r["latency_s"], r["latency_ratio"] = lat[r["method"]], ratio[r["method"]]
                r["latency_ratio_eager"] = lat[r["method"]][stat] / eager
        default_key = f"AtPatch {bench.p['default_mode']}"
        for r in abl_rows:
            key = f"ablation:{r['group']}={r['value']}"
            if key in lat:
                r["latency_ratio"] = ratio[key]
            elif r.get("metrics") is reference and default_key in lat:
                r["latency_ratio"] = ratio[default_key]
            elif r["group"] == "mode" and f"AtPatch {r['value']}" in lat:
                r["latency_ratio"] = ratio[f"AtPatch {r['value']}"]
    result = {
        "scenario": scenario, "kind": flat["kind"], "task": task, "workspace": str(workspace),
        "profile": profile, "seed": bench.seed,
        "default_attention": bench.p["default_attention"], "default_mode": bench.p["default_mode"],
        "victim": {"model_type": bench.model.config.model_type, "layers": bench.n_layers,
                   "heads": int(bench.meta["heads"])},
        "test_inputs": n_of(bench.data["x"] if bench.fairness else bench.data["x_clean"]),
        "primary_attribute": getattr(bench, "primary", None),
        "ASR_floor": None if bench.fairness else bench.base["ASR_floor"],
        "repair_data": budget, "rows": rows, "ablations": abl_rows, "atpatch_setup": setup,
        "latency": {"batch": int(e["latency_batch"]), "repeats": int(e["latency_repeats"]), "statistic": stat,
                    "unpatched_default_s": base_s, "unpatched_eager_s": eager, "load_average": os.getloadavg()[0],
                    "cpus": os.cpu_count(), "all_s": {**lat, "unpatched eager": eager_all}},
        "definitions": {**(FAIRNESS_DEFINITIONS if bench.fairness else DEFINITIONS), **DEFINITIONS_EXTRA},
        "seconds": time.perf_counter() - t_start,
    }
    return clean_float(result)


# -- output -------------------------------------------------------------------------------------------

def pct(v) -> str:
    return "" if v is None else f"{100 * v:.2f}"


def num(v, digits: int = 4) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def secs(v) -> str:
    return "" if v is None else f"{v:.1f}"


def _budget_text(b: dict) -> str:
    uses = "; ".join(f"{k}: {v}" for k, v in (b.get("uses") or {}).items()) or "nothing"
    params = json.dumps(b.get("params") or {}, separators=(", ", ": "))
    text = f"uses {uses}; params {params}"
    t = b.get("tuning")
    if t:
        text += (f"; tuned over {len(t['grid'])} variants {json.dumps(t['grid'], separators=(', ', ': '))} "
                 f"({t['criterion']}; chose variant {t['chosen']}; all variants {t['seconds_all_variants']:.1f} s)")
    return text


def markdown(result: dict, command: str) -> str:
    s, fair = result["scenario"], result["task"] == "fairness"
    lines = [f"## {s} ({result['profile']} profile)", "",
             f"Made by `{command}` (workspace `{result['workspace']}`, seed {result['seed']}, "
             f"{result['seconds'] / 60:.1f} min). Victim: {result['victim']['model_type']}, "
             f"{result['victim']['layers']} layers; {result['test_inputs']} clean test inputs. "
             f"Latency x: the {result['latency']['statistic']} over {result['latency']['repeats']} round-robin repeats "
             f"of one batch of {result['latency']['batch']} clean test inputs, / the unpatched victim with "
             f"{result['default_attention']} attention ({result['latency']['unpatched_default_s'] * 1000:.1f} ms; "
             f"eager {result['latency']['unpatched_eager_s'] * 1000:.1f} ms); load average "
             f"{result['latency']['load_average']:.1f} on {result['latency']['cpus']} CPUs during the run"
             f"{' (shared machine: latencies are noisy)' if result['latency']['load_average'] > 0.75 * result['latency']['cpus'] else ''}.", ""]
    if fair:
        a = result["primary_attribute"]
        head = (f"| method | accuracy % | flip rate % ({a}) | DP diff | EO diff | reduction flip / DP / EO % | DER_flip "
                "| inputs touched: no flip / flip % | column AUROC | latency x | repair s | sensitive at predict |")
    else:
        head = ("| method | CA % | ASR % | DER | inputs touched: clean / triggered % | column AUROC | blocked token is "
                "trigger % | latency x | repair s |")
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for r in result["rows"]:
        m = r.get("metrics")
        if m is None:
            lines.append(f"| {r['method']} | failed: {r.get('error', '')} |")
            continue
        touched = ""
        if m.get("input_flag_rate_clean") is not None:
            other = m.get("input_flag_rate_faulty" if fair else "input_flag_rate_triggered")
            touched = f"{pct(m['input_flag_rate_clean'])} / {pct(other)}"
        if fair:
            red = " / ".join(pct(m.get(k)) for k in ("flip_rate_reduction", "dp_diff_reduction", "eo_diff_reduction"))
            lines.append(f"| {r['method']} | {pct(m['CA'])} | {pct(m['flip_rate'])} | {num(m['dp_diff'])} "
                         f"| {num(m['eo_diff'])} | {red} | {num(m.get('DER_flip'))} | {touched} "
                         f"| {num(m.get('column_auroc'))} | {num(r.get('latency_ratio'), 2)} | {secs(r.get('repair_seconds'))} "
                         f"| {'yes' if r.get('needs_sensitive_at_predict') else 'no'} |")
        else:
            lines.append(f"| {r['method']} | {pct(m['CA'])} | {pct(m['ASR'])} | {num(m['DER'])} | {touched} "
                         f"| {num(m.get('column_auroc'))} | {pct(m.get('blocked_is_trigger'))} "
                         f"| {num(r.get('latency_ratio'), 2)} | {secs(r.get('repair_seconds'))} |")
    if fair:
        for r in result["rows"]:
            if r.get("needs_sensitive_at_predict"):
                lines += ["", f"{r['method']} needs the sensitive feature ({result['primary_attribute']}) of every input "
                              "at predict time (AtPatch does not) and thresholds by it, so the counterfactual that swaps "
                              "it also swaps the threshold: its flip rate measures exactly that dependence."]
        others = [k for k in result["rows"][0]["metrics"]["by_attribute"] if k != result["primary_attribute"]]
        for attr in others:
            lines += ["", f"Attribute `{attr}` (same runs):", "",
                      "| method | flip rate % | DP diff | EO diff |", "|---|---|---|---|"]
            for r in result["rows"]:
                m = r.get("metrics")
                if m:
                    b = m["by_attribute"][attr]
                    lines.append(f"| {r['method']} | {pct(b['flip_rate'])} | {num(b['dp_diff'])} | {num(b['eo_diff'])} |")
    else:
        lines += ["", f"ASR floor (clean non-target test images the unpatched victim sends to the target): "
                      f"{pct(result['ASR_floor'])}%."]
    setup = result.get("atpatch_setup")
    if setup:
        lines += ["", f"AtPatch setup cost (not a repair: the victim is untouched): feature extraction "
                      f"{setup['extract_seconds']:.1f} s + detector fit and calibration {setup['fit_seconds']:.1f} s "
                      f"(refit vs shipped detector: max score difference {setup['refit_max_score_diff_vs_shipped']:.2g})."]
    if result["ablations"]:
        lines += ["", f"Ablations (one factor of the shipped {result['default_mode']} configuration changed at a time):", ""]
        head = ("| ablation | value | accuracy % | flip rate % | DP diff | EO diff | DER_flip | no flip / flip inputs touched % "
                "| column AUROC | latency x | note |") if fair else \
            "| ablation | value | CA % | ASR % | DER | clean / triggered inputs flagged % | column AUROC | latency x | note |"
        lines += [head, "|" + "---|" * (head.count("|") - 1)]
        for r in result["ablations"]:
            m = r.get("metrics")
            note = r.get("note") or ""
            extra = [f"{k} {r[k]:.4g}" if isinstance(r[k], float) else f"{k} {r[k]}"
                     for k in ("fit_inputs", "fit_faulty", "threshold", "layers", "fit_seconds") if k in r]
            note = "; ".join(x for x in [note, ", ".join(extra)] if x)
            if m is None:
                lines.append(f"| {r['group']} | {r['value']} | failed: {r.get('error', '')} |")
            elif fair:
                lines.append(f"| {r['group']} | {r['value']} | {pct(m['CA'])} | {pct(m['flip_rate'])} | {num(m['dp_diff'])} "
                             f"| {num(m['eo_diff'])} | {num(m.get('DER_flip'))} | {pct(m.get('input_flag_rate_clean'))} / "
                             f"{pct(m.get('input_flag_rate_faulty'))} | {num(m.get('column_auroc'))} "
                             f"| {num(r.get('latency_ratio'), 2)} | {note} |")
            else:
                lines.append(f"| {r['group']} | {r['value']} | {pct(m['CA'])} | {pct(m['ASR'])} | {num(m['DER'])} "
                             f"| {pct(m.get('input_flag_rate_clean'))} / {pct(m.get('input_flag_rate_triggered'))} "
                             f"| {num(m.get('column_auroc'))} | {num(r.get('latency_ratio'), 2)} | {note} |")
    lines += ["", "Budget given to each method (repair data from the debugging set: " +
              json.dumps(result["repair_data"]) + "):", ""]
    for r in result["rows"]:
        note = f" Result: {r['note']}." if r.get("note") else ""
        lines.append(f"- {r['method']}: {_budget_text(r.get('budget') or {})}.{note}")
    lines += ["", verdict(result), ""]
    return "\n".join(lines)


def verdict(result: dict) -> str:
    """One plain sentence: does an AtPatch row beat every baseline by DER / DER_flip, and the shipped mode?"""
    key = "DER_flip" if result["task"] == "fairness" else "DER"
    scored = [(r["metrics"][key], r["method"]) for r in result["rows"]
              if r.get("metrics") and r["metrics"].get(key) is not None and not r["method"].startswith("none")]
    ours = [x for x in scored if x[1].startswith("AtPatch")]
    others = [x for x in scored if not x[1].startswith("AtPatch")]
    if not ours or not others:
        return ""
    (best_ours, who_ours), (best_other, who_other) = max(ours), max(others)
    shipped = f"AtPatch {result['default_mode']}"
    mine = next((v for v, name in ours if name == shipped), None)
    tail = f"; the shipped {shipped} reaches {mine:.4f}" if mine is not None and who_ours != shipped else ""
    if best_ours >= best_other - 1e-12:
        return f"Best {key}: {who_ours} ({best_ours:.4f}){tail}; best baseline {who_other} ({best_other:.4f})."
    return (f"Best {key}: {who_other} ({best_other:.4f}); the best AtPatch row, {who_ours}, reaches {best_ours:.4f}{tail}: "
            "AtPatch is **not** the best here.")


def replace_section(path: Path, scenario: str, text: str) -> None:
    """Put `text` between the scenario's markers in `path` (appended if absent; the file created if missing)."""
    start, end = f"<!-- baselines:{scenario}:start -->", f"<!-- baselines:{scenario}:end -->"
    old = path.read_text() if path.is_file() else (
        "# Baselines and ablations\n\nGenerated by `benchmarks/baselines.py` (params: `benchmarks/baselines.yaml`), "
        "one section per scenario; raw numbers in `benchmarks/results/baselines-<scenario>.json`, trade-off plots "
        "`benchmarks/results/tradeoff-<scenario>.png`. Metric definitions: DESIGN.md section 7 and the `definitions` "
        "field of each JSON file.\n")
    block = f"{start}\n{text.rstrip()}\n{end}"
    if start in old and end in old:
        new = old[:old.index(start)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    write_bytes_atomic(path, new.encode())


def tradeoff_plot(result: dict, path: Path) -> None:
    """CA vs ASR (backdoor) or accuracy vs flip rate (fairness): methods as large markers, ablations small."""
    from atpatch.plots import _pyplot

    plt = _pyplot()
    fair = result["task"] == "fairness"
    ykey, ylabel = ("flip_rate", f"counterfactual flip rate % ({result['primary_attribute']})") if fair else \
        ("ASR", "attack success rate %")
    fig, ax = plt.subplots(figsize=(7, 4.8))
    markers = {"reference": "s", "atpatch": "*", "baseline": "o"}
    atpatch_markers = iter("*P")
    for r in result["rows"]:
        m = r.get("metrics")
        if not m:
            continue
        marker = next(atpatch_markers, "*") if r["family"] == "atpatch" else markers[r["family"]]
        ax.scatter(100 * m["CA"], 100 * m[ykey], s=140 if r["family"] == "atpatch" else 70, marker=marker,
                   label=r["method"], zorder=3, alpha=0.85)
    groups: dict[str, list] = {}
    for r in result["ablations"]:
        m = r.get("metrics")
        if m and not str(r.get("note") or "").startswith(("reference", "=")):
            groups.setdefault(r["group"], []).append((100 * m["CA"], 100 * m[ykey]))
    for i, (group, points) in enumerate(groups.items()):
        xs, ys = zip(*points)
        ax.scatter(xs, ys, s=22, marker="xd+1v^"[i % 6], color="0.45", zorder=2, label=f"ablation: {group}")
    if not fair and result.get("ASR_floor") is not None:
        ax.axhline(100 * result["ASR_floor"], ls="--", lw=0.8, color="grey", label="ASR floor")
    ax.set_xlabel("clean accuracy %")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{result['scenario']} ({result['profile']} profile): methods (large) and AtPatch ablations (grey)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def log_to_mlflow(result: dict, files: list[Path]) -> str:
    import mlflow

    from atpatch.tracking import configure, environment_tags

    def numbers(prefix: str, d: dict | None) -> dict:
        out = {}
        for k, v in (d or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None:
                out[f"{prefix}.{k}"] = float(v)
        return out

    def safe(name: str) -> str:
        return "".join(c if c.isalnum() or c in "._-/ " else "_" for c in name)

    configure()
    with mlflow.start_run(run_name=f"baselines:{result['scenario']}") as run:
        mlflow.set_tags({"benchmark": "baselines", "scenario": result["scenario"], "profile": result["profile"],
                         **environment_tags()})
        metrics = {}
        for r in result["rows"]:
            metrics.update(numbers(safe(r["method"]), r.get("metrics")))
            for k in ("repair_seconds", "latency_ratio"):
                if r.get(k) is not None:
                    metrics[f"{safe(r['method'])}.{k}"] = float(r[k])
        for r in result["ablations"]:
            metrics.update(numbers(safe(f"ablation.{r['group']}.{r['value']}"), r.get("metrics")))
        metrics.update(numbers("atpatch_setup", result.get("atpatch_setup")))
        mlflow.log_metrics(metrics)
        for f in files:
            mlflow.log_artifact(str(f))
        return run.info.run_id


def render(results_dir: Path, scenario: str, md: Path) -> dict:
    """The markdown section and trade-off plot again from results_dir/baselines-<scenario>.json."""
    path = results_dir / f"baselines-{scenario}.json"
    if not path.is_file():
        raise AtPatchError(f"{path}: not found; run the benchmark for {scenario} first")
    result = json.loads(path.read_text())
    tradeoff_plot(result, results_dir / f"tradeoff-{scenario}.png")
    replace_section(md, scenario, markdown(result, result["command"]))
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", help="a pipeline workspace with the scenario trained up to train_detector")
    ap.add_argument("--scenario", required=True)
    ap.add_argument("--config", default=str(CONFIG))
    ap.add_argument("--methods", nargs="+", default=None, help="baselines to run (default: all in the config)")
    ap.add_argument("--ablations", nargs="*", default=None,
                    help=f"ablation groups (default: all in the config; none: no ablations): {list(ABLATIONS)}")
    ap.add_argument("--results-dir", default=str(RESULTS))
    ap.add_argument("--markdown", default=str(MARKDOWN))
    ap.add_argument("--no-mlflow", action="store_true")
    ap.add_argument("--render", action="store_true",
                    help="measure nothing: redraw the markdown section and plot from the scenario's results JSON")
    args = ap.parse_args(argv)
    if args.render:
        return render(Path(args.results_dir), args.scenario, Path(args.markdown))
    if not args.workspace:
        ap.error("--workspace is required (unless --render)")
    cfg = load_config(Path(args.config))
    methods = args.methods or list(cfg["methods"])
    groups = list(cfg["ablations"]) if args.ablations is None else [g for g in args.ablations if g != "none"]
    bad = [g for g in groups if g not in ABLATIONS]
    if bad:
        ap.error(f"unknown ablations {bad}; known: {list(ABLATIONS)}")
    command = "benchmarks/baselines.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = run(Path(args.workspace), args.scenario, cfg, methods, groups)
    result["command"] = command
    out_dir = Path(args.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, png = out_dir / f"baselines-{args.scenario}.json", out_dir / f"tradeoff-{args.scenario}.png"
    write_json_atomic(json_path, result)
    tradeoff_plot(result, png)
    text = markdown(result, command)
    replace_section(Path(args.markdown), args.scenario, text)
    if not args.no_mlflow:
        result["mlflow_run_id"] = log_to_mlflow(result, [json_path, png])
    print(text)
    return result


if __name__ == "__main__":
    main()
