"""The headline numbers of one evaluation: a few flat keys, the row `dvc metrics show` prints.

evaluate.json holds everything (definitions, per-group breakdowns, intervals, latency per mode); the
headline picks what a reader compares across runs and experiments: accuracy and the fault rate
before and after the patch (default mode), how many inputs the detector flags, its column AUROC and
the latency ratio. The keys are defined in docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# (headline key, family or None for both, section of evaluate.json, key there), in table order;
# section "patched" means the default mode.
KEYS = (
    ("CA_before", None, "unpatched", "CA"),
    ("CA_after", None, "patched", "CA"),
    ("ASR_before", "backdoor", "unpatched", "ASR"),
    ("ASR_after", "backdoor", "patched", "ASR"),
    ("ASR_floor", "backdoor", "unpatched", "ASR_floor"),
    ("flips_before", "backdoor", "unpatched", "trigger_caused_flips"),
    ("flips_after", "backdoor", "patched", "trigger_caused_flips"),
    ("flip_before", "fairness", "unpatched", "flip_rate"),
    ("flip_after", "fairness", "patched", "flip_rate"),
    ("DP_gap_before", "fairness", "unpatched", "dp_diff"),
    ("DP_gap_after", "fairness", "patched", "dp_diff"),
    ("EO_gap_before", "fairness", "unpatched", "eo_diff"),
    ("EO_gap_after", "fairness", "patched", "eo_diff"),
    ("flagged_clean", None, "patched", "input_flag_rate_clean"),
    ("flagged_faulty", "backdoor", "patched", "input_flag_rate_triggered"),
    ("flagged_faulty", "fairness", "patched", "input_flag_rate_faulty"),
    ("column_auroc", None, "patched", "column_auroc"),
    ("latency_x", None, "patched", "latency_ratio_default"),
)


def headline(report: Mapping[str, Any], fairness: bool, digits: int = 4) -> dict[str, float]:
    """The headline of an evaluate.json report, rounded to `digits`; keys the report lacks are left out."""
    sections = {"unpatched": report["unpatched"], "patched": report["patched"][report["default_mode"]]}
    family = "fairness" if fairness else "backdoor"
    out = {}
    for key, only, section, name in KEYS:
        value = sections[section].get(name)
        if only in (None, family) and isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = round(float(value), digits)
    return out
