"""Recall-bounded calibration: held-out triggered inputs stay out of training and bound the threshold."""

import torch
from safetensors.torch import load_file

from atpatch.ops.patching import build_patch, recall_holdout
from tiny_patch import tiny_debug_set, tiny_victim


def test_holdout_is_a_seeded_share_of_the_faulty_inputs():
    faulty = torch.tensor([True, False] * 10)
    held = recall_holdout(faulty, 0.3, seed=4)
    assert int(held.sum()) == 3 and not bool((held & ~faulty).any())
    assert torch.equal(held, recall_holdout(faulty, 0.3, seed=4))
    assert not recall_holdout(faulty, 0.0, seed=4).any()


def test_build_patch_calibrates_recall_on_held_out_triggered_inputs(tmp_path):
    victim = tiny_victim(tmp_path / "victim", 0)
    debug = tiny_debug_set(tmp_path / "debug.safetensors", seed=0)
    n_triggered = int(load_file(str(debug))["triggered"].sum())
    built = build_patch(victim, debug, tmp_path / "patch", progress=False,
                        settings={"calibration_fpr": 0.0, "recall_holdout": 0.25, "calibration_recall": 0.9,
                                  "network": {"steps": 60, "batch_size": 64}})
    m = built["metrics"]
    assert m["recall_holdout_inputs"] == int(0.25 * n_triggered)
    from atpatch import Detector

    cal = Detector.load(built["detector"]).config.calibration
    assert cal["recall_inputs"] == m["recall_holdout_inputs"] and cal["recall_target"] == 0.9
    # The threshold is the FPR cut, or the middle of the gap up to the recall cut when there is one.
    low, high, thr = cal["fpr_cut_logit"], cal["recall_cut_logit"], Detector.load(built["detector"]).flag_logit
    assert thr == ((low + high) / 2 if high > low else low)


def test_holdout_share_out_of_range_is_refused(tmp_path):
    import pytest

    from atpatch.core.errors import AtPatchError

    with pytest.raises(AtPatchError, match="recall_holdout"):
        recall_holdout(torch.tensor([True, True]), 1.0, seed=0)
