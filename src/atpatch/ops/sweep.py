"""The cells of a sweep: one (scenario, variant, seed) each, the whole pipeline from scratch in a
workspace of its own.

A cell is what a benchmark measures and what a sweep distributes: `run_cell` makes a fresh workspace
(atpatch.ops.workspace) with the cell's params overrides, runs `dvc repro register@<scenario>` there
and returns the evaluate and gate reports. The serial benchmark (benchmarks/scenarios.py) calls it in
a loop, the sweep flow (flows/sweep.py) as one Prefect task per cell on Dask workers; it lives in the
library so that a worker imports it by name, like any other library function.

Every cell's stages run with an explicit torch thread count: params.yaml's `threads`, which each model
stage pins, or the cell's own `threads` written into its workspace's params (and OMP_NUM_THREADS,
MKL_NUM_THREADS for what runs before the pin). The same seed gives the same numbers only with the same
number of threads, so a cell's result must not depend on the worker that happens to run it.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atpatch.conventions import DEFAULT_PROFILE, PARAMS_FILE, report_path
from atpatch.io import deep_merge, load_params
from atpatch.ops.cluster import without_dask_malloc_trim
from atpatch.ops.workspace import make_workspace, pipeline_env
from atpatch.scenarios import torch_threads

CELL_THREADS = 1  # torch threads per cell on a cluster: one per core, as a Dask worker runs one task at a time
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
TAIL_LINES = 20   # lines of a failed cell's output its error carries


@dataclass(frozen=True)
class Cell:
    """One grid cell: a scenario's variant under a seed (None: params.yaml's, or the variant's own)."""

    scenario: str
    variant: str
    seed: int | None = None
    overrides: dict = field(default_factory=dict, hash=False)  # params.yaml overrides, top level

    @property
    def label(self) -> str:
        return cell_label(self.variant, self.seed)

    @property
    def name(self) -> str:
        """The cell's workspace folder name."""
        return f"{self.scenario}-{self.label}"


def cell_label(variant: str, seed: int | None) -> str:
    """`variant`, or `variant-seedN` for a cell with an explicit seed: its row in results and tables."""
    return variant if seed is None else f"{variant}-seed{seed}"


def parse_seeds(seeds: Iterable[Any] | None) -> list[int | None]:
    """[None] (params.yaml's seed) when no seeds are given, else the distinct seeds as integers >= 0."""
    if not seeds:
        return [None]
    out = []
    for s in seeds:
        text = str(s).strip()
        if not text.isdigit():
            raise ValueError(f"seeds: expected integers >= 0, got {s!r}")
        out.append(int(text))
    return list(dict.fromkeys(out))


def cell_overrides(scenario: str, variant: Mapping[str, Any], seed: int | None) -> dict:
    """params.yaml overrides of a cell: the variant's mapping goes under scenarios.<scenario>, except
    `seed`, which is params.yaml's top-level seed (stages read no per-scenario seed); an explicit
    cell seed sets it too."""
    section = dict(variant)
    top = {"seed": section.pop("seed")} if "seed" in section else {}
    if seed is not None:
        top["seed"] = seed
    return {**top, "scenarios": {scenario: section}}


def expand_grid(table: Mapping[str, Mapping[str, Mapping]], scenarios: Iterable[str] | None = None,
                variants: Iterable[str] | None = None, seeds: Iterable[Any] | None = None) -> list[Cell]:
    """The cells scenario x variant x seed of `table` ({scenario: {variant: overrides}}), in its order.

    None takes every scenario, every variant of each chosen scenario, or params.yaml's seed. With
    seeds, variants that set a seed of their own are left out, unless named (then it is an error).
    ValueError, one line naming the bad value, for an unknown scenario or variant, a bad seed or an
    empty grid.
    """
    scenarios = list(table) if scenarios is None else list(dict.fromkeys(scenarios))
    for s in scenarios:
        if s not in table:
            raise ValueError(f"scenarios: expected names from {', '.join(table)}, got {s!r}")
    named = None if variants is None else list(dict.fromkeys(variants))
    known = [v for s in scenarios for v in table[s]]
    for v in named or []:
        if v not in known:
            raise ValueError(f"variants: {v!r} is not a variant of {', '.join(scenarios)} "
                             f"(their variants: {', '.join(dict.fromkeys(known))})")
    seed_list = parse_seeds(seeds)
    cells = []
    for s in scenarios:
        for v, section in table[s].items():
            if named is not None and v not in named:
                continue
            if seed_list != [None] and "seed" in section:
                if named is not None:
                    raise ValueError(f"variants: {s} {v} sets its own seed ({section['seed']}); with seeds, "
                                     f"run its base variant instead")
                continue
            cells += [Cell(s, v, seed, cell_overrides(s, section, seed)) for seed in seed_list]
    if not cells:
        raise ValueError(f"the grid is empty: no variant of {', '.join(scenarios)} matches "
                         f"variants {named} and seeds {[x for x in seed_list if x is not None]}")
    return cells


def cells_root(workdir: Path | str, profile: str) -> Path:
    """The folder of a profile's cell workspaces: <workdir>/<profile> (a profile given as a YAML path:
    its file name without the suffix)."""
    return Path(workdir) / Path(profile).stem


def cell_env(ws: Path, threads: int) -> dict[str, str]:
    """The environment of a cell's stages: the workspace's own stores and caches (a cell never reads
    another cell's registry: its gate compares with its own champion only) and `threads` torch threads."""
    return without_dask_malloc_trim({**pipeline_env(ws), **{var: str(threads) for var in THREAD_VARS}})


def with_threads(cell: Cell, threads: int | None) -> dict:
    """The cell's params overrides, with `threads` (when given) as params.yaml's top-level `threads`: the
    model stages pin that count, whatever the environment says."""
    return cell.overrides if threads is None else deep_merge(cell.overrides, {"threads": threads})


def workspace_threads(ws: Path) -> int | None:
    """The torch threads a workspace's model stages pin (params.yaml `threads`)."""
    return torch_threads(load_params(path=ws / PARAMS_FILE), ws / PARAMS_FILE)


def ran_on() -> dict:
    """Where the calling process runs: host, process id and, inside a Dask worker, its address."""
    try:
        from distributed import get_worker

        worker = get_worker().address
    except (ImportError, ValueError):  # ValueError: not inside a worker
        worker = None
    return {"host": socket.gethostname(), "pid": os.getpid(), "worker": worker}


def stage_reports(ws: Path, scenario: str) -> dict:
    """The evaluate and gate reports of a workspace; FileNotFoundError when it has none."""
    import json

    return {name: json.loads((ws / report_path(scenario, name)).read_text()) for name in ("evaluate", "gate")}


# What differs between two runs of one cell: measured times (latency, seconds) and how and where it ran.
_UNSEEDED = re.compile(r"latency|seconds|^(command|ran_on|repro)$")


def seeded_part(result: Any) -> Any:
    """A cell's result without what differs between two runs of it: every number left is seeded, so two
    runs of the cell with the same thread count give equal seeded parts, wherever they ran."""
    if isinstance(result, dict):
        return {k: seeded_part(v) for k, v in result.items() if not _UNSEEDED.search(k)}
    if isinstance(result, list):
        return [seeded_part(v) for v in result]
    return result


def _where_it_failed(lines: list[str]) -> str:
    """`at stage <the last stage dvc started>` in a repro's output, or `before any stage ran`."""
    started = [line.split("'")[1] for line in lines if line.startswith("Running stage '")]
    return f"at stage {started[-1]}" if started else "before any stage ran"


def run_cell(cell: Cell, profile: str, root: Path | str, threads: int | None = None, reuse: bool = False) -> dict:
    """Make the cell's workspace afresh under `root`, run `dvc repro register@<scenario>` there (timed,
    its output in <root>/<cell name>.log) and return the cell's result: its identity, the evaluate and
    gate reports, the time and where it ran.

    threads: torch threads of the cell's stages (None: params.yaml's `threads`).
    reuse: keep an existing workspace's data and lock file, so DVC reruns only the stages whose params
    or code changed (the time is then recorded as incremental, not from scratch).
    RuntimeError naming the cell, the failed stage and the output's last lines when the repro fails.
    """
    dest = Path(root) / cell.name
    incremental = reuse and (dest / "dvc.lock").is_file()
    if dest.exists() and not incremental:
        shutil.rmtree(dest)
    ws = make_workspace(dest, None if profile == DEFAULT_PROFILE else profile, with_threads(cell, threads))
    threads = workspace_threads(ws)
    target = f"register@{cell.scenario}"
    log = dest.parent / f"{cell.name}.log"
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        code = subprocess.run([sys.executable, "-m", "dvc", "repro", target], cwd=ws, env=cell_env(ws, threads),
                              stdout=out, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - start
    if code != 0:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        raise RuntimeError(f"{cell.scenario} {cell.label}: dvc repro {target} failed (exit {code}) "
                           f"{_where_it_failed(lines)}; output in {log}\n" + "\n".join(lines[-TAIL_LINES:]))
    return {"scenario": cell.scenario, "variant": cell.variant, "seed": cell.seed, "profile": profile,
            "threads": threads, "repro_seconds": seconds,
            "repro": "incremental (existing workspace)" if incremental else "from scratch",
            "ran_on": ran_on(), **stage_reports(ws, cell.scenario)}
