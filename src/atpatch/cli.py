"""The `atpatch` command line (typer + rich): run, report, inspect, serve, patch.

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

DEFAULT_SCENARIO = "vision-backdoor"
SCENARIOS = ("vision-backdoor", "text-backdoor", "tabular-fairness", "tabular-fairness-compas", "text-fairness")
PROFILES = ("default", "small")

app = typer.Typer(name="atpatch", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode="markdown",
                  help="AtPatch: hot-fix backdoored or unfair transformer classifiers at inference time.",
                  epilog="Example: atpatch run --scenario vision-backdoor --profile small && atpatch report")
console = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class UserError(Exception):
    """A problem the user can fix; printed as one line."""


def _is_user_error(exc: BaseException) -> bool:
    from .errors import AtPatchError

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


def _scenario(name: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name or ""):
        raise UserError(f"--scenario: expected a name like {DEFAULT_SCENARIO!r}, got {name!r} "
                        f"(scenarios: {', '.join(SCENARIOS)})")
    return name


def model_name(scenario: str) -> str:
    """The registered model of a scenario."""
    return f"atpatch-{scenario}"


def _use_root(root: Path, need_store: bool = False) -> None:
    """Point MLflow (atpatch.tracking) at the project's store unless the environment chose one; with
    `need_store`, refuse a SQLite store that does not exist yet (instead of creating an empty one)."""
    os.environ["ATPATCH_ROOT"] = str(root)
    if need_store:
        from .tracking import tracking_uri

        uri = tracking_uri()
        if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
            raise UserError(f"no MLflow store at {uri[len('sqlite:///'):]}: nothing is registered yet; run the "
                            "pipeline first (atpatch run) or pass --root / MLFLOW_TRACKING_URI")


def pipeline_env(workdir: Path) -> dict[str, str]:
    """The environment a pipeline run needs (scripts/env.sh and the Makefile's workspace variables)."""
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    defaults = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "HF_HOME": str(workdir / ".cache" / "hf"), "MLFLOW_DISABLE_TELEMETRY": "true",
                "DVC_NO_ANALYTICS": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED": "false",
                "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED": "false",
                "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false"}
    for key, value in defaults.items():
        env.setdefault(key, value)
    # Per project (or workspace): always its own.
    env.update({"ATPATCH_ROOT": str(workdir), "DVC_SITE_CACHE_DIR": str(workdir / ".dvc" / "site_cache"),
                "PREFECT_HOME": str(workdir / ".prefect"), "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}"})
    return env


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
ScenarioOpt = typer.Option(DEFAULT_SCENARIO, "--scenario", "-s", help=f"Scenario: {', '.join(SCENARIOS)}.")


@app.command(epilog="Example: atpatch run --scenario vision-backdoor --profile small")
@_errors
def run(scenario: str = ScenarioOpt,
        profile: str = typer.Option("default", "--profile", "-p", help="default (the repo's params.yaml) or small "
                                    "(profiles/small.yaml, in the workspace .work/small)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Show the command, run nothing."),
        root: Optional[Path] = RootOpt):
    """Run a scenario's pipeline end to end through DVC, streaming progress.

    Runs `dvc repro register@SCENARIO` in the repository (profile default) or in the workspace
    .work/PROFILE made from params.yaml + profiles/PROFILE.yaml.
    """
    root, scenario = _root(root), _scenario(scenario)
    if profile == "default":
        workdir = root
    else:
        from .workspace import make_workspace, profile_path

        if not profile_path(profile, root).is_file():
            raise UserError(f"--profile {profile}: {profile_path(profile, root)} not found (profiles: "
                            f"{', '.join(['default', *sorted(p.stem for p in (root / 'profiles').glob('*.yaml'))])})")
        workdir = root / ".work" / profile
        if not dry_run:
            console.print(f"[dim]workspace {workdir} (profile {profile})[/dim]")
            workdir = make_workspace(workdir, profile, repo=root)
    target = repro_target(workdir if workdir.joinpath("dvc.yaml").is_file() else root, scenario)
    cmd = [sys.executable, "-m", "dvc", "repro", target]
    if dry_run:
        console.print(f"would run in {workdir}: {' '.join(cmd)}", markup=False)
        return
    code = _stream(cmd, workdir, pipeline_env(workdir))
    if code != 0:
        raise UserError(f"dvc repro {target} failed (exit {code}) in {workdir}; the failing stage's output is above")
    console.print(f"[green]done[/green]: {scenario} ({profile}); metrics in {workdir / 'metrics' / scenario}")


@app.command(epilog="Example: atpatch report --scenario vision-backdoor --html")
@_errors
def report(scenario: str = ScenarioOpt,
           html: bool = typer.Option(False, "--html", help="Also write reports/SCENARIO.html (self-contained)."),
           mode: Optional[str] = typer.Option(None, "--mode", help="Patched mode to show (default: the evaluated default)."),
           log: bool = typer.Option(False, "--log", help="With --html: log the HTML to MLflow as an artifact."),
           root: Optional[Path] = RootOpt):
    """The scenario's metrics before/after the patch, with definitions, and the gate decision."""
    from . import report as rep

    root, scenario = _root(root), _scenario(scenario)
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
            console.print(f"logged to MLflow run {rep.log_report(path, scenario)}")


def _load_registered(scenario: str):
    """(PatchedClassifier, alias, version) of the scenario's champion, else its challenger."""
    from .registry import get_alias_version, load_patch

    name = model_name(scenario)
    for alias in ("champion", "challenger"):
        mv = get_alias_version(name, alias)
        if mv is not None:
            if alias == "challenger":
                err.print(f"note: {name} has no champion (no version passed the gate); using challenger "
                          f"version {mv.version}", markup=False)
            return load_patch(f"models:/{name}@{alias}"), alias, str(mv.version)
    raise UserError(f"{name}: no registered version with alias champion or challenger; run the pipeline first "
                    f"(atpatch run --scenario {scenario})")


def _read_image(spec: str, root: Path, scenario: str, split: str, side: int) -> tuple:
    """(uint8 image [side, side], description) from a PNG/NPY path or an index into the test set."""
    import numpy as np

    path = Path(spec)
    if path.suffix.lower() in (".png", ".npy") or path.exists():
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
        return np.rint(arr.reshape(side, side)).astype(np.uint8), str(path)
    if not re.fullmatch(r"\d+", spec):
        raise UserError(f"INPUT {spec!r}: expected a .png/.npy file or an index into the test set")
    from .scenarios import OUT_PATHS

    folder = root / OUT_PATHS["generate"].format(s=scenario) / f"test_{split}"
    if not folder.is_dir():
        raise UserError(f"{folder}: test set not found; run the pipeline first (atpatch run --scenario {scenario})")
    from datasets import load_from_disk

    data = load_from_disk(str(folder)).with_format("numpy")
    index = int(spec)
    if index >= len(data):
        raise UserError(f"INPUT {index}: the {split} test set has {len(data)} images (0..{len(data) - 1})")
    return data[index]["image"].astype(np.uint8), f"{split} test image {index} (label {int(data[index]['label'])})"


def attention_before_after(patched, inputs: dict, flagged):
    """Per-layer length-scaled column mass [L, K] (mean over heads) before and after redistribution.

    "After" patches `flagged` at the patched layers (what two-pass mode runs); equal to "before"
    when nothing is flagged.
    """
    import torch

    from .features import Recorder, record
    from .patched import _Redistributor
    from .seam import attention_seam

    def mass(rec) -> torch.Tensor:
        return torch.stack([rec.maps[layer][0].sum(1).mean(0) for layer in sorted(rec.maps)])  # [L, K]

    before = record(patched.model, inputs, patched.layout, keep_maps=True)
    if not bool(flagged.any()):
        return mass(before), mass(before)
    after = Recorder(patched.layout, inputs, keep_maps=True)
    fix = _Redistributor(flagged, before.valid, patched.benign, patched.patch_layers)
    with attention_seam(patched.model, lambda layer, probs: after(layer, fix(layer, probs))), torch.no_grad():
        patched.model(**inputs)
    return mass(before), mass(after)


@app.command(epilog="Example: atpatch inspect --scenario vision-backdoor 17 --split triggered")
@_errors
def inspect(input: str = typer.Argument(..., metavar="INPUT", help="A 28x28 PNG or NPY image, or an index into "
                                        "the scenario's test set."),
            scenario: str = ScenarioOpt,
            split: str = typer.Option("triggered", "--split", help="Test set an index refers to: clean or triggered."),
            out: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG to write (default reports/inspect-SCENARIO.png)."),
            root: Optional[Path] = RootOpt):
    """One input through the registered patch: predictions, flagged positions and layers, attention PNG.

    Loads the scenario's champion (else its challenger, saying so), prints the prediction unpatched and
    patched, the flagged positions (with their patch row/column and score) and the patched layers, and writes
    a PNG of the column attention before/after with the flagged columns outlined.
    """
    import numpy as np
    import torch

    root, scenario = _root(root), _scenario(scenario)
    if split not in ("clean", "triggered"):
        raise UserError(f"--split: expected clean or triggered, got {split!r}")
    _use_root(root, need_store=True)
    patched, alias, version = _load_registered(scenario)
    config = patched.model.config
    if config.model_type not in ("vit", "deit") or getattr(config, "num_channels", 1) != 1:
        raise UserError(f"inspect: supports 1-channel image scenarios so far; {model_name(scenario)} is a "
                        f"{config.model_type} model")
    side, patch = int(config.image_size), int(config.patch_size)
    grid, prefix = side // patch, patched.layout.prefix
    image, what = _read_image(input, root, scenario, split, side)
    from .models.vit import to_pixel_values

    inputs = {"pixel_values": to_pixel_values(image[None], config)}
    out_p = patched(**inputs)
    before, after = attention_before_after(patched, inputs, out_p.flagged)
    p_plain = torch.softmax(_plain_logits(patched, inputs), -1)[0]
    p_patch = torch.softmax(out_p.logits, -1)[0]
    flags = torch.nonzero(out_p.flagged[0]).flatten().tolist()
    layers = torch.nonzero(out_p.patched_layers[0]).flatten().tolist()

    console.print(f"[bold]{model_name(scenario)}[/bold] version {version} ({alias}), mode {patched.mode}; input: {what}")
    table = Table(title_justify="left")
    for col in ("", "label", "probability", "2nd label", "probability"):
        table.add_column(col, justify="right" if col != "" else "left")
    for name, probs in (("unpatched", p_plain), ("patched", p_patch)):
        top = torch.topk(probs, 2)
        table.add_row(name, str(int(top.indices[0])), f"{float(top.values[0]):.4f}", str(int(top.indices[1])),
                      f"{float(top.values[1]):.4f}")
    console.print(table)
    if flags:
        where = ", ".join(f"{k} (patch row {(k - prefix) // grid}, col {(k - prefix) % grid}; score "
                          f"{float(out_p.scores[0, k]):.4f})" for k in flags)
        console.print(f"flagged positions: {where}", markup=False)
        console.print(f"patched layers: {layers}")
    else:
        console.print(f"flagged positions: none (highest score {float(out_p.scores[0].max()):.4f} <= threshold "
                      f"{patched.detector.config.threshold:.4f}); the prediction is the unpatched one")
    from . import plots

    target = out or (root / "reports" / f"inspect-{scenario}.png")
    target.parent.mkdir(parents=True, exist_ok=True)
    mark = np.zeros((1, grid * grid), dtype=bool)
    for k in flags:
        mark[0, k - prefix] = True
    plots.attention_grid(target, image[None], before.mean(0)[prefix:].numpy()[None], after.mean(0)[prefix:].numpy()[None],
                         mark, grid, [f"{what}: {int(p_plain.argmax())} -> {int(p_patch.argmax())}"])
    console.print(f"wrote {target} (column attention, mean over layers and heads; flagged columns in red)",
                  markup=False)


def _plain_logits(patched, inputs: dict):
    """The victim's own (eager) logits."""
    import torch

    from .features import model_output

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
    from .registry import get_alias_version
    from .serving.server import serve_command, server_env
    from .tracking import tracking_uri

    root, scenario = _root(root), _scenario(scenario)
    _use_root(root, need_store=True)
    name = model_name(scenario)
    champion = get_alias_version(name, "champion")
    if champion is None:
        challenger = get_alias_version(name, "challenger")
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
    atpatch.patching.DEBUG_SET_FORMAT.
    """
    from .patching import build_patch

    if not model.is_dir():
        raise UserError(f"--model {model}: not a directory (expected a save_pretrained checkpoint)")
    candidates = {"positions": _int_list(positions, "--positions"),
                  "candidate_ids": _int_list(candidate_ids, "--candidate-ids"), "flag_as_group": flag_as_group}
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
