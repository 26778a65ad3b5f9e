"""The attention-mediation verdict (atpatch.eval.mediation.judged) on hand-set rates."""

from atpatch.eval.mediation import fairness_mediation, judged


def rates(unpatched: float, known: float, clean: float) -> dict:
    return {"family": "backdoor", "fault_rate_unpatched": unpatched, "fault_rate_known_patched": known,
            "fault_rate_clean": clean}


def test_fault_removed_to_the_clean_rate_passes():
    m = judged(rates(1.0, 0.03, 0.02), 0.03)
    assert m["passed"] and m["fault_present"] and abs(m["gap"] - 0.01) < 1e-12


def test_fault_left_above_the_clean_rate_fails():
    m = judged(rates(1.0, 0.13, 0.02), 0.03)
    assert not m["passed"] and "FAILED" in m["message"] and "13.0%" in m["message"]


def test_limit_is_inclusive_and_set_by_the_caller():
    assert judged(rates(1.0, 0.05, 0.0), 0.05)["passed"]
    assert not judged(rates(1.0, 0.05, 0.0), 0.04)["passed"]


def test_no_fault_on_the_debugging_set_is_an_empty_check():
    m = judged(rates(0.10, 0.10, 0.09), 0.03)
    assert m["passed"] and not m["fault_present"] and "nothing to check" in m["message"]


def test_fairness_compares_flip_rates_with_zero():
    assert fairness_mediation(0.3, 0.01, 100)["passed"]
    m = fairness_mediation(0.3, 0.2, 100)
    assert not m["passed"] and "counterfactual flip rate" in m["message"]
