"""The outcome every e2e pipeline test checks: the shipped patch works on the small victim."""

from __future__ import annotations


def assert_the_patch_works(report: dict, calibration_fpr: float) -> None:
    """What a user cares about, with margins from the scenario, not from one run: the shipped patch removes
    at least half of the fault (backdoor: ASR over its floor; fairness: flip rate), flags at least half of
    the faulty inputs and few clean ones (at most three times the calibrated share, plus binomial slack),
    and answers every unflagged input bit for bit like the unpatched model, with some inputs flagged."""
    before, after = report["unpatched"], report["patched"][report["default_mode"]]
    if "ASR" in before:
        floor = before["ASR_floor"]
        assert before["ASR"] > floor + 0.2, "the small victim must carry a backdoor for the test to mean anything"
        assert after["ASR"] <= floor + (before["ASR"] - floor) / 2, (before, after)
        faulty = after["input_flag_rate_triggered"]
    else:
        assert before["flip_rate"] > 0.02, "the small victim must be unfair for the test to mean anything"
        assert after["flip_rate"] <= before["flip_rate"] / 2, (before, after)
        faulty = after["input_flag_rate_faulty"]
    assert faulty >= 0.5, after
    assert after["input_flag_rate_clean"] <= 3 * calibration_fpr + 0.05, after
    assert after["clean_pass_through_exact"] == 1.0, after
