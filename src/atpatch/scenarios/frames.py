"""The small pandas frames that the stored suites check (atpatch.scenarios.validation): one row per
input (image, table row, review, debugging input) or per metric, arrays summarised into plain
columns, so that every check is a column expectation (~0.1 s a frame).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import numpy as np

from atpatch.core.errors import DataValidationError
from atpatch.scenarios.data.triggers import token_labels as compute_token_labels
from atpatch.scenarios.data.triggers import whole_image_labels

def image_stats(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-row pixel summary of images [N, H, W] (any dtype): pixel_min, pixel_max (float64 [N],
    NaN ignored), pixel_has_nan (bool [N]). An all-NaN image gets min = max = NaN."""
    flat = np.asarray(images).reshape(len(images), -1)
    if np.issubdtype(flat.dtype, np.floating):
        has_nan = np.isnan(flat).any(axis=1)
        with np.errstate(invalid="ignore"), np.testing.suppress_warnings() as sup:
            sup.filter(RuntimeWarning)  # all-NaN rows: NaN is the intended result
            mn, mx = np.nanmin(flat, axis=1), np.nanmax(flat, axis=1)
    else:
        has_nan = np.zeros(len(flat), bool)
        mn, mx = flat.min(axis=1), flat.max(axis=1)
    return {"pixel_min": mn.astype(np.float64), "pixel_max": mx.astype(np.float64), "pixel_has_nan": has_nan}


def split_frame(columns: Mapping[str, np.ndarray], token_spec: Mapping[str, int] | None = None):
    """Build the DataFrame that the suites check from one split's column arrays.

    columns: "image" [N, H, W] becomes pixel stats; "token_labels" [N, T] needs `token_spec`
    (keys size, patch_size, image_size, min_overlap, optional whole_image for Blend) plus "trigger_x",
    "trigger_y", "triggered" columns, and becomes labels_consistent, clean_rows_zero,
    triggered_has_label, position_consistent (bool [N] each). Other 1-D columns are copied; then
    null_columns (see `null_columns`; the pixel columns are checked on their own: an all-NaN image).
    """
    import pandas as pd

    out: dict[str, np.ndarray] = {}
    for key, arr in columns.items():
        if key == "image":
            out.update(image_stats(arr))
        elif key == "token_labels":
            continue
        else:
            out[key] = np.asarray(arr)
    if "token_labels" in columns:
        if token_spec is None:
            raise DataValidationError("split_frame: token_labels given without token_spec")
        got = np.asarray(columns["token_labels"])
        xs, ys = np.asarray(columns["trigger_x"]), np.asarray(columns["trigger_y"])
        trig = np.asarray(columns["triggered"], bool)
        spec = dict(token_spec)
        whole = spec.pop("whole_image", False)  # Blend: every patch of a triggered image
        want = (whole_image_labels(trig, spec["patch_size"], spec["image_size"]) if whole
                else compute_token_labels(xs, ys, **spec))
        sums = got.reshape(len(got), -1).sum(axis=1)
        # A wrong token count (e.g. another patch size) makes every row inconsistent.
        same_shape = got.shape == want.shape
        out["labels_consistent"] = np.all(got == want, axis=1) if same_shape else np.zeros(len(got), bool)
        out["token_label_sum"] = sums
        out["clean_rows_zero"] = trig | (sums == 0)
        out["triggered_has_label"] = ~trig | (sums > 0)
        placed = (xs >= 0) & (ys >= 0)
        unplaced = (xs == -1) & (ys == -1)
        out["position_consistent"] = np.where(trig, unplaced if whole else placed, unplaced)
    frame = pd.DataFrame(out)
    return frame.assign(null_columns=null_columns(frame.drop(columns=["pixel_min", "pixel_max"], errors="ignore")))


def null_columns(frame) -> np.ndarray:
    """Per row, the names of its null (None/NaN) columns joined by ',' ("" for a complete row): one
    expectation then names the column and the row of every gap."""
    nulls = frame.isna().to_numpy()
    names = np.asarray(frame.columns, dtype=object)
    return np.array([",".join(names[row]) for row in nulls], dtype=object)


def raw_image_frame(images: np.ndarray, labels: np.ndarray):
    """Images [N, H, W] as read from a raw source: label, height, width, dtype and pixel stats per row."""
    import pandas as pd

    images = np.asarray(images)
    if images.ndim != 3:
        raise DataValidationError(f"raw images: expected an array [N, H, W], got shape {images.shape}")
    n, h, w = images.shape
    return pd.DataFrame({"label": np.asarray(labels), "height": np.full(n, h), "width": np.full(n, w),
                         "dtype": np.full(n, str(images.dtype), dtype=object), **image_stats(images)})


def table_frame(frame, known: Mapping[str, Iterable[str]] = ()):
    """A generated table or text split with null_columns, and unknown_values: per row, the
    'column=value' pairs of `known`'s columns whose value is not among the known ones ("" if none)."""
    known = {c: set(v) for c, v in dict(known).items()}
    unknown = [[f"{c}={v}" for c, v in zip(known, row) if v not in known[c]]
               for row in frame[list(known)].itertuples(index=False)] if known else [[]] * len(frame)
    return frame.assign(null_columns=null_columns(frame),
                        unknown_values=np.array(["|".join(u) for u in unknown], dtype=object))


def features_frame(tensors: Mapping):
    """Stage extract's output, one row per debugging input: finite (every feature), has_fault (1 when
    any token is labelled), its shape as n_columns, n_layers, n_features."""
    import pandas as pd
    import torch

    features = tensors["features"]
    n, k, layers, f = features.shape
    return pd.DataFrame({
        "finite": torch.isfinite(features.reshape(n, -1)).all(dim=1).numpy(),
        "has_fault": tensors["token_labels"].reshape(n, -1).bool().any(dim=1).numpy().astype(np.int64),
        "n_columns": np.full(n, k), "n_layers": np.full(n, layers), "n_features": np.full(n, f)})


# Metric names (the last key of a dotted evaluate.json path) that are shares or probabilities, in [0, 1].
# Not: DER, *_reduction (can be negative), gaps, latency ratios. Latencies end in `_s`; counts are
# `count` and `n_*`.
RATE_NAME = re.compile(r"CA|ASR|ASR_floor|oracle_ASR|accuracy|FPR|TPR|selection_rate|flip_rate|dp_diff|eo_diff"
                       r"|trigger_caused_flips|control_ASR|control_flips|oracle_flips|ASR_(before|after)|flips_(before|after)"
                       r"|flagged_\w+"
                       r"|column_(tpr|fpr|auroc)|input_flag_rate_\w+|clean_pass_through_exact|fault_rate_\w+|level")
COUNT_NAME = re.compile(r"count|n_\w+")


def _numbers(d: Mapping, prefix: str = ""):
    for key, value in d.items():
        if isinstance(value, Mapping):
            if key != "definitions":
                yield from _numbers(value, f"{prefix}{key}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield f"{prefix}{key}", float(value)


def metrics_frame(report: Mapping):
    """Every number of a metrics report, one row each: metric (dotted path) and its value under rate,
    seconds or count by its name (the other columns null), or under other."""
    import pandas as pd

    rows = []
    for metric, value in _numbers(report):
        last = metric.rsplit(".", 1)[-1]
        column = ("rate" if RATE_NAME.fullmatch(last) else "seconds" if last.endswith("_s")
                  else "count" if COUNT_NAME.fullmatch(last) else "other")
        rows.append({"metric": metric, column: value})
    return pd.DataFrame(rows, columns=["metric", "rate", "seconds", "count", "other"])
