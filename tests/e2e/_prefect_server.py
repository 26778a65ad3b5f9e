"""A real local Prefect server for the e2e tests, as a user starts one (`prefect server start`), and the
few REST reads the tests make of it. Its own PREFECT_HOME (SQLite database) and a free loopback port;
the server's process group is killed on exit, whatever the test did."""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

import httpx
from processes import free_port, stop  # noqa: F401 (the e2e tests import them from here too)


def _tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:] if path.is_file() else ""


@contextlib.contextmanager
def prefect_server(home: Path, env: dict[str, str], timeout: float = 180):
    """Start `prefect server start` with PREFECT_HOME `home`; yield `env` pointed at it (PREFECT_API_URL)."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**env, "PREFECT_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    log = home / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                env=env, cwd=home, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    api = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + timeout
        while not _healthy(api):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prefect server did not come up at {api} (exit {proc.poll()}):\n{_tail(log)}")
            time.sleep(1)
        yield {**env, "PREFECT_API_URL": api}
    finally:
        stop(proc)


def _healthy(api: str) -> bool:
    try:
        return httpx.get(f"{api}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def api_post(env: dict[str, str], path: str, body: dict | None = None):
    """POST to the server's REST API (the filter endpoints); the JSON answer."""
    res = httpx.post(f"{env['PREFECT_API_URL']}/{path}", json=body or {}, timeout=30)
    res.raise_for_status()
    return res.json()


def api_get(env: dict[str, str], path: str):
    res = httpx.get(f"{env['PREFECT_API_URL']}/{path}", timeout=30)
    res.raise_for_status()
    return res.json()


def run_cli(env: dict[str, str], cwd: Path, *args: str, timeout: float = 300) -> str:
    """Run a command as a user would (`prefect ...`, `python flows/...`); its output. Its whole process
    group is stopped on a timeout; a non-zero exit fails with the output's tail."""
    proc = subprocess.Popen(list(args), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(proc)
        raise RuntimeError(f"{' '.join(args)}: no answer in {timeout} s") from None
    finally:
        stop(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} (in {cwd}) exit {proc.returncode}:\n{out[-3000:]}")
    return out
