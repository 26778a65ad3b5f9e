"""Prefect 3 flow that runs the DVC pipeline stage by stage.

The flow holds no stage logic: each task runs one stage of the workspace's dvc.yaml with
`dvc repro --single-item <stage>@<scenario>` (DVC decides whether the stage is stale, runs its command and
updates dvc.lock), so `dvc repro` and this flow execute the same code and share one lock file.
Prefect adds retries (2, 5 s apart), logging of the stage's output and run history.

Each run ends with a Prefect artifact: the scenario's headline metrics and the gate decision (artifacts.py).

    python flows/pipeline.py [--workdir DIR | --profile P] [--scenario S] [--stages gate register] [--force]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))  # flows/ is not a package

from prefect import flow, get_run_logger, task  # noqa: E402

from artifacts import publish_summary  # noqa: E402
from atpatch.conventions import PARAMS_FILE, PIPELINE_FLOW, environment  # noqa: E402
from atpatch.core.errors import AtPatchError  # noqa: E402
from atpatch.ops.workspace import profile_workdir  # noqa: E402

TAIL_LINES = 40
REPO = Path(__file__).resolve().parent.parent


def resolve_workdir(workdir: str | None = None, profile: str | None = None) -> str:
    """The directory a flow runs the pipeline in: `workdir` (default: the working directory), or the
    workspace of `profile`, made or refreshed from this repository (the repository for `default`)."""
    if workdir and profile:
        raise ValueError(f"give a workdir or a profile, not both (workdir {workdir!r}, profile {profile!r})")
    return str(profile_workdir(profile, REPO) if profile else Path(workdir or ".").resolve())


def dvc_stages(workdir: str | Path = ".") -> list[str]:
    """Stage names of `workdir/dvc.yaml` (foreach templates, without @item), in file order."""
    import yaml

    path = Path(workdir) / "dvc.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (workdir must hold dvc.yaml and params.yaml)")
    stages = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("stages") or {}
    return list(stages)


def scenario_of(workdir: str | Path, scenario: str | None) -> tuple[str, str]:
    """(scenario, its raw data source): `scenario` or params.yaml's default; ValueError if unknown."""
    import yaml

    path = Path(workdir) / PARAMS_FILE
    if not path.is_file():
        raise ValueError(f"{path}: not found; --workdir must be the repository or a workspace (.work/<profile>)")
    params = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    scenario = scenario or params.get("scenario")
    scenarios = params.get("scenarios") or {}
    if scenario not in scenarios:
        raise ValueError(f"unknown scenario {scenario!r}; params.yaml in {workdir} has {sorted(scenarios)}")
    return scenario, scenarios[scenario]["source"]


def select_stages(workdir: str | Path, stages: list[str] | None, scenario: str | None = None) -> list[str]:
    """DVC stage names `<stage>@<scenario>` (fetch: `fetch@<source>`) of `stages` (None: all), in
    dvc.yaml order; ValueError naming unknown stages."""
    order = dvc_stages(workdir)
    unknown = sorted(set(stages or []) - set(order))
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; dvc.yaml in {workdir} has {order}")
    scenario, source = scenario_of(workdir, scenario)
    chosen = [s for s in order if stages is None or s in set(stages)]
    return [f"{s}@{source if s == 'fetch' else scenario}" for s in chosen]


def _stage_env(workdir: str | Path) -> dict[str, str]:
    """The caller's environment over atpatch.conventions' defaults for `workdir`, with this
    interpreter's bin first on PATH (dvc.yaml runs `python`)."""
    env = environment(workdir)
    env.setdefault("TQDM_DISABLE", "1")  # progress bars are noise in run logs
    return env


def _pump(stream, sink: collections.deque, log, prefix: str) -> None:
    for raw in iter(stream.readline, ""):
        line = raw.rstrip("\n").split("\r")[-1].rstrip()  # a progress bar's last state
        if line:
            sink.append(line)
            log(f"{prefix}{line}")
    stream.close()


def run_dvc_stage(stage: str, workdir: str | Path, force: bool = False, log=print) -> dict[str, Any]:
    """Run `dvc repro --single-item [--force] <stage>` in `workdir`; stream its output to `log`.

    Returns {"stage", "ran" (False when DVC skipped it as up to date), "seconds", "output"}.
    Raises RuntimeError naming the stage, the exit code and the last lines of stderr on failure.
    """
    cmd = [sys.executable, "-m", "dvc", "repro", "--single-item", *(["--force"] if force else []), stage]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=str(workdir), env=_stage_env(workdir), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, bufsize=1)
    out: collections.deque = collections.deque(maxlen=2000)
    err: collections.deque = collections.deque(maxlen=TAIL_LINES)
    reader = threading.Thread(target=_pump, args=(proc.stderr, err, log, f"[{stage}] "), daemon=True)
    reader.start()
    _pump(proc.stdout, out, log, f"[{stage}] ")
    rc = proc.wait()
    reader.join()
    seconds = time.perf_counter() - t0
    if rc != 0:
        tail = "\n".join(err) or "\n".join(list(out)[-TAIL_LINES:])
        raise RuntimeError(f"stage '{stage}' failed (dvc repro exit {rc}, {seconds:.1f} s); last lines:\n{tail}")
    text = "\n".join(out)
    ran = f"Running stage '{stage}'" in text
    return {"stage": stage, "ran": ran, "seconds": round(seconds, 2), "output": text[-4000:]}


@task(name="dvc-stage", task_run_name="{stage}", retries=2, retry_delay_seconds=5)
def dvc_stage(stage: str, workdir: str, force: bool = False) -> dict[str, Any]:
    """One DVC stage as a Prefect task (retried twice, 5 s apart)."""
    logger = get_run_logger()
    result = run_dvc_stage(stage, workdir, force, log=logger.info)
    logger.info("stage %s: %s in %.1f s", stage, "ran" if result["ran"] else "up to date, skipped",
                result["seconds"])
    return result


@flow(name=PIPELINE_FLOW)
def atpatch_pipeline(workdir: str | None = None, stages: list[str] | None = None, force: bool = False,
                     scenario: str | None = None, profile: str | None = None) -> list[dict]:
    """Run one scenario's DVC stages in `workdir` or `profile`'s workspace (all, or `stages`) in dvc.yaml
    order, one task each; then publish the metrics artifact.

    force: rerun the selected stages even when DVC finds them up to date.
    """
    workdir = resolve_workdir(workdir, profile)
    scenario, _ = scenario_of(workdir, scenario)
    results = []
    for stage in select_stages(workdir, stages, scenario):
        results.append(dvc_stage(stage, workdir, force))
    publish_summary(workdir, scenario)
    return results


def no_heartbeats():
    """Settings context without flow-run heartbeats (~1 s a flow run; STACK.md)."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    return temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})


@contextlib.contextmanager
def one_prefect_api() -> Iterator[None]:
    """Without PREFECT_API_URL, every Dask worker process would start a temporary Prefect server of its own
    (5-10 s and one more process each, measured on 2 cores): start the temporary server here, once, and hand
    its address to the flow's tasks (Prefect passes its settings to them). Stopped at exit, as Prefect's own."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start()
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        yield


def run_pipeline(workdir: str | None = None, stages: list[str] | None = None, force: bool = False,
                 scenario: str | None = None) -> list[dict]:
    """`atpatch_pipeline` with heartbeats off (what the CLI calls)."""
    with no_heartbeats():
        return atpatch_pipeline(workdir=workdir, stages=stages, force=force, scenario=scenario)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default=None, help="directory holding dvc.yaml and params.yaml (default: .)")
    ap.add_argument("--profile", default=None, help="run in this profile's workspace .work/<profile> (made or refreshed)")
    ap.add_argument("--stages", nargs="*", default=None, help="stage names (default: all)")
    ap.add_argument("--force", action="store_true", help="rerun the stages even when up to date")
    ap.add_argument("--scenario", default=None, help="a scenario of params.yaml (default: its `scenario`)")
    a = ap.parse_args(argv)
    workdir = resolve_workdir(a.workdir, a.profile)
    select_stages(workdir, a.stages, a.scenario)  # a bad argument is an error before Prefect starts
    for r in run_pipeline(workdir, a.stages, a.force, a.scenario):
        print(f"{r['stage']}: {'ran' if r['ran'] else 'up to date'} ({r['seconds']:.1f} s)")


def one_line_errors(main: Callable[[], Any]) -> None:
    """Run a flow's command line; a user error (unknown scenario or stage, no workspace, a failed stage)
    is one `error: ...` line on stderr and exit code 1, as the atpatch command does. The failed stage's
    own output was streamed above it."""
    try:
        main()
    except (ValueError, RuntimeError, OSError, AtPatchError) as exc:
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    one_line_errors(main)
