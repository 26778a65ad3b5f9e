"""Numbers as the tables and the progress log write them."""

from __future__ import annotations


def pct(v) -> str:
    return "" if v is None else f"{100 * v:.2f}"


def num(v, digits: int = 4) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def secs(v) -> str:
    return "" if v is None else f"{v:.1f}"


def fmt_short(m: dict | None, fairness: bool) -> str:
    """One predictor's headline metrics, for the progress log."""
    if not m:
        return "n/a"
    if fairness:
        return f"CA {100 * m['CA']:.2f} flip {100 * m['flip_rate']:.2f} DP {m['dp_diff']:.3f} EO {m['eo_diff']:.3f}"
    return f"CA {100 * m['CA']:.2f} ASR {100 * m['ASR']:.2f} DER {m['DER']:.4f}"
