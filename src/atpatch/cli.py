"""The `atpatch` command line (typer + rich): run, report, inspect, serve, patch, sweep.

Every command works on a project root: `--root`, else $ATPATCH_ROOT, else the working directory.
User errors print one line `error: ...` on stderr and exit 1 (no traceback).
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from atpatch import conventions
from atpatch.conventions import DEFAULT_PROFILE, DEFAULT_SCENARIO, model_name

app = typer.Typer(name="atpatch", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode="markdown",
                  help="AtPatch: hot-fix backdoored or unfair transformer classifiers at inference time.",
                  epilog="Example: atpatch run --scenario vision-backdoor --profile small && atpatch report")
console = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class UserError(Exception):
    """A problem the user can fix; printed as one line."""


def _is_user_error(exc: BaseException) -> bool:
    from atpatch.core.errors import AtPatchError

    names = {cls.__name__ for cls in type(exc).__mro__}
    return isinstance(exc, (UserError, AtPatchError, ValueError, OSError)) or "MlflowException" in names


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 600 else text[:600] + " ..."


def _errors(fn):
    """Turn user errors into `error: <one line>` on stderr and exit code 1."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:
            err.print("error: interrupted")
            raise typer.Exit(130)
        except Exception as exc:  # noqa: BLE001 - sorted into user errors and bugs just below
            if not _is_user_error(exc):
                raise
            err.print(f"error: {_one_line(exc)}", markup=False)
            raise typer.Exit(1)
    return wrapper


# -- project, scenario, environment ----------------------------------------------------------------
def _root(root: Optional[Path]) -> Path:
    path = (root or Path(os.environ.get("ATPATCH_ROOT") or Path.cwd())).resolve()
    if not path.is_dir():
        raise UserError(f"--root {path}: not a directory")
    return path


def scenario_names(root: Path) -> list[str]:
    """The scenarios params.yaml defines (empty when the root has none)."""
    import yaml

    path = root / conventions.PARAMS_FILE
    params = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    return sorted((params or {}).get("scenarios") or {})


def _scenario(name: str, root: Path) -> str:
    known = scenario_names(root)
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name or "") or (known and name not in known):
        raise UserError(f"--scenario: expected one of {', '.join(known) or 'the scenarios in params.yaml'}, got {name!r}")
    return name


def _use_root(root: Path, need_store: bool = False) -> None:
    """Point MLflow (atpatch.ops.tracking) at the project's store unless the environment chose one; with
    `need_store`, refuse a SQLite store that does not exist yet (instead of creating an empty one)."""
    os.environ["ATPATCH_ROOT"] = str(root)
    if need_store:
        from atpatch.ops.tracking import tracking_uri

        uri = tracking_uri()
        if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
            raise UserError(f"no MLflow store at {uri[len('sqlite:///'):]}: nothing is registered yet; run the "
                            "pipeline first (atpatch run) or pass --root / MLFLOW_TRACKING_URI")


def repro_target(workdir: Path, scenario: str) -> str:
    """`register@<scenario>` when dvc.yaml loops over scenarios (foreach), else `register` for the one
    scenario params.yaml holds."""
    import yaml

    dvc_yaml = workdir / "dvc.yaml"
    if not dvc_yaml.is_file():
        raise UserError(f"{dvc_yaml}: not found; run from the AtPatch repository (or pass --root)")
    stages = (yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}).get("stages") or {}
    register = stages.get("register")
    if isinstance(register, dict) and "foreach" not in register and "matrix" not in register:
        params = yaml.safe_load((workdir / "params.yaml").read_text(encoding="utf-8")) or {}
        if params.get("scenario") not in (None, scenario):
            raise UserError(f"--scenario {scenario}: this pipeline has one scenario, {params.get('scenario')!r}")
        return "register"
    return f"register@{scenario}"


def _stream(cmd: list[str], cwd: Path, env: dict) -> int:
    """Run `cmd`, echoing its output; stage starts as rules, so progress is visible."""
    console.print(f"[dim]$ {' '.join(cmd)}   (in {cwd})[/dim]")
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    stage = re.compile(r"Running stage '([^']+)'")
    try:
        for line in proc.stdout:
            hit = stage.search(line)
            if hit:
                console.rule(f"[bold]stage {hit.group(1)}")
            else:
                console.print(line.rstrip("\n"), markup=False)
    except KeyboardInterrupt:
        proc.terminate()
        raise
    return proc.wait()


# -- commands ----------------------------------------------------------------------------------------
RootOpt = typer.Option(None, "--root", help="Project root (default: $ATPATCH_ROOT or the working directory).")
ScenarioOpt = typer.Option(DEFAULT_SCENARIO, "--scenario", "-s", help="Scenario: a name under params.yaml's `scenarios`.")


@app.command(epilog="Example: atpatch run --scenario vision-backdoor --profile small")
@_errors
def run(scenario: str = ScenarioOpt,
        profile: str = typer.Option(DEFAULT_PROFILE, "--profile", "-p", help="default (the repo's params.yaml) or small "
                                    "(profiles/small.yaml, in the workspace .work/small)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Show the command, run nothing."),
        root: Optional[Path] = RootOpt):
    """Run a scenario's pipeline end to end through DVC, streaming progress.

    Runs `dvc repro register@SCENARIO` in the repository (profile default) or in the workspace
    .work/PROFILE made from params.yaml + profiles/PROFILE.yaml, whose own git then records the run.
    """
    root = _root(root)
    scenario = _scenario(scenario, root)
    from atpatch.ops.workspace import pipeline_env, profile_workdir

    workdir = profile_workdir(profile, root, create=False)  # checks the profile before anything is made
    if profile != DEFAULT_PROFILE and not dry_run:
        console.print(f"[dim]workspace {workdir} (profile {profile})[/dim]")
        workdir = profile_workdir(profile, root)
    target = repro_target(workdir if workdir.joinpath("dvc.yaml").is_file() else root, scenario)
    cmd = [sys.executable, "-m", "dvc", "repro", target]
    if dry_run:
        console.print(f"would run in {workdir}: {' '.join(cmd)}", markup=False)
        return
    code = _stream(cmd, workdir, pipeline_env(workdir))
    if code != 0:
        raise UserError(f"dvc repro {target} failed (exit {code}) in {workdir}; the failing stage's output is above")
    if profile != DEFAULT_PROFILE:  # the workspace's baseline for dvc params/metrics diff and dvc exp
        from atpatch.ops.workspace import commit_workspace

        commit_workspace(workdir, f"atpatch run --scenario {scenario} --profile {profile}")
    console.print(f"[green]done[/green]: {scenario} ({profile}); metrics in {workdir / conventions.report_path(scenario, 'evaluate')}")


@app.command(epilog="Example: atpatch report --scenario vision-backdoor --html")
@_errors
def report(scenario: str = ScenarioOpt,
           html: bool = typer.Option(False, "--html", help="Also write reports/SCENARIO.html (self-contained)."),
           mode: Optional[str] = typer.Option(None, "--mode", help="Patched mode to show (default: the evaluated default)."),
           log: bool = typer.Option(False, "--log", help="With --html: log the HTML to MLflow as an artifact."),
           root: Optional[Path] = RootOpt):
    """The scenario's metrics before/after the patch, with definitions, and the gate decision."""
    from atpatch.eval import report as rep

    root = _root(root)
    scenario = _scenario(scenario, root)
    reports = rep.load_reports(scenario, root)
    evaluate = reports["evaluate"]
    mode, rows = rep.metric_rows(evaluate, mode)
    table = Table(title=f"{scenario}: unpatched vs patched ({mode})", title_justify="left")
    table.add_column("metric", style="bold")
    table.add_column("unpatched", justify="right")
    table.add_column(f"patched ({mode})", justify="right")
    table.add_column("definition", style="dim", overflow="fold")
    for r in rows:
        table.add_row(r["name"], rep.format_value(r["before"]), rep.format_value(r["after"]), r["definition"] or "-")
    console.print(table)
    others = rep.other_sections(evaluate).get("other metrics")
    if others:
        extra = Table(title="other metrics", title_justify="left")
        extra.add_column("metric", style="bold")
        extra.add_column("value", justify="right")
        extra.add_column("definition", style="dim", overflow="fold")
        for k, v in others.items():
            extra.add_row(k, rep.format_value(v), rep.definition_for(k, evaluate.get("definitions")) or "-")
        console.print(extra)
    mediation = evaluate.get("mediation") or {}
    style = "green" if mediation.get("passed") else "red" if mediation else "yellow"
    console.print(f"[{style}]{rep.mediation_summary(evaluate)}[/{style}]", soft_wrap=True)
    gate = reports["gate"]
    style = "green" if gate and gate.get("passed") else "red" if gate else "yellow"
    console.print(f"gate: [{style}]{rep.gate_summary(gate)}[/{style}]")
    reg = reports["register"]
    if reg:
        console.print(f"registry: {reg.get('model_name')} version {reg.get('version')}; "
                      f"challenger {reg.get('challenger')}, champion {reg.get('champion') or 'none'}")
    if html:
        path = rep.build_report(scenario, root, mode)
        console.print(f"wrote {path}", markup=False)
        if log:
            _use_root(root)
            from .ops.tracking import log_report

            console.print(f"logged to MLflow run {log_report(path, scenario)}")


def _load_registered(scenario: str):
    """(PatchedClassifier, alias, version) of the scenario's champion, else its challenger."""
    from atpatch.ops.registry import get_alias_version, load_patch

    name = model_name(scenario)
    for alias in (conventions.CHAMPION_ALIAS, conventions.CHALLENGER_ALIAS):
        mv = get_alias_version(name, alias)
        if mv is not None:
            if alias == conventions.CHALLENGER_ALIAS:
                err.print(f"note: {name} has no champion (no version passed the gate); using challenger "
                          f"version {mv.version}", markup=False)
            return load_patch(f"models:/{name}@{alias}"), alias, str(mv.version)
    raise UserError(f"{name}: no registered version with alias champion or challenger; run the pipeline first "
                    f"(atpatch run --scenario {scenario})")


def _read_image_file(path: Path, side: int):
    """A PNG or NPY grayscale image as uint8 [side, side]; UserError naming the problem otherwise."""
    import numpy as np

    if not path.is_file():
        raise UserError(f"{path}: file not found")
    if path.suffix.lower() == ".npy":
        arr = np.load(path, allow_pickle=False)
    elif path.suffix.lower() == ".png":
        from PIL import Image, UnidentifiedImageError

        try:
            arr = np.asarray(Image.open(path).convert("L"))
        except UnidentifiedImageError as exc:
            raise UserError(f"{path}: not a readable PNG image") from exc
    else:
        raise UserError(f"{path}: expected a .png or .npy file, or an index into the test set")
    if arr.size != side * side:
        raise UserError(f"{path}: expected a {side}x{side} grayscale image, got shape {tuple(arr.shape)}")
    if arr.dtype.kind not in "iuf" or not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 255:
        raise UserError(f"{path}: expected pixel values 0..255, got dtype {arr.dtype} "
                        f"range {arr.min() if arr.size else '-'}..{arr.max() if arr.size else '-'}")
    return np.rint(arr.reshape(side, side)).astype(np.uint8)


def _scenario_kind(root: Path, scenario: str):
    """(kind module, the scenario's flat params with paths under `root`)."""
    from atpatch.io import load_params
    from atpatch.scenarios import kind_module, scenario_params

    flat = scenario_params(load_params(path=root / conventions.PARAMS_FILE), scenario, root / conventions.PARAMS_FILE)
    flat["generate"]["out"] = str(root / flat["generate"]["out"])
    return kind_module(flat), flat


def _inspect_frame(spec: str, kind, flat: dict, split: str, model):
    """(one-row pyfunc input frame, description) from a test-set index, an image file or a text."""
    import pandas as pd

    if re.fullmatch(r"\d+", spec):
        data = kind.test_frame(flat, split)
        index = int(spec)
        if index >= len(data):
            raise UserError(f"INPUT {index}: the {split} test set has {len(data)} rows (0..{len(data) - 1})")
        row = data.iloc[[index]].reset_index(drop=True)
        return row.drop(columns="label"), f"{split} test row {index} (label {int(row['label'][0])})"
    if kind.INPUT_KIND == "image":
        side = int(model.config.image_size)
        image = _read_image_file(Path(spec), side)
        return pd.DataFrame({"image": [image.reshape(-1).astype(int).tolist()]}), spec
    if kind.INPUT_KIND == "text":
        return pd.DataFrame({"text": [spec]}), repr(spec if len(spec) <= 60 else spec[:60] + "...")
    raise UserError(f"INPUT {spec!r}: expected an index into the {split} test set")


def _position_names(patched, inputs: dict, input_kind: str) -> list[str]:
    """A readable name per token position: image patch row/col, word piece, or table column."""
    layout = patched.layout
    if input_kind == "image":
        config = patched.model.config
        grid = int(config.image_size) // int(config.patch_size)
        return [("CLS" if k < layout.prefix else f"patch row {(k - layout.prefix) // grid}, col {(k - layout.prefix) % grid}")
                for k in range(layout.prefix + grid * grid)]
    if input_kind == "text":
        return patched.model.atpatch_tokenizer.convert_ids_to_tokens(inputs["input_ids"][0].tolist())
    from atpatch.ops.serving.pyfunc_model import tabular_columns

    columns = list(tabular_columns(patched.model))
    return ["CLS"] * layout.prefix + columns


@app.command(epilog="Example: atpatch inspect --scenario vision-backdoor 17 --split triggered")
@_errors
def inspect(input: str = typer.Argument(..., metavar="INPUT", help="An index into the scenario's test set; or "
                                        "a 28x28 PNG/NPY image (image scenarios); or a text (text scenarios)."),
            scenario: str = ScenarioOpt,
            split: Optional[str] = typer.Option(None, "--split", help="Test set an index refers to: clean or "
                                                "triggered (backdoor scenarios, default triggered), test (fairness)."),
            out: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG to write for image scenarios "
                                               "(default reports/inspect-SCENARIO.png)."),
            root: Optional[Path] = RootOpt):
    """One input through the registered patch: predictions, flagged positions and layers, column attention.

    Loads the scenario's champion (else its challenger, saying so), prints the prediction unpatched and
    patched, the flagged positions (patch row/column, word piece or table column, with their score), the
    patched layers and the column attention before and after the patch; for image scenarios it also writes
    a PNG of the column attention before/after with the flagged columns outlined.
    """
    import torch

    from atpatch.core.patched import attention_before_after
    from atpatch.ops.serving.pyfunc_model import INPUT_KINDS, validate_frame

    root = _root(root)
    scenario = _scenario(scenario, root)
    _use_root(root, need_store=True)
    kind, flat = _scenario_kind(root, scenario)
    split = split or list(kind.TEST_SPLITS)[-1]
    if split not in kind.TEST_SPLITS:
        raise UserError(f"--split: expected one of {', '.join(kind.TEST_SPLITS)} for {scenario}, got {split!r}")
    patched, alias, version = _load_registered(scenario)
    frame, what = _inspect_frame(input, kind, flat, split, patched.model)
    try:
        rows = validate_frame(frame, kind.INPUT_KIND, model=patched.model)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    inputs = INPUT_KINDS[kind.INPUT_KIND].to_inputs(rows, patched.model)
    out_p = patched(**inputs)
    before, after = attention_before_after(patched, inputs, out_p.flagged)
    p_plain = torch.softmax(_plain_logits(patched, inputs), -1)[0]
    p_patch = torch.softmax(out_p.logits, -1)[0]
    flags = torch.nonzero(out_p.flagged[0]).flatten().tolist()
    layers = torch.nonzero(out_p.patched_layers[0]).flatten().tolist()
    names = _position_names(patched, inputs, kind.INPUT_KIND)

    console.print(f"[bold]{model_name(scenario)}[/bold] version {version} ({alias}), mode {patched.mode}; input: {what}")
    _prediction_table(p_plain, p_patch)
    if flags:
        where = ", ".join(f"{k} ({names[k]}; score {float(out_p.scores[0, k]):.4f})" for k in flags)
        console.print(f"flagged positions: {where}", markup=False)
        console.print(f"patched layers: {layers}")
    else:
        console.print(f"flagged positions: none (highest score {float(out_p.scores[0].max()):.4f} <= threshold "
                      f"{patched.detector.config.threshold:.4f}); the prediction is the unpatched one")
    _attention_table(before.mean(0), after.mean(0), names, flags)
    if kind.INPUT_KIND == "image":
        target = out or (root / conventions.REPORTS_DIR / f"inspect-{scenario}.png")
        _attention_png(target, patched, frame, before, after, flags, f"{what}: {int(p_plain.argmax())} -> {int(p_patch.argmax())}")
        console.print(f"wrote {target} (column attention, mean over layers and heads; flagged columns in red)",
                      markup=False)


def _prediction_table(p_plain, p_patch) -> None:
    import torch

    table = Table(title_justify="left")
    for col in ("", "label", "probability", "2nd label", "probability"):
        table.add_column(col, justify="right" if col != "" else "left")
    for name, probs in (("unpatched", p_plain), ("patched", p_patch)):
        top = torch.topk(probs, min(2, len(probs)))
        cells = [str(int(top.indices[0])), f"{float(top.values[0]):.4f}"]
        cells += [str(int(top.indices[1])), f"{float(top.values[1]):.4f}"] if len(probs) > 1 else ["-", "-"]
        table.add_row(name, *cells)
    console.print(table)


def _attention_table(before, after, names: list[str], flags: list[int], top: int = 5) -> None:
    """Column attention (mean over layers and heads) of the flagged and the most attended positions."""
    order = list(flags) + [k for k in before.argsort(descending=True).tolist() if k not in flags][:top]
    table = Table(title="column attention, mean over layers and heads", title_justify="left")
    for col in ("position", "token", "before", "after", "flagged"):
        table.add_column(col, justify="left" if col == "token" else "right")
    for k in order:
        table.add_row(str(k), names[k] if k < len(names) else "?", f"{float(before[k]):.4f}", f"{float(after[k]):.4f}",
                      "yes" if k in flags else "")
    console.print(table)


def _attention_png(target: Path, patched, frame, before, after, flags: list[int], title: str) -> None:
    import numpy as np

    from atpatch.eval import plots

    config = patched.model.config
    side, prefix = int(config.image_size), patched.layout.prefix
    grid = side // int(config.patch_size)
    image = np.asarray(frame["image"][0], dtype=np.uint8).reshape(1, side, side)
    mark = np.zeros((1, grid * grid), dtype=bool)
    for k in flags:
        mark[0, k - prefix] = True
    target.parent.mkdir(parents=True, exist_ok=True)
    plots.attention_grid(target, image, before.mean(0)[prefix:].numpy()[None], after.mean(0)[prefix:].numpy()[None],
                         mark, grid, [title])


def _plain_logits(patched, inputs: dict):
    """The victim's own (eager) logits."""
    import torch

    from atpatch.core.features import model_output

    with torch.no_grad():
        return model_output(patched.model(**inputs))


@app.command(epilog="Example: atpatch serve --scenario vision-backdoor --port 5001")
@_errors
def serve(scenario: str = ScenarioOpt,
          port: int = typer.Option(5001, "--port", min=1, max=65535, help="TCP port."),
          host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
          workers: int = typer.Option(1, "--workers", min=1, help="Server worker processes."),
          dry_run: bool = typer.Option(False, "--dry-run", help="Show the command, run nothing."),
          root: Optional[Path] = RootOpt):
    """Serve the scenario's champion (models:/atpatch-SCENARIO@champion) with MLflow's model server.

    POST /invocations {"dataframe_split": {"columns": ["image"], "data": [[[...784 ints...]]]}} answers label,
    probabilities and flagged positions per row.
    """
    from atpatch.ops.registry import get_alias_version
    from atpatch.ops.serving.server import serve_command, server_env
    from atpatch.ops.tracking import tracking_uri

    root = _root(root)
    scenario = _scenario(scenario, root)
    _use_root(root, need_store=True)
    name = model_name(scenario)
    champion = get_alias_version(name, conventions.CHAMPION_ALIAS)
    if champion is None:
        challenger = get_alias_version(name, conventions.CHALLENGER_ALIAS)
        hint = (f"challenger is version {challenger.version}, not promoted "
                f"({(challenger.tags or {}).get('gate.reasons') or 'gate not passed'}); serve it anyway with "
                f"mlflow models serve -m models:/{name}@challenger --env-manager local"
                if challenger else f"nothing is registered under {name}; run atpatch run --scenario {scenario}")
        raise UserError(f"{name}: no champion to serve; {hint}")
    cmd = serve_command(f"models:/{name}@champion", host, port, workers)
    env = server_env({"MLFLOW_TRACKING_URI": tracking_uri()})
    console.print(f"serving {name} version {champion.version} (champion) on http://{host}:{port}/invocations",
                  markup=False)
    if dry_run:
        console.print(" ".join(cmd), markup=False)
        return
    code = subprocess.call(cmd, env=env)
    if code not in (0, -2, 130):
        raise UserError(f"mlflow models serve exited with {code}")


@app.command(epilog="Example: atpatch patch --model ./my-vit --debug-set ./debug.safetensors --out ./my-patch")
@_errors
def patch(model: Path = typer.Option(..., "--model", help="A save_pretrained classifier directory (safetensors)."),
          debug_set: Path = typer.Option(..., "--debug-set", help="Debugging set (.safetensors; format below)."),
          out: Path = typer.Option(..., "--out", help="Output directory: detector/, patch.json, metrics.json."),
          mode: str = typer.Option("two-pass", "--mode", help="two-pass or online."),
          steps: int = typer.Option(1500, "--steps", min=1, help="Detector training steps."),
          fpr: float = typer.Option(0.005, "--fpr", min=0.0, max=1.0, help="Most clean calibration inputs flagged."),
          seed: int = typer.Option(0, "--seed", help="Seed of detector training and the calib split."),
          positions: str = typer.Option("", "--positions", help="Only these token positions may be flagged "
                                        "(comma-separated; e.g. a tabular model's protected column)."),
          candidate_ids: str = typer.Option("", "--candidate-ids", help="Only tokens with these ids may be "
                                            "flagged (comma-separated; e.g. a protected attribute's words)."),
          flag_as_group: bool = typer.Option(False, "--flag-as-group", help="A flag on one candidate flags "
                                             "every candidate of that input (one protected attribute)."),
          flag_same_token: bool = typer.Option(False, "--flag-same-token", help="A flagged token flags every "
                                               "copy of it in that input (a trigger word written twice)."),
          target_label: Optional[int] = typer.Option(None, "--target-label", help="The backdoor's target class, "
                                                     "for the attention-mediation check (default: the triggered "
                                                     "inputs' most frequent prediction).")):
    """Build a detector + patch config for your own Hugging Face checkpoint and debugging set.

    Extracts attention features on the debugging set, trains the contrastive detector, calibrates its
    threshold on held-out clean inputs and saves detector/ + patch.json + metrics.json. Then it runs the
    attention-mediation check (mediation.json): with the debugging set's known fault tokens patched, the
    triggered inputs must fall back to the clean inputs' rate of the target class; if they do not, the
    backdoor is not carried by over-attention and the patch cannot remove it.
    The debugging set is one .safetensors file: the model inputs under their forward names (pixel_values
    [N,C,H,W] float, or input_ids [N,T] with attention_mask), token_labels [N,K] (1 = fault-carrying token,
    K = the model's token count), optional triggered [N] and calib [N] (held-out clean inputs). See
    atpatch.ops.patching.DEBUG_SET_FORMAT.
    """
    from atpatch.ops.patching import build_patch

    if not model.is_dir():
        raise UserError(f"--model {model}: not a directory (expected a save_pretrained checkpoint)")
    candidates = {"positions": _int_list(positions, "--positions"),
                  "candidate_ids": _int_list(candidate_ids, "--candidate-ids"), "flag_as_group": flag_as_group,
                  "flag_same_token": flag_same_token}
    result = build_patch(model, debug_set, out, settings={"calibration_fpr": fpr, "network": {"steps": steps}},
                         patch={"mode": mode}, seed=seed, candidates=candidates, target=target_label)
    table = Table(title=f"patch for {model}", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result["metrics"].items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    console.print(f"wrote {result['detector']}/ and {result['patch_config']} (mode {mode}, input "
                  f"{result['config']['input']})", markup=False)
    mediation = result["mediation"]
    console.print(mediation["message"], style="bold green" if mediation["passed"] else "bold red", markup=False)


def _listed(values: Optional[list[str]]) -> list[str]:
    """Repeated and comma-separated option values as one list: ["a,b", "c"] -> ["a", "b", "c"]."""
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


ListOpt = functools.partial(typer.Option, None, show_default=False)


@app.command(epilog="Example: atpatch sweep --scenarios tabular-fairness,text-fairness --seeds 0,1 --profile small "
                    "--workers 2")
@_errors
def sweep(scenarios: Optional[list[str]] = ListOpt("--scenarios", help="Scenarios (comma-separated or repeated; "
                                                   "default: all)."),
          variants: Optional[list[str]] = ListOpt("--variants", help="Variants of benchmarks/scenarios.py "
                                                  "(default: all of each scenario)."),
          seeds: Optional[list[str]] = ListOpt("--seeds", help="Top-level seeds, a cell each (default: params.yaml's)."),
          profile: str = typer.Option(DEFAULT_PROFILE, "--profile", "-p", help="default, small, or a YAML file."),
          workers: Optional[int] = typer.Option(None, "--workers", help="A local Dask cluster of N one-thread "
                                                "workers (default 2)."),
          address: Optional[str] = typer.Option(None, "--address", help="An existing Dask scheduler, "
                                                "tcp://HOST:8786."),
          workdir: Optional[Path] = typer.Option(None, "--workdir", help="Cell workspaces go under WORKDIR/PROFILE "
                                                 "(default .work/bench)."),
          out: Optional[Path] = typer.Option(None, "--out", help="Where results/SCENARIO.json and RESULTS.md go "
                                             "(default benchmarks/)."),
          dry_run: bool = typer.Option(False, "--dry-run", help="Show the command, run nothing."),
          root: Optional[Path] = RootOpt):
    """Run a benchmark grid, scenario x seed x variant, as concurrent cells on a Dask cluster.

    Each cell is the pipeline from scratch in its own workspace (`flows/sweep.py`, a Prefect flow with a task
    per cell, retried on failure); the results go to benchmarks/results/SCENARIO.json, benchmarks/RESULTS.md
    and MLflow, as `benchmarks/scenarios.py` writes them serially.
    """
    root = _root(root)
    script = root / "flows" / "sweep.py"
    if not script.is_file():
        raise UserError(f"{script}: not found; run from the AtPatch repository (or pass --root)")
    options = {"--scenarios": _listed(scenarios), "--variants": _listed(variants), "--seeds": _listed(seeds)}
    cmd = [sys.executable, str(script), *[item for name, values in options.items() if values
                                          for item in (name, *values)], "--profile", profile]
    for name, value in (("--workers", workers), ("--address", address), ("--workdir", workdir), ("--out", out)):
        if value is not None:
            cmd += [name, str(value)]
    if dry_run:
        console.print(f"would run in {root}: {' '.join(cmd)}", markup=False)
        return
    code = subprocess.call(cmd, cwd=root, env=conventions.environment(root))
    if code != 0:  # the flow printed its own one-line error
        raise typer.Exit(code)


def _int_list(text: str, option: str) -> list[int]:
    """"3,5" -> [3, 5]; "" -> []."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"{option} {text!r}: expected comma-separated integers, e.g. 3,5") from None


def main() -> None:
    app()


if __name__ == "__main__":
    main()
