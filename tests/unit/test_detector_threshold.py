"""Detector calibration and flag decisions on logits (pure tensor math; the network is bypassed)."""

import math

import torch

from atpatch.core.detector import Detector, DetectorConfig


def _detector() -> Detector:
    det = Detector(DetectorConfig(layers=[0], heads=1, kinds=["mean"], model_type="vit"))
    det.logits = lambda features: features[..., 0, 0]  # features [B, K, 1, 1] are the position logits
    return det


def _features(logits: list[list[float]]) -> torch.Tensor:
    return torch.tensor(logits)[..., None, None]


def test_saturated_scores_still_separate_on_logits():
    det = _detector()
    # Every clean input's best position scores exactly 1.0 in float32 (logits 20..39), yet they are ordered.
    clean = _features([[20.0 + i, -5.0] for i in range(20)])
    assert bool((torch.sigmoid(clean[..., 0, 0].amax(-1)) == 1.0).all())
    det.calibrate(clean, torch.ones(20, 2, dtype=torch.bool), fpr=0.1, min_threshold=0.5)
    assert det.config.logit_threshold == 37.0  # the 3rd largest: 2 of 20 inputs (10%) may be flagged
    assert det.config.calibration["flagged_rate"] == 0.1
    triggered = torch.tensor([[-5.0, 45.0]])  # score 1.0 as well, but above the cut
    assert det.flags(triggered).tolist() == [[False, True]]


def test_min_threshold_floors_the_cut_and_candidates_are_respected():
    det = _detector()
    clean = _features([[-3.0, -4.0], [-2.0, 9.0]])
    candidate = torch.tensor([[True, True], [True, False]])  # the 9.0 is not a candidate: ignored
    det.calibrate(clean, candidate, fpr=0.0, min_threshold=0.5)
    assert det.config.logit_threshold == 0.0 and det.config.threshold == 0.5
    assert det.flags(torch.tensor([0.0, 0.1])).tolist() == [False, True]


def test_set_threshold_moves_both_views():
    det = _detector()
    det.set_threshold(0.9)
    assert math.isclose(det.flag_logit, math.log(9.0)) and det.config.threshold == 0.9
    det.set_threshold(1.0)
    assert det.flag_logit == math.inf and not det.flags(torch.tensor([1e9])).any()


def test_recall_bound_moves_the_cut_to_the_middle_of_the_gap():
    det = _detector()
    clean = _features([[-9.0 + i, -20.0] for i in range(10)])  # input maxima -9..0
    faulty = _features([[-20.0, 8.0], [-20.0, 10.0], [30.0, 12.0]])  # fault token at position 1
    fault_tokens = torch.tensor([[False, True]] * 3)  # the 30.0 is not a fault token: it does not count
    det.calibrate(clean, torch.ones(10, 2, dtype=torch.bool), fpr=0.0, min_threshold=0.0001,
                  faulty=(faulty, fault_tokens), recall=1.0)
    c = det.config.calibration
    assert c["fpr_cut_logit"] == 0.0 and c["recall_cut_logit"] == 8.0
    assert det.config.logit_threshold == 4.0  # the middle of (0, 8)
    assert c["flagged_rate"] == 0.0 and c["faulty_flagged_rate"] == 1.0


def test_recall_bound_below_the_fpr_cut_leaves_the_fpr_cut():
    det = _detector()
    clean = _features([[float(i), -20.0] for i in range(10)])  # maxima 0..9
    faulty = _features([[-20.0, 3.0], [-20.0, 20.0]])
    det.calibrate(clean, torch.ones(10, 2, dtype=torch.bool), fpr=0.1, min_threshold=0.5,
                  faulty=(faulty, torch.ones(2, 2, dtype=torch.bool)), recall=1.0)
    assert det.config.logit_threshold == 8.0  # FPR 0.1 of 10: one input (the 9.0) may be flagged
    assert det.config.calibration["faulty_flagged_rate"] == 0.5


def test_recall_allows_the_lowest_faulty_inputs_to_go_unflagged():
    det = _detector()
    faulty = _features([[float(v)] for v in (1.0, 5.0, 6.0, 7.0)])
    det.calibrate(_features([[-1.0]]), torch.ones(1, 1, dtype=torch.bool), fpr=0.0, min_threshold=0.5,
                  faulty=(faulty, torch.ones(4, 1, dtype=torch.bool)), recall=0.75)
    assert det.config.calibration["recall_cut_logit"] == 5.0  # one of four (the 1.0) may be missed
    assert det.config.logit_threshold == 2.5
