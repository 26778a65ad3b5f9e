"""The headline row `dvc metrics show` prints: the right numbers under the right names, per family."""

from atpatch.eval.headline import headline

REPORT = {"default_mode": "two-pass",
          "unpatched": {"CA": 0.88, "ASR": 1.0, "ASR_floor": 0.02, "flip_rate": 0.1, "definitions": {}},
          "patched": {"two-pass": {"CA": 0.87, "ASR": 0.021, "input_flag_rate_clean": 0.001,
                                   "input_flag_rate_triggered": 0.99, "column_auroc": 1.0,
                                   "latency_ratio_default": 1.2, "flip_rate": 0.0},
                      "online": {"CA": 0.5, "ASR": 0.9}}}


def test_backdoor_headline_reads_the_default_mode():
    h = headline(REPORT, fairness=False)
    assert h == {"CA_before": 0.88, "CA_after": 0.87, "ASR_before": 1.0, "ASR_after": 0.021, "ASR_floor": 0.02,
                 "flagged_clean": 0.001, "flagged_faulty": 0.99, "column_auroc": 1.0, "latency_x": 1.2}


def test_fairness_headline_has_no_backdoor_keys_and_skips_missing():
    h = headline(REPORT, fairness=True)
    assert h == {"CA_before": 0.88, "CA_after": 0.87, "flip_before": 0.1, "flip_after": 0.0,
                 "flagged_clean": 0.001, "column_auroc": 1.0, "latency_x": 1.2}


def test_headline_rounds():
    report = {**REPORT, "patched": {"two-pass": {**REPORT["patched"]["two-pass"], "CA": 0.123456789}}}
    assert headline(report, fairness=False, digits=3)["CA_after"] == 0.123


def test_every_metric_definition_is_on_the_metrics_page():
    """docs/metrics.md lists each definition the reports carry (a new metric must be documented)."""
    from pathlib import Path

    from atpatch.eval.backdoor_eval import ORACLE_FLIPS
    from atpatch.eval.insertion import INSERTION_DEFINITIONS
    from atpatch.eval.metrics import DEFINITIONS

    page = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    assert [k for k in {**DEFINITIONS, **ORACLE_FLIPS, **INSERTION_DEFINITIONS} if f"**{k}**" not in page] == []
