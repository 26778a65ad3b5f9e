"""Great Expectations (1.x) at the pipeline's data boundaries, with suites stored in the repository.

Each suite is one JSON file, `gx/expectations/<name>.json` (`atpatch.conventions.SUITES_DIR`), loaded
at run time. Values that depend on the params or the profile (sizes, rates, label sets) are GX suite
parameters (`{"$PARAMETER": "name"}` in the JSON), given by the caller at each run. The frames the
suites check are built by `atpatch.scenarios.frames` (one small pandas row per input or metric).

`validate` runs one or more suites on a frame. A failure raises DataValidationError as one line:
the file checked, then for each failed expectation its type, column, expected arguments and what
was observed. With `docs`, the results of every validation this process ran are rendered as Data
Docs (HTML) into that folder, before any error is raised (the docs show the failure too).
"""

from __future__ import annotations

import itertools
import json
from contextlib import contextmanager
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from atpatch.conventions import SUITES_DIR
from atpatch.core.errors import DataValidationError

REPO = Path(__file__).resolve().parents[3]
_CONTEXT: Any = None
_COUNTER = itertools.count()


def suites_dir() -> Path:
    """The stored suites: the repository's (a workspace links `gx/` to them for DVC's hashes)."""
    return REPO / SUITES_DIR


def load_suite(name: str) -> dict:
    """Suite `name` as stored: {"name", "expectations": [{"type", "kwargs"}, ...], ...}."""
    path = suites_dir() / f"{name}.json"
    if not path.is_file():
        raise DataValidationError(f"{path}: stored expectation suite {name!r} not found")
    try:
        suite = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataValidationError(f"{path}: not valid JSON ({exc})") from None
    if suite.get("name") != name or not isinstance(suite.get("expectations"), list):
        raise DataValidationError(f"{path}: expected a suite named {name!r} with a list of expectations")
    return suite


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


def _suite(name: str) -> Any:
    """The stored suite `name` in the context, added once per process (Data Docs render it by name)."""
    import great_expectations as gx
    from great_expectations.exceptions import DataContextError

    ctx = _context()
    try:
        return ctx.suites.get(name)
    except DataContextError:  # not loaded yet
        stored = load_suite(name)
        return ctx.suites.add(gx.ExpectationSuite(name=name, expectations=stored["expectations"],
                                                  meta=stored.get("meta")))


def _site(docs: Path) -> str:
    """The Data Docs site writing into folder `docs` (added to the context on first use)."""
    import hashlib

    docs = Path(docs).resolve()
    name = "site-" + hashlib.sha1(str(docs).encode()).hexdigest()[:12]
    ctx = _context()
    if name not in ctx.get_site_names():
        ctx.add_data_docs_site(name, {
            "class_name": "SiteBuilder", "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs)}})
    return name


# ---------------------------------------------------------------- messages


def _plain(value: Any) -> Any:
    """numpy scalars (in GX's results) as plain Python values, for readable messages."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.item() if hasattr(value, "item") else value


def _seen(res: Any) -> str:
    info = res.exception_info or {}
    msgs = [info.get("exception_message")] if "raised_exception" in info else [
        v.get("exception_message") for v in info.values() if isinstance(v, dict)]
    msgs = [m for m in msgs if m]
    r = dict(res.result or {})
    if msgs:
        return "error: " + "; ".join(sorted(set(msgs)))
    if "observed_value" in r:
        return f"got {_plain(r['observed_value'])!r}"
    return (f"got {r.get('unexpected_count')} unexpected of {r.get('element_count')} rows, "
            f"e.g. {_plain(r.get('partial_unexpected_list', [])[:5])} "
            f"at {_plain(r.get('partial_unexpected_index_list', [])[:5])}")


def describe(res: Any) -> str:
    """One failed expectation: type, column, expected arguments, what was observed."""
    cfg = res.expectation_config
    kwargs = {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id", "column")}
    return f"{cfg.type}(column={cfg.kwargs.get('column')!r}) expected {kwargs}, {_seen(res)}"


# ---------------------------------------------------------------- running


def _run(suite_name: str, df: Any, name: str, params: Mapping, id_column: str | None) -> Any:
    import great_expectations as gx

    ctx = _context()
    asset = re.sub(r"[^\w.-]+", "_", name).strip("_")  # Data Docs file names: no slashes
    ds = ctx.data_sources.add_pandas(f"run-{next(_COUNTER)}")
    batch_def = ds.add_dataframe_asset(name=asset).add_batch_definition_whole_dataframe("all")
    vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=f"{ds.name}-{suite_name}", data=batch_def,
                                                                suite=_suite(suite_name)))
    result_format = {"result_format": "SUMMARY", "partial_unexpected_count": 5}
    if id_column:  # rows are named by this column in the messages and the docs (e.g. the metric)
        result_format.update(result_format="COMPLETE", unexpected_index_column_names=[id_column])
    try:
        return vd.run(batch_parameters={"dataframe": df}, expectation_parameters=dict(params),
                      result_format=result_format)
    finally:  # keep the context small; the results stay in its store for Data Docs
        ctx.validation_definitions.delete(vd.name)
        ctx.data_sources.delete(ds.name)


@contextmanager
def rendered(docs: Path | str | None):
    """Render the Data Docs of every validation so far into folder `docs` (if given) once the block ends,
    also when it raises (the docs show the failure): once for a group of validations, not after each."""
    try:
        yield
    finally:
        if docs is not None:
            _context().build_data_docs(site_names=[_site(Path(docs))])


def validate(name: str, df: Any, suites: Iterable[str], params: Mapping | None = None,
             docs: Path | str | None = None, id_column: str | None = None) -> float:
    """Run the stored `suites` on DataFrame `df` (what file or split `name` holds); return seconds taken.

    params: the suites' parameters. docs: render Data Docs into this folder (a group of validations
    passes None and renders once with `rendered`). Raises DataValidationError, one line, naming `name`
    and every failed expectation.
    """
    import time

    t0 = time.perf_counter()
    with rendered(docs):
        failed = []
        for suite in suites:
            result = _run(suite, df, name, params or {}, id_column)
            failed += [describe(r) for r in result.results if not r.success]
        if failed:
            raise DataValidationError(f"{name}: {len(failed)} expectation(s) failed ({len(df)} rows): "
                                      + "; ".join(failed))
    return time.perf_counter() - t0
