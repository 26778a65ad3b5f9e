"""Registry, pyfunc serving and the gate/register stages on a tiny ViT + detector, in a temp MLflow store."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[2]
NAME = "atpatch-test-tiny"
STAGE_NAME = "atpatch-tiny"  # conventions.model_name of the stage tests' scenario "tiny"


def _stage(name: str):
    spec = importlib.util.spec_from_file_location(f"atpatch_stage_{name}", REPO / "stages" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _tiny_victim(directory: Path) -> None:
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(image_size=28, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=16, num_labels=10)
    ViTForImageClassification(config).save_pretrained(directory)


def _tiny_detector(directory: Path, victim: Path) -> None:
    """A detector fitted on random features; its threshold is set so that some, not all, positions of
    the test images are flagged (the patched second pass then runs on part of the positions)."""
    from atpatch import Detector, DetectorConfig, PatchedClassifier
    from atpatch.scenarios.models.loading import load_classifier
    from atpatch.scenarios.models.vit import VISION_LAYOUT, to_pixel_values

    gen = torch.Generator().manual_seed(0)
    det = Detector(DetectorConfig(layers=[0, 1], heads=2, kinds=["mean", "max", "cls"], model_type="vit",
                                  layout=VISION_LAYOUT.to_dict(), steps=20, batch_size=32))
    feats = torch.rand(200, 2, 6, generator=gen)
    labels = (torch.arange(200) % 2).long()
    det.fit(feats, labels, progress=False)
    det.benign = torch.ones(2, 2)
    scores = PatchedClassifier(load_classifier(victim), det)(pixel_values=to_pixel_values(_images(3))).scores
    det.set_threshold(float(scores[:, 1:].quantile(0.7)))
    det.save(directory)


def _report(ca=0.885, asr=0.021, floor=0.02, flag=0.006, auroc=0.9999, known_patched=0.12, pass_through=1.0,
            flips=0.004) -> dict:
    """An evaluate.json; `known_patched`: the debugging set's fault rate with its known trigger tokens
    patched (attention-mediation check; its clean inputs' rate is 0.11)."""
    from atpatch.eval.mediation import MAX_GAP, judged

    mode = {"CA": ca, "ASR": asr, "trigger_caused_flips": flips, "DER": 0.99, "input_flag_rate_clean": flag, "input_flag_rate_triggered": 1.0,
            "column_auroc": auroc, "clean_pass_through_exact": pass_through, "latency_ratio_default": 1.1,
            "latency_ratio_eager": 1.05}
    mediation = judged({"family": "backdoor", "fault_rate_unpatched": 1.0, "fault_rate_known_patched": known_patched,
                        "fault_rate_clean": 0.11}, MAX_GAP)
    return {"scenario": "tiny", "default_mode": "two-pass",
            "unpatched": {"CA": 0.885, "ASR": 1.0, "ASR_floor": floor},
            "patched": {"two-pass": mode, "online": dict(mode)}, "definitions": {}, "mediation": mediation}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A project root with a tiny victim, detector, clean test set and params.yaml; MLflow store inside."""
    from datasets import Dataset

    root = tmp_path_factory.mktemp("registry")
    _tiny_victim(root / "victim")
    _tiny_detector(root / "detector", root / "victim")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    Dataset.from_dict({"image": images, "label": np.arange(6)}).save_to_disk(str(root / "generated" / "test_clean"))
    params = {"seed": 0, "scenario": "tiny", "kind": "vision-backdoor", "generate": {"out": "generated"},
              "train_victim": {"out": "victim"}, "train_detector": {"out": "detector"},
              "evaluate": {"out": "metrics/tiny/evaluate.json"},
              "gate": {"out": "metrics/tiny/gate.json", "max_ca_drop": 0.005, "max_asr_over_floor": 0.005,
                       "max_clean_flag_rate": 0.01, "min_column_auroc": 0.999, "min_clean_pass_through": 1.0,
                       "regression_tolerance": 0.002, "force_fail": False},
              "register": {"out": "metrics/tiny/register.json"}, "patch": {}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATPATCH_ROOT", str(root))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.chdir(root)
        yield root


def _frame(images: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"image": [img.reshape(-1).astype(int).tolist() for img in images]})


def _images(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)


def _in_process(root: Path, mode: str = "two-pass"):
    from atpatch import Detector, PatchedClassifier
    from atpatch.scenarios.models.loading import load_classifier

    return PatchedClassifier(load_classifier(root / "victim"), Detector.load(root / "detector"), mode=mode)


@pytest.fixture(scope="module")
def registered(root):
    """Version 1 of NAME, logged by log_patch, with alias challenger."""
    from atpatch.ops.registry import log_patch, set_alias

    mv = log_patch(root / "victim", root / "detector", {"mode": "two-pass"}, NAME, _frame(_images(2, 0)),
                   metrics={"patched.CA": 0.9, "patched.ASR": 0.02})
    set_alias(NAME, "challenger", mv.version)
    return mv


def test_log_patch_registers_version_with_metrics(registered):
    from atpatch.ops.registry import get_alias_version, version_metrics

    assert str(registered.version) == "1"
    assert version_metrics(registered) == {"patched.CA": 0.9, "patched.ASR": 0.02}
    assert registered.tags["patch.mode"] == "two-pass"
    assert str(get_alias_version(NAME, "challenger").version) == "1"
    assert get_alias_version(NAME, "champion") is None
    assert get_alias_version("no-such-model", "champion") is None


def test_pyfunc_predict_matches_in_process(root, registered):
    import mlflow

    from atpatch.scenarios.models.vit import to_pixel_values

    images = _images(3)
    served = mlflow.pyfunc.load_model(f"models:/{NAME}/1")
    out = served.predict(_frame(images))
    assert list(out.columns) == ["label", "probabilities", "flagged"]
    ref = _in_process(root)(pixel_values=to_pixel_values(images))
    assert 0 < int(ref.flagged.sum()) < ref.flagged.numel()  # the patch acts on part of the positions
    assert out["label"].tolist() == ref.logits.argmax(-1).tolist()
    assert [list(f) for f in out["flagged"]] == [torch.nonzero(r).flatten().tolist() for r in ref.flagged]
    probs = np.array([list(p) for p in out["probabilities"]])
    np.testing.assert_allclose(probs, torch.softmax(ref.logits, -1).numpy(), rtol=1e-5, atol=1e-6)


def test_load_patch_by_alias(root, registered):
    from atpatch import PatchedClassifier
    from atpatch.scenarios.models.vit import to_pixel_values
    from atpatch.ops.registry import load_detector, load_patch

    patched = load_patch(f"models:/{NAME}@challenger")
    assert isinstance(patched, PatchedClassifier) and patched.mode == "two-pass"
    x = to_pixel_values(_images(3))
    torch.testing.assert_close(patched(pixel_values=x).logits, _in_process(root)(pixel_values=x).logits)
    assert load_detector(f"models:/{NAME}/1").config.layers == [0, 1]


def test_predict_rejects_bad_rows(root, registered):
    import mlflow

    served = mlflow.pyfunc.load_model(f"models:/{NAME}@challenger")
    rows = _frame(_images(3))
    rows.at[1, "image"] = rows.at[1, "image"][:-1]
    with pytest.raises(Exception, match=r"row 1: expected 784 values .* got 783"):
        served.predict(rows)


def test_image_rows_validation():
    from atpatch.ops.serving.pyfunc_model import image_rows

    good = [0] * 784
    with pytest.raises(ValueError, match="row 2: expected integers in 0..255, got 256"):
        image_rows(pd.DataFrame({"image": [good, good, [256] + good[1:]]}))
    with pytest.raises(ValueError, match="row 0: NaN at pixel 5"):
        image_rows(pd.DataFrame({"image": [[0.0] * 5 + [float("nan")] + [0.0] * 778]}))
    with pytest.raises(ValueError, match="expected a column 'image', got columns \\['pixels'\\]"):
        image_rows(pd.DataFrame({"pixels": [good]}))
    assert image_rows(pd.DataFrame({"image": [np.arange(784) % 256]})).shape == (1, 28, 28)


def _write_report(root: Path, report: dict) -> None:
    path = root / "metrics" / "tiny" / "evaluate.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report))


def _set_params(root: Path, **gate) -> dict:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["gate"].update(gate)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return params


def test_gate_and_register_move_champion_only_on_pass(root):
    gate, register = _stage("gate"), _stage("register")
    from atpatch.ops.registry import get_alias_version

    # 1. gate passes, no champion yet -> register promotes version 1.
    _write_report(root, _report())
    g = gate.main(_set_params(root, force_fail=False))
    assert g["passed"] and g["reasons"] == [] and g["champion_version"] is None
    assert json.loads((root / "metrics/tiny/gate.json").read_text())["passed"] is True
    r = register.main(_set_params(root))
    assert r == json.loads((root / "metrics/tiny/register.json").read_text())
    assert r["promoted"] and r["version"] == r["champion"] == r["challenger"] == "1"
    assert str(get_alias_version(STAGE_NAME, "champion").version) == "1"

    # 2. forced failure -> version 2 is the challenger, champion stays on 1.
    g = gate.main(_set_params(root, force_fail=True))
    assert not g["passed"] and g["reasons"] == ["forced"] and g["champion_version"] == "1"
    r = register.main(_set_params(root))
    assert (r["version"], r["challenger"], r["champion"], r["promoted"]) == ("2", "2", "1", False)
    assert str(get_alias_version(STAGE_NAME, "champion").version) == "1"
    assert str(get_alias_version(STAGE_NAME, "challenger").version) == "2"

    # 3. within the absolute limits but worse than the champion -> regression failure.
    _write_report(root, _report(ca=0.881, asr=0.024))
    g = gate.main(_set_params(root, force_fail=False))
    assert not g["passed"]
    failed = {c["name"] for c in g["checks"] if not c["passed"]}
    assert failed == {"asr_vs_champion", "ca_vs_champion"}, g["reasons"]
    assert any(reason.startswith("asr_vs_champion = 0.0030") for reason in g["reasons"])
    # ... and register keeps the champion where it was, moving only the challenger.
    r = register.main(_set_params(root))
    assert (r["version"], r["champion"], r["promoted"]) == ("3", "1", False)
    assert str(get_alias_version(STAGE_NAME, "champion").version) == "1"
    assert str(get_alias_version(STAGE_NAME, "challenger").version) == "3"

    # 4. as good as the champion again -> promoted, the champion moves.
    _write_report(root, _report())
    assert gate.main(_set_params(root, force_fail=False))["passed"]
    r = register.main(_set_params(root))
    assert (r["version"], r["champion"], r["previous_champion"], r["promoted"]) == ("4", "4", "1", True)
    assert str(get_alias_version(STAGE_NAME, "champion").version) == "4"


def test_gate_refuses_a_fault_not_carried_by_attention(root):
    """A perfect patch on paper, but the debugging set's known trigger tokens patched leave the backdoor:
    the gate fails on the named check, with the reason in words."""
    gate = _stage("gate")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["scenario"] = "test-none"
    params["gate"]["force_fail"] = False
    _write_report(root, _report(known_patched=0.95))
    result = gate.decide(params)
    assert not result["passed"]
    assert [c["name"] for c in result["checks"] if not c["passed"]] == ["attention_mediation"]
    assert result["reasons"][0].startswith("attention mediation FAILED") and "AtPatch cannot remove it" in result["reasons"][0]
    _write_report(root, _report())
    assert gate.decide(params)["passed"]


def test_gate_absolute_checks(root):
    gate = _stage("gate")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["scenario"] = "test-none"  # a model with no champion: only the absolute checks
    params["gate"]["force_fail"] = False
    _write_report(root, _report(ca=0.87, asr=0.2, flag=0.05, auroc=float("nan")))
    result = gate.decide(params)
    assert not result["passed"]
    assert {c["name"] for c in result["checks"] if not c["passed"]} == {
        "ca_drop", "asr_over_floor", "clean_flag_rate", "column_auroc"}
    assert next(c for c in result["checks"] if c["name"] == "column_auroc")["value"] is None


def test_gate_refuses_a_patch_that_fails_only_the_paired_criterion(root):
    """ASR sits at its floor, but inputs the model answered correctly without the trigger still flip to the
    target with it (the floor hid them: other inputs went the other way): fails only trigger_caused_flips."""
    gate = _stage("gate")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["scenario"] = "test-none"
    params["gate"].update(force_fail=False, max_trigger_caused_flips=0.01)
    _write_report(root, _report(asr=0.021, floor=0.02, flips=0.03))
    result = gate.decide(params)
    assert [c["name"] for c in result["checks"] if not c["passed"]] == ["trigger_caused_flips"]
    assert result["reasons"] == ["trigger_caused_flips = 0.0300, expected <= 0.0100"]
    _write_report(root, _report(flips=0.004))
    assert gate.decide(params)["passed"]
    params["gate"].pop("max_trigger_caused_flips")  # not set: not judged
    _write_report(root, _report(flips=0.03))
    assert gate.decide(params)["passed"]


def test_gate_judges_a_text_backdoor_against_its_insertion_control(root):
    """With max_asr_over_control (and no floor criterion) the gate compares the patched ASR with the
    insertion control's, paired: it passes while the interval of the difference reaches the tolerance."""
    gate = _stage("gate")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["scenario"] = "test-none"
    params["gate"].pop("max_asr_over_floor")
    params["gate"].update(force_fail=False, max_asr_over_control=0.005)
    report = _report(asr=0.354, floor=0.348)
    for over, interval, passed in ((0.0088, [-0.003, 0.023], True), (0.038, [0.0175, 0.0585], False)):
        _write_report(root, {**report, "control": {"ASR_over_control": over, "ASR_over_control_interval": interval}})
        result = gate.decide(params)
        check = next(c for c in result["checks"] if c["name"] == "asr_over_control")
        assert check["passed"] is passed and check["value"] == over and result["passed"] is passed
        assert "asr_over_floor" not in {c["name"] for c in result["checks"]}
    assert result["reasons"] == ["asr_over_control = 0.0380, its 95% interval starts at 0.0175, expected it to reach "
                                 "<= 0.0050 (the insertion control's rate plus the tolerance)"]
    _write_report(root, report)  # no control in the report: the criterion cannot be judged, and fails
    assert not gate.decide(params)["passed"]


def test_gate_refuses_a_patch_that_changes_unflagged_inputs(root):
    """Nothing flagged must mean nothing changed: one unflagged clean input answered differently fails."""
    gate = _stage("gate")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["scenario"] = "test-none"
    _write_report(root, _report(pass_through=0.999))
    result = gate.decide(params)
    assert [c["name"] for c in result["checks"] if not c["passed"]] == ["clean_pass_through"]
    _write_report(root, _report(pass_through=float("nan")))  # every clean input flagged: undefined, fails too
    assert "clean_pass_through" in {c["name"] for c in gate.decide(params)["checks"] if not c["passed"]}


FAIR_NAME = "tiny-fair"  # registered as atpatch-tiny-fair


def _fair_report(flip=0.02, ca=0.855, flip_before=0.2, dp=(0.2, 0.05), eo=(0.2, 0.05)) -> dict:
    from atpatch.eval.mediation import MAX_GAP, judged

    mediation = judged({"family": "fairness", "fault_rate_unpatched": flip_before, "fault_rate_known_patched": 0.0,
                        "fault_rate_clean": 0.0}, MAX_GAP)
    mode = {"CA": ca, "flip_rate": flip, "dp_diff": dp[1], "eo_diff": eo[1], "clean_pass_through_exact": 1.0}
    return {"scenario": FAIR_NAME, "default_mode": "two-pass", "mediation": mediation, "definitions": {},
            "unpatched": {"CA": 0.86, "flip_rate": flip_before, "dp_diff": dp[0], "eo_diff": eo[0]},
            "patched": {"two-pass": mode}}


def _fair_params(root: Path) -> dict:
    out = root / "metrics" / FAIR_NAME
    return {"seed": 0, "scenario": FAIR_NAME, "kind": "tabular-fairness", "patch": {},
            "evaluate": {"out": str(out / "evaluate.json")}, "gate": {
                "out": str(out / "gate.json"), "max_ca_drop": 0.01, "min_flip_rate_reduction": 0.8,
                "min_dp_reduction": 0.5, "min_eo_reduction": 0.5, "min_clean_pass_through": 1.0,
                "regression_tolerance": 0.002, "force_fail": False}}


def _write_fair(params: dict, report: dict) -> None:
    path = Path(params["evaluate"]["out"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report))


def test_fairness_gate_judges_reductions_and_the_champions_flip_rate(root):
    """The fairness gate: relative reductions, then the flip rate against a registered champion's stored one."""
    from atpatch.ops.registry import log_patch, set_alias

    gate = _stage("gate")
    params = _fair_params(root)
    _write_fair(params, _fair_report())
    assert gate.decide(params)["passed"]
    _write_fair(params, _fair_report(flip=0.1, dp=(0.2, 0.15)))
    failed = {c["name"] for c in gate.decide(params)["checks"] if not c["passed"]}
    assert failed == {"flip_rate_reduction", "dp_reduction"}

    # A champion with flip rate 0.02: a candidate at 0.03 (still an 85% reduction) regresses against it.
    example = pd.DataFrame({"image": [_images(1)[0].reshape(-1).tolist()]})
    config = {"mode": "two-pass", "patch_layers": None, "benign_value": "zero", "input": "image"}
    mv = log_patch(root / "victim", root / "detector", config, f"atpatch-{FAIR_NAME}", example,
                   metrics={"patched.flip_rate": 0.02, "patched.CA": 0.855})
    set_alias(f"atpatch-{FAIR_NAME}", "champion", mv.version)
    _write_fair(params, _fair_report(flip=0.03))
    result = gate.decide(params)
    assert result["champion_version"] == str(mv.version)
    assert [c["name"] for c in result["checks"] if not c["passed"]] == ["flip_rate_vs_champion"]


def test_a_gap_the_patch_creates_fails_and_gate_json_is_standard(root):
    """No flips before, some after: the reduction is undefined; the check fails and gate.json stays JSON
    that strict parsers read (null, not -Infinity)."""
    gate = _stage("gate")
    params = _fair_params(root)
    params["scenario"] = "tiny-fair-none"  # no champion
    _write_fair(params, _fair_report(flip_before=0.0, flip=0.01))
    result = gate.main(params)
    check = next(c for c in result["checks"] if c["name"] == "flip_rate_reduction")
    assert not result["passed"] and not check["passed"] and check["value"] is None
    assert "flip_rate_reduction is undefined" in " ".join(result["reasons"])

    def no_constants(name):
        raise ValueError(f"non-standard JSON constant {name}")

    json.loads(Path(params["gate"]["out"]).read_text(), parse_constant=no_constants)
