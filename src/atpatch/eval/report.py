"""Per-scenario report: metrics before/after with definitions, gate decision, registry state, figures.

    from atpatch.eval.report import build_report
    from atpatch.ops.tracking import log_report
    path = build_report("vision-backdoor")          # -> reports/vision-backdoor.html (self-contained)
    log_report(path, "vision-backdoor")             # the same file as an MLflow artifact

Reads what the pipeline wrote for the scenario: `metrics/<scenario>/evaluate.json` (required),
`gate.json`, `register.json`, `detector.json` and the PNGs in `plots/<scenario>/` (optional: a
missing one is named in the report). Metric keys are rendered whatever they are (backdoor: CA, ASR,
...; fairness: flip rate, parity differences, ...); each gets its definition from evaluate.json's
`definitions` (exact key, case-insensitive key, a known alias, then `FALLBACK_DEFINITIONS`), and a
key with no definition is shown with none. A "Data validation" section links the Great Expectations
Data Docs each validating stage rendered (`reports/data_docs/<scenario>/<stage>/index.html`). Nested values (e.g. per protected attribute) are
flattened to dotted keys. The metric table logic here is shared with `atpatch report`.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
from pathlib import Path

import os

from atpatch.conventions import REPORT_FILES, VALIDATED_STAGES, data_docs_index, html_report, plots_dir, report_path
from atpatch.core.errors import AtPatchError
from atpatch.eval.headline import KEYS as HEADLINE_KEYS

FIGURES = (  # known plots first, with captions; any other PNG in the folder follows
    ("before_after.png", "Metrics before and after the patch"),
    ("roc.png", "ROC of the detector (column level)"),
    ("attention_maps.png", "Attention maps of clean and triggered inputs, before and after (flagged columns outlined)"),
)
# evaluate.json key -> definitions key, where the two are spelled differently.
ALIASES = {"column_auroc": "column_AUROC", "input_flag_rate_clean": "input_FPR",
           "input_flag_rate_triggered": "input_TPR", "latency_ratio_default": "latency_ratio"}
FALLBACK_DEFINITIONS = {
    "column_tpr": "share of fault-carrying candidate columns that are flagged",
    "column_fpr": "share of benign candidate columns that are flagged",
    "clean_pass_through_exact": "share of unflagged clean inputs whose patched logits equal the unpatched model's "
                                "logits (its own attention implementation) bit for bit",
    "latency_ratio_eager": "median batch latency patched / unpatched with eager attention",
}
SUFFIX_DEFINITIONS = (  # latency tables: <split>_<variant>_s, <split>_<mode>_ratio_<baseline>
    ("_ratio_default", "median batch latency patched / unpatched (model's default attention implementation)"),
    ("_ratio_eager", "median batch latency patched / unpatched with eager attention"),
    ("_s", "median latency of one batch, seconds"),
)


def scenario_paths(scenario: str, root: str | Path = ".") -> dict[str, Path]:
    """Where the pipeline writes the scenario's reports and plots (relative to the project root)."""
    _check_name(scenario)
    root = Path(root)
    paths = {name: root / report_path(scenario, name) for name in REPORT_FILES}
    paths["plots"] = root / plots_dir(scenario)
    paths["html"] = root / html_report(scenario)
    paths["data_docs"] = {stage: root / data_docs_index(scenario, stage) for stage in VALIDATED_STAGES}
    return paths


def _check_name(scenario: str) -> None:
    if not scenario or "/" in scenario or "\\" in scenario or scenario.startswith("."):
        raise AtPatchError(f"scenario: expected a name like 'vision-backdoor', got {scenario!r}")


def load_reports(scenario: str, root: str | Path = ".") -> dict:
    """{"evaluate", "gate", "register", "detector"}: parsed JSON, None where the file is absent.

    AtPatchError when evaluate.json is missing (naming the file and how to make it) or any file is broken.
    """
    paths = scenario_paths(scenario, root)
    out = {}
    for name in REPORT_FILES:
        path = paths[name]
        if not path.is_file():
            out[name] = None
            continue
        try:
            out[name] = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise AtPatchError(f"{path}: not valid JSON ({exc})") from exc
    if out["evaluate"] is None:
        available = sorted(p.name for p in (Path(root) / "metrics").glob("*/") if (p / "evaluate.json").is_file())
        raise AtPatchError(f"{paths['evaluate']}: not found; run the pipeline first (atpatch run --scenario {scenario})"
                           + (f"; scenarios with metrics: {available}" if available else ""))
    if not isinstance(out["evaluate"], dict):
        raise AtPatchError(f"{paths['evaluate']}: expected a JSON object")
    return out


def flatten(d, prefix: str = "") -> dict:
    """{'sex': {'flip_rate': 0.1}} -> {'sex.flip_rate': 0.1}; non-dict values kept as they are."""
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d} if prefix else {"value": d}
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        out.update(flatten(value, f"{name}.") if isinstance(value, dict) else {name: value})
    return out


def patched_modes(evaluate: dict) -> dict[str, dict]:
    """Patched metrics by mode; a `patched` section holding metrics directly counts as one mode."""
    patched = evaluate.get("patched") or {}
    if not isinstance(patched, dict):
        return {}
    if patched and all(isinstance(v, dict) for v in patched.values()):
        return patched
    return {str(evaluate.get("default_mode") or "patched"): patched}


def definition_for(name: str, definitions: dict | None) -> str:
    """The definition of metric `name` (a dotted key looks up its last part too); "" when none is known."""
    definitions = definitions or {}
    folded = {str(k).lower(): v for k, v in definitions.items()}
    for key in (name, name.rsplit(".", 1)[-1]):
        for cand in (key, ALIASES.get(key)):
            if cand is None:
                continue
            if cand in definitions:
                return str(definitions[cand])
            if cand.lower() in folded:
                return str(folded[cand.lower()])
        if key in FALLBACK_DEFINITIONS:
            return FALLBACK_DEFINITIONS[key]
    last = name.rsplit(".", 1)[-1]
    for suffix, text in SUFFIX_DEFINITIONS:
        if last.endswith(suffix):
            return text
    return ""


def metric_rows(evaluate: dict, mode: str | None = None) -> tuple[str | None, list[dict]]:
    """(mode shown, rows {name, before, after, definition}) of the before/after metrics table."""
    modes = patched_modes(evaluate)
    if mode is None:
        mode = evaluate.get("default_mode") if evaluate.get("default_mode") in modes else next(iter(modes), None)
    elif mode not in modes:
        raise AtPatchError(f"mode: expected one of {sorted(modes)}, got {mode!r}")
    before = flatten(evaluate.get("unpatched") or {}) if evaluate.get("unpatched") else {}
    after = flatten(modes[mode]) if mode else {}
    names = list(before) + [k for k in after if k not in before]
    definitions = evaluate.get("definitions")
    return mode, [{"name": n, "before": before.get(n), "after": after.get(n), "definition": definition_for(n, definitions)}
                  for n in names]


def other_sections(evaluate: dict) -> dict[str, dict]:
    """Top-level numbers ("other metrics") and every other top-level table (e.g. latency), flattened."""
    skip = {"unpatched", "patched", "definitions", "scenario", "default_mode"}
    scalars = {k: v for k, v in evaluate.items() if k not in skip and not isinstance(v, (dict, list))}
    out = {"other metrics": scalars} if scalars else {}
    for key, value in evaluate.items():
        if key not in skip and isinstance(value, dict):
            out[key] = flatten(value)
    return out


def format_value(value) -> str:
    """Numbers to 4 decimals (large ones to 4 significant digits), None/NaN as a dash, the rest as text."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and math.isnan(value):
            return "-"
        if isinstance(value, int):
            return str(value)
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.4g}"
    return str(value)


def mediation_summary(evaluate: dict) -> str:
    """The attention-mediation verdict in plain words (evaluate.json's `mediation.message`)."""
    m = evaluate.get("mediation")
    if not isinstance(m, dict) or not m.get("message"):
        return "attention mediation: not computed (evaluate.json has no `mediation` block; rerun stage evaluate)"
    return m["message"]


def gate_summary(gate: dict | None) -> str:
    """One line: PASSED / FAILED (reasons) / no gate decision."""
    if gate is None:
        return "no gate decision (gate.json not found)"
    if gate.get("passed"):
        return "PASSED"
    reasons = gate.get("reasons") or []
    return "FAILED" + (f": {'; '.join(map(str, reasons))}" if reasons else "")


# -- Markdown (the Prefect flows' run artifact) ----------------------------------------------------
# The numbers a reader of a run looks for first (the headline's, by their evaluate.json names); a
# scenario shows those its evaluate.json has.
HEADLINE = tuple(dict.fromkeys(name for _, _, _, name in HEADLINE_KEYS))


def _md_row(cells) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def markdown_summary(scenario: str, reports: dict) -> str:
    """Headline metrics before -> after and the gate decision with each check, as Markdown tables."""
    mode, rows = metric_rows(reports["evaluate"])
    lines = [f"## {scenario}: unpatched -> patched ({mode})", "", _md_row(["metric", "unpatched", "patched"]),
             "|---|---:|---:|"]
    shown = sorted((r for r in rows if r["name"] in HEADLINE), key=lambda r: HEADLINE.index(r["name"]))
    lines += [_md_row([r["name"], format_value(r["before"]), format_value(r["after"])]) for r in shown]
    gate = reports.get("gate")
    lines += ["", f"**gate: {gate_summary(gate)}**"]
    if gate:
        lines += ["", _md_row(["check", "value", "required", "result"]), "|---|---:|---|---|"]
        lines += [_md_row([c.get("name"), format_value(c.get("value")),
                           f"{c.get('comparison', '')} {format_value(c.get('limit'))}",
                           "pass" if c.get("passed") else "FAIL"]) for c in gate.get("checks") or []]
    return "\n".join(lines) + "\n"


# -- HTML ------------------------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,-apple-system,"DejaVu Sans",sans-serif;margin:2rem auto;max-width:1100px;color:#1d2330;
background:#fff;padding:0 1rem}
h1{font-size:1.7rem;margin-bottom:.2rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:2px solid #e3e6ee;
padding-bottom:.3rem}.muted{color:#667085;font-size:.9rem}
table{border-collapse:collapse;width:100%;margin:.6rem 0;font-size:.92rem}
th,td{border:1px solid #d9dde7;padding:.35rem .55rem;text-align:left;vertical-align:top}
th{background:#f2f4f8}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.badge{display:inline-block;padding:.35rem .9rem;border-radius:.4rem;font-weight:700;font-size:1.1rem;color:#fff}
.pass{background:#1f8a4c}.fail{background:#c0392b}.none{background:#7a8394}
tr.bad td{background:#fdecea}figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #e3e6ee}
figcaption{font-size:.9rem;color:#445}
"""


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _table(headers: list[str], rows: list[list], numeric: set[int] = frozenset(), row_class=None) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_class(i)}"' if row_class and row_class(i) else ""
        cells = "".join(f'<td class="num">{_esc(c)}</td>' if j in numeric else f"<td>{_esc(c)}</td>"
                        for j, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _image(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{_esc(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_esc(caption)} <span class=\"muted\">({_esc(path.name)})</span></figcaption></figure>")


def _gate_html(gate: dict | None) -> str:
    if gate is None:
        return '<p><span class="badge none">NO GATE DECISION</span> <span class="muted">gate.json not found</span></p>'
    passed = bool(gate.get("passed"))
    out = [f'<p><span class="badge {"pass" if passed else "fail"}">Gate: {"PASSED" if passed else "FAILED"}</span>'
           + (f' <span class="muted">mode {_esc(gate["mode"])}</span>' if gate.get("mode") else "") + "</p>"]
    if gate.get("reasons"):
        out.append("<ul>" + "".join(f"<li>{_esc(r)}</li>" for r in gate["reasons"]) + "</ul>")
    checks = [c for c in gate.get("checks") or [] if isinstance(c, dict)]
    if checks:
        rows = [[c.get("name"), format_value(c.get("value")), f"{c.get('comparison', '')} {format_value(c.get('limit'))}",
                 "pass" if c.get("passed") else "FAIL"] for c in checks]
        out.append(_table(["check", "value", "required", "result"], rows, {1},
                          lambda i: "" if checks[i].get("passed") else "bad"))
    if gate.get("champion_version") is not None:
        out.append(f'<p class="muted">compared with champion version {_esc(gate["champion_version"])}</p>')
    return "\n".join(out)


def _mediation_html(evaluate: dict) -> str:
    m = evaluate.get("mediation") if isinstance(evaluate.get("mediation"), dict) else {}
    badge = "none" if "passed" not in m else "pass" if m["passed"] else "fail"
    label = {"none": "NOT COMPUTED", "pass": "FAULT CARRIED BY ATTENTION", "fail": "NOT CARRIED BY ATTENTION"}[badge]
    return f'<p><span class="badge {badge}">{label}</span></p><p>{_esc(mediation_summary(evaluate))}</p>'


def _register_html(register: dict | None) -> str:
    if register is None:
        return '<p class="muted">Not registered yet (register.json not found).</p>'
    keys = ["model_name", "version", "challenger", "champion", "promoted", "previous_champion", "mode"]
    rows = [[k, format_value(register.get(k))] for k in keys if k in register]
    rows += [[k, format_value(v)] for k, v in register.items() if k not in keys and not isinstance(v, (list, dict))]
    return _table(["field", "value"], rows)


def _data_docs_html(links: dict[str, str | None]) -> str:
    """One line per validating stage: a link to its Data Docs (relative to the report), or why none."""
    items = [f'<li>{_esc(stage)}: <a href="{_esc(href)}">Data Docs</a></li>' if href
             else f'<li>{_esc(stage)}: <span class="muted">no Data Docs yet (the stage has not run here)</span></li>'
             for stage, href in links.items()]
    return "<p>Great Expectations suites (gx/expectations) checked each boundary:</p><ul>" + "".join(items) + "</ul>"


def render_html(scenario: str, reports: dict, plots_dir: Path, mode: str | None = None,
                data_docs: dict[str, str | None] | None = None) -> str:
    """The report as one HTML string (figures inlined as base64 PNG); `data_docs`: stage -> link."""
    evaluate = reports["evaluate"]
    mode, rows = metric_rows(evaluate, mode)
    parts = [f"<h1>AtPatch report: {_esc(scenario)}</h1>",
             f'<p class="muted">generated {_esc(_dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"))}'
             f" from metrics/{_esc(scenario)}/ and plots/{_esc(scenario)}/; patched mode: {_esc(mode)}</p>",
             "<h2>Attention mediation</h2>", _mediation_html(evaluate),
             "<h2>Gate decision</h2>", _gate_html(reports["gate"]),
             "<h2>Registered model</h2>", _register_html(reports["register"]),
             "<h2>Data validation</h2>", _data_docs_html(data_docs or {}),
             f"<h2>Metrics before / after (patched: {_esc(mode)})</h2>",
             _table(["metric", "unpatched", f"patched ({mode})", "definition"],
                    [[r["name"], format_value(r["before"]), format_value(r["after"]), r["definition"] or "-"]
                     for r in rows], {1, 2})]
    modes = patched_modes(evaluate)
    if len(modes) > 1:
        names = sorted({k for m in modes.values() for k in flatten(m)})
        flat = {m: flatten(v) for m, v in modes.items()}
        parts += ["<h2>All patch modes</h2>",
                  _table(["metric", *modes], [[n, *(format_value(flat[m].get(n)) for m in modes)] for n in names],
                         set(range(1, len(modes) + 1)))]
    for title, values in other_sections(evaluate).items():
        parts += [f"<h2>{_esc(title.capitalize())}</h2>",
                  _table(["metric", "value", "definition"],
                         [[k, format_value(v), definition_for(k, evaluate.get("definitions")) or "-"]
                          for k, v in values.items()], {1})]
    if reports.get("detector"):
        parts += ["<h2>Detector training</h2>",
                  _table(["metric", "value"], [[k, format_value(v)] for k, v in flatten(reports["detector"]).items()],
                         {1})]
    parts.append("<h2>Figures</h2>")
    seen = set()
    for name, caption in FIGURES:
        path = plots_dir / name
        seen.add(name)
        parts.append(_image(path, caption) if path.is_file()
                     else f'<p class="muted">{_esc(caption)}: not produced ({_esc(path)} not found)</p>')
    for path in sorted(plots_dir.glob("*.png")) if plots_dir.is_dir() else []:
        if path.name not in seen:
            parts.append(_image(path, path.stem.replace("_", " ")))
    definitions = evaluate.get("definitions") or {}
    if definitions:
        parts += ["<h2>Definitions</h2>",
                  "<dl>" + "".join(f"<dt><b>{_esc(k)}</b></dt><dd>{_esc(v)}</dd>" for k, v in definitions.items())
                  + "</dl>"]
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>AtPatch report: {_esc(scenario)}</title><style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n")


def build_report(scenario: str, root: str | Path = ".", mode: str | None = None, out: str | Path | None = None) -> Path:
    """Write the self-contained report `reports/<scenario>.html` (under `root`, or `out`); return its path."""
    from atpatch.io import write_bytes_atomic

    paths = scenario_paths(scenario, root)
    reports = load_reports(scenario, root)
    target = Path(out) if out else paths["html"]
    links = {stage: os.path.relpath(index, target.resolve().parent) if index.is_file() else None
             for stage, index in ((s, p.resolve()) for s, p in paths["data_docs"].items())}
    text = render_html(scenario, reports, paths["plots"], mode, links)
    write_bytes_atomic(target, text.encode("utf-8"))
    return target
