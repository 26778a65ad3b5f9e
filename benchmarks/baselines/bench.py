"""One scenario's workspace loaded once, and the metric code every method is scored with."""

from __future__ import annotations

import json

import numpy as np

from atpatch.core.errors import AtPatchError
from atpatch.core.patched import shipped_patch


class Bench:
    """Everything loaded once for one scenario: victim, detector, test sets, features, base metrics.

    split: the split scored ("test"; fairness scenarios also "debug", the debugging split, whose rows
    the detector was fit and calibrated on: for choosing settings without looking at the test split).
    """

    def __init__(self, flat: dict, cfg: dict, split: str = "test"):
        from atpatch.core.detector import Detector
        from atpatch.scenarios.models.loading import load_classifier
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
        self._load_features(flat["extract"]["out"])
        self.n_layers = int(self.det.benign.shape[0])
        self.shipped = shipped_patch(flat)  # mode, benign value, layers as register ships them
        if self.fairness:
            self._fairness_base()
        else:
            from atpatch.eval.backdoor_eval import baseline

            self.target = int(self.data["target"])
            self.base = baseline(self.model, self.data, self.p, self.target)

    def _load_features(self, path: str) -> None:
        """The debugging set's features as the extract stage wrote them (refits reuse them, no re-extraction)."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        from atpatch.core.features import TokenLayout

        self.features = load_file(path)
        with safe_open(path, "pt") as fh:
            self.meta = fh.metadata()
        self.layout = TokenLayout.from_dict(json.loads(self.meta["layout"]))

    # -- fairness helpers
    def _fairness_base(self):
        from atpatch.eval.evaluation import predict_plain
        from atpatch.eval.fairness_eval import attribute_metrics, summary

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
        return self._eval_fairness_baseline(defended) if self.fairness else self._eval_backdoor_baseline(defended)

    def _eval_fairness_baseline(self, defended) -> dict:
        from atpatch.eval.fairness_eval import attribute_metrics, reductions, summary
        from atpatch.eval.metrics import der

        flags = {}

        def predict(x, desc):
            labels = defended.predict(x, sensitive=self.sensitive_for(x) if defended.needs_sensitive else None)
            if desc == "test" and defended.flagged is not None:
                flags["test"] = np.asarray(defended.flagged)
            return labels

        pred, per_attr = attribute_metrics(predict, self.data)
        m = summary(pred, self.data["y"], per_attr, self.primary)
        m.update(reductions(self.base, m))
        m["DER_flip"] = der(asr_before=self.base["flip_rate"], asr_after=m["flip_rate"], ca_before=self.base["CA"], ca_after=m["CA"])
        if "test" in flags:
            f = flags["test"]
            m["input_flag_rate_clean"] = float(f[~self.base_flipped].mean())
            m["input_flag_rate_faulty"] = float(f[self.base_flipped].mean()) if self.base_flipped.any() else None
        return m

    def _eval_backdoor_baseline(self, defended) -> dict:
        from atpatch.eval.metrics import accuracy, attack_success_rate, der, input_flag_rate

        d = self.data
        clean = defended.predict(d["x_clean"])
        flag_c = None if defended.flagged is None else np.asarray(defended.flagged)
        trig = defended.predict(d["x_trig"])
        flag_t = None if defended.flagged is None else np.asarray(defended.flagged)
        ca, asr = accuracy(clean, d["y_clean"]), attack_success_rate(trig, d["y_trig"], self.target)
        m = {"CA": ca, "ASR": asr, "DER": der(asr_before=self.base["ASR"], asr_after=asr, ca_before=self.base["CA"], ca_after=ca)}
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
        from atpatch.eval.metrics import der

        if not self.fairness:
            from atpatch.eval.backdoor_eval import mode_metrics

            m, _ = mode_metrics(patched, self.data, self.base, self.target, self.batch)
            return m
        from atpatch.eval.evaluation import predict_patched
        from atpatch.eval.fairness_eval import attribute_metrics, reductions, summary
        from atpatch.eval.metrics import detection_metrics, input_flag_rate

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
        m["DER_flip"] = der(asr_before=self.base["flip_rate"], asr_after=m["flip_rate"], ca_before=self.base["CA"], ca_after=m["CA"])
        m["input_flag_rate_clean"] = input_flag_rate(test.flagged[~self.base_flipped])
        m["input_flag_rate_faulty"] = input_flag_rate(test.flagged[self.base_flipped]) if self.base_flipped.any() else None
        return m

    def unpatched_row(self) -> dict:
        from atpatch.eval.backdoor_eval import report_block

        b = report_block(self.base)
        if not self.fairness:
            b["DER"] = 0.5
        else:
            b.update({"flip_rate_reduction": 0.0, "dp_diff_reduction": 0.0, "eo_diff_reduction": 0.0, "DER_flip": 0.5})
        return b

    # -- prediction inputs for the latency loop
    def latency_inputs(self):
        if self.fairness:
            return self.data["x"], np.asarray(self.data["attributes"][self.primary]["sensitive"])
        return self.data["x_clean"], None
