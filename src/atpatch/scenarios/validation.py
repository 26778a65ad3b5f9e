"""Great Expectations (1.x) validation of generated data splits.

Images are summarised per row (pixel_min, pixel_max, pixel_has_nan) and token labels are
checked against a recomputation from the stored trigger position, so that every check is a
plain column expectation on a small pandas DataFrame (~0.1 s a split).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from atpatch.scenarios.data.triggers import token_labels as compute_token_labels
from atpatch.scenarios.data.triggers import whole_image_labels
from atpatch.core.errors import DataValidationError

_CONTEXT: Any = None
_COUNTER = itertools.count()
NUM_CLASSES = 10


def _context() -> Any:
    """One ephemeral GX context per process (creating it is cheap; importing GX is not)."""
    global _CONTEXT
    if _CONTEXT is None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        _CONTEXT = ctx
    return _CONTEXT


# ---------------------------------------------------------------- frames (row-level columns)


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
    "trigger_y", "triggered"
    columns, and becomes labels_consistent, clean_rows_zero, triggered_has_label,
    position_consistent (bool [N] each). Other 1-D columns are copied.
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
    return pd.DataFrame(out)


# ---------------------------------------------------------------- suites


def _common(df_columns: Iterable[str]) -> list:
    import great_expectations as gx

    E = gx.expectations
    cols = list(df_columns)
    exps: list = [E.ExpectColumnValuesToNotBeNull(column=c) for c in cols if c not in ("pixel_min", "pixel_max")]
    if "pixel_min" in cols:
        exps += [
            # NaN counts as null: an all-NaN image fails here, a partly-NaN one on pixel_has_nan.
            E.ExpectColumnValuesToNotBeNull(column="pixel_min"),
            E.ExpectColumnValuesToNotBeNull(column="pixel_max"),
            E.ExpectColumnValuesToBeBetween(column="pixel_min", min_value=0, max_value=255),
            E.ExpectColumnValuesToBeBetween(column="pixel_max", min_value=0, max_value=255),
            E.ExpectColumnValuesToBeInSet(column="pixel_has_nan", value_set=[False]),
        ]
    if "label" in cols:
        exps.append(E.ExpectColumnValuesToBeInSet(column="label", value_set=list(range(NUM_CLASSES))))
    return exps


def expectations_for(split: str, df_columns: Iterable[str], *, target_label: int, poison_rate: float | None = None,
                     n_rows: int | None = None) -> list:
    """The expectation list for one split kind: 'train', 'test_clean', 'test_triggered' or 'debug'."""
    import great_expectations as gx

    E = gx.expectations
    exps = _common(df_columns)
    if split == "train":
        if poison_rate is None or not n_rows:
            raise DataValidationError("train suite needs poison_rate and n_rows")
        tol = 1.0 / n_rows  # round(rate * N) / N is within 0.5 / N of rate
        exps += [
            E.ExpectColumnMeanToBeBetween(column="poisoned", min_value=poison_rate - tol, max_value=poison_rate + tol),
            E.ExpectColumnValuesToBeInSet(column="poison_label_ok", value_set=[True]),
        ]
    elif split == "test_triggered":
        exps.append(E.ExpectColumnValuesToNotBeInSet(column="label", value_set=[target_label]))
    elif split == "debug":
        exps += [E.ExpectColumnValuesToBeInSet(column=c, value_set=[True])
                 for c in ("labels_consistent", "clean_rows_zero", "triggered_has_label", "position_consistent")]
        exps.append(E.ExpectColumnValuesToBeInSet(column="part", value_set=["fit", "calib"]))
    elif split != "test_clean":
        raise DataValidationError(f"no validation suite for split kind {split!r}")
    return exps


def table_expectations(df_columns: Iterable[str], *, labels: Iterable[int], value_sets: Mapping[str, Iterable] = (),
                       min_rows: int = 1, nonempty_text: Iterable[str] = ()) -> list:
    """Expectations of a tabular or text split: no nulls, labels and categorical values in their sets,
    at least `min_rows` rows, text columns non-empty."""
    import great_expectations as gx

    E = gx.expectations
    exps = [E.ExpectColumnValuesToNotBeNull(column=c) for c in df_columns]
    exps.append(E.ExpectColumnValuesToBeInSet(column="label", value_set=list(labels)))
    exps += [E.ExpectColumnValuesToBeInSet(column=c, value_set=list(v)) for c, v in dict(value_sets).items()]
    exps += [E.ExpectColumnValueLengthsToBeBetween(column=c, min_value=1) for c in nonempty_text]
    exps.append(E.ExpectTableRowCountToBeBetween(min_value=min_rows))
    return exps


# ---------------------------------------------------------------- running


def _describe(res: Any) -> str:
    cfg = res.expectation_config
    kwargs = {k: v for k, v in cfg.kwargs.items() if k != "batch_id"}
    column = kwargs.pop("column", None)
    info = res.exception_info or {}
    msgs = [info.get("exception_message")] if "raised_exception" in info else [
        v.get("exception_message") for v in info.values() if isinstance(v, dict)]
    msgs = [m for m in msgs if m]
    r = dict(res.result or {})
    if msgs:
        seen = "error: " + "; ".join(sorted(set(msgs)))
    elif "observed_value" in r:
        obs = r["observed_value"]
        seen = f"observed {obs.item() if hasattr(obs, 'item') else obs!r}"  # numpy scalar -> plain
    else:
        seen = (f"observed {r.get('unexpected_count')} unexpected of {r.get('element_count')} rows, "
                f"e.g. {r.get('partial_unexpected_list', [])[:5]} at rows {r.get('partial_unexpected_index_list', [])[:5]}")
    return f"{cfg.type}(column={column!r}, expected {kwargs}): {seen}"


def validate_split(name: str, df: Any, expectations: Iterable[Any]) -> None:
    """Run `expectations` (GX expectation objects) on DataFrame `df`.

    Raises DataValidationError naming split `name` and, for each failed expectation, its type,
    column, expected arguments and the observed value (or unexpected count and examples).
    """
    import great_expectations as gx

    ctx = _context()
    uid = f"{name}-{next(_COUNTER)}"
    ds = ctx.data_sources.add_pandas(f"ds-{uid}")
    batch_def = ds.add_dataframe_asset(name=f"asset-{uid}").add_batch_definition_whole_dataframe("all")
    # Copies with no id: one expectation object may then be reused across suites and calls.
    exps = [e.copy(update={"id": None}, deep=True) for e in expectations]
    suite = ctx.suites.add(gx.ExpectationSuite(name=f"suite-{uid}", expectations=exps))
    vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=f"vd-{uid}", data=batch_def, suite=suite))
    try:
        result = vd.run(batch_parameters={"dataframe": df})
    finally:
        # Keep the shared context small across many calls.
        ctx.validation_definitions.delete(vd.name)
        ctx.suites.delete(suite.name)
        ctx.data_sources.delete(ds.name)
    if result.success:
        return
    failed = [_describe(r) for r in result.results if not r.success]
    raise DataValidationError(
        f"split '{name}' failed {len(failed)} expectation(s) ({len(df)} rows):\n  - " + "\n  - ".join(failed)
    )
