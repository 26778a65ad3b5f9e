"""The headline metrics against hand-computed cases."""

import math

import numpy as np

from atpatch.eval.metrics import accuracy, attack_success_rate, der, detection_metrics, input_flag_rate


def test_accuracy_counts_equal_labels():
    assert accuracy([1, 2, 3, 0], [1, 2, 0, 0]) == 0.75


def test_asr_excludes_inputs_whose_true_label_is_the_target():
    pred = np.array([0, 0, 1, 0, 0])
    true = np.array([0, 2, 1, 3, 0])  # rows 0 and 4 are target-class images: left out
    assert attack_success_rate(pred, true, target=0) == 2 / 3
    assert math.isnan(attack_success_rate([0, 0], [0, 0], target=0))  # nothing to attack


def test_der_clips_both_terms():
    assert der(asr_before=1.0, asr_after=0.02, ca_before=0.88, ca_after=0.88) == (0.98 + 1) / 2
    assert der(asr_before=1.0, asr_after=0.02, ca_before=0.88, ca_after=0.90) == (0.98 + 1) / 2  # an accuracy gain is not a credit
    assert der(asr_before=0.5, asr_after=0.7, ca_before=0.88, ca_after=0.78) == (0.0 - 0.1 + 1) / 2  # an ASR rise is not a debit
    assert der(asr_before=1.0, asr_after=1.0, ca_before=0.9, ca_after=0.9) == 0.5


def test_input_flag_rate_counts_inputs_with_any_flag():
    flagged = np.array([[False, True, False], [False, False, False], [True, True, False], [False, False, False]])
    assert input_flag_rate(flagged) == 0.5


def test_detection_metrics_on_candidate_positions():
    scores, labels = np.array([0.9, 0.8, 0.3, 0.1, 0.85]), np.array([1, 1, 0, 0, 0])
    flagged = scores > 0.5
    m = detection_metrics(scores, labels, flagged)
    assert m["column_auroc"] == 5 / 6  # one of six positive/negative pairs misordered (0.8 < 0.85)
    assert m["column_tpr"] == 1.0 and m["column_fpr"] == 1 / 3
    assert math.isnan(detection_metrics(scores[2:], labels[2:], flagged[2:])["column_auroc"])


def test_pass_through_counts_only_unflagged_inputs_and_needs_bit_equality():
    from atpatch.eval.metrics import pass_through_rate

    reference = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])
    logits = reference.copy()
    logits[1, 0] += 1e-7  # changed, but flagged: does not count
    logits[2, 1] = np.nextafter(logits[2, 1], 10.0)  # unflagged and one ulp off: not passed through
    flagged = np.array([[False, False], [True, False], [False, False], [False, False]])
    assert pass_through_rate(logits, reference, flagged) == 2 / 3
    assert pass_through_rate(reference, reference, flagged) == 1.0
    assert np.isnan(pass_through_rate(reference, reference, np.ones((4, 2), bool)))  # everything flagged
