"""MLflow's model server as a child process: the command line, start (wait for /ping), stop.

One implementation for `atpatch serve`, the serving e2e test and the load benchmark, so that what
is tested and measured is the server users get.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from atpatch.core.errors import AtPatchError


def serve_command(model_uri: str, host: str = "127.0.0.1", port: int = 5001, workers: int = 1) -> list[str]:
    """`mlflow models serve` in this interpreter, on the current environment (no conda/virtualenv build)."""
    return [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
            "-h", host, "-p", str(port), "-w", str(workers)]


def server_env(extra: dict | None = None) -> dict:
    """os.environ + `extra`, with this interpreter's bin first on PATH (the server execs uvicorn from there)."""
    return {**os.environ, **(extra or {}),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_uri: str, env: dict, log: Path, timeout: float = 180) -> tuple[subprocess.Popen, str]:
    """Start the server on a free loopback port and return (process, base URL) once /ping answers 200.

    The process leads its own process group (stop_server kills its workers too); its output goes to
    `log`. Raises AtPatchError with the log's tail when it exits early or does not answer in time.
    """
    import requests

    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(serve_command(model_uri, port=port), env=server_env(env), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AtPatchError(f"model server for {model_uri} exited with {proc.returncode}:\n"
                               f"{log.read_text(errors='replace')[-3000:]}")
        try:
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return proc, url
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    stop_server(proc)
    raise AtPatchError(f"model server for {model_uri} did not answer /ping within {timeout:.0f} s; log: {log}")


def stop_server(proc: subprocess.Popen, grace: float = 15) -> None:
    """SIGTERM the server's process group, SIGKILL it after `grace` seconds."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(grace)
