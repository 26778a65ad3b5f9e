"""Self-contained pipeline workspaces: the repo's dvc.yaml and stages with merged params.

A workspace is a directory that DVC can reproduce on its own (its own git repository, `.dvc/`,
cache, lock file, MLflow store, Prefect home), used for the small profile (`make run-small`) and the
end-to-end tests. Its own git history is what makes DVC's experiment commands work there
(`dvc exp run -S`, `dvc params diff`, `dvc metrics diff`): the workspace is committed when it is
made and after each `atpatch run` (`commit_workspace`). It holds:

- `dvc.yaml` and `stages/` copied from the repository;
- `src` as a symlink to the repository's `src` (dvc.yaml lists `src/atpatch/...` deps; the
  package is installed editable, so the stages import the repository's code either way and
  DVC hashes what actually runs); `gx` likewise: the stored expectation suites the stages load
  from the repository, declared as deps under `gx/expectations/`;
- `params.yaml` = the repository's params.yaml, deep-merged with `profiles/<profile>.yaml`,
  then with `overrides`;
- the raw data sources copied from the repository's `data/raw/<source>` (or `raw_cache/<source>`),
  committed to the workspace's DVC cache for stages `fetch@<source>` (`dvc commit`): DVC removes a
  non-persistent output before running its stage, so without the commit the first `dvc repro`
  would delete the files and download them again.

CLI: `python -m atpatch.ops.workspace --profile small --dest .work/small` prints the workspace path.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from atpatch.core.errors import AtPatchError
from atpatch.conventions import DEFAULT_PROFILE, PARAMS_FILE, PROFILES_DIR, environment, profile_file, workspace_dir
from atpatch.io import deep_merge

REPO = Path(__file__).resolve().parents[3]


def _load_yaml(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise AtPatchError(f"{path}: not found")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise AtPatchError(f"{path}: expected a mapping at top level, got {type(data).__name__}")
    return data


def profile_path(profile: str, repo: Path = REPO) -> Path:
    """`profiles/<profile>.yaml` in the repository, or `profile` itself when it is a YAML path."""
    p = Path(profile)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    return profile_file(profile, repo)


def merged_params(profile: str | None, overrides: Mapping[str, Any] | None = None, repo: Path = REPO) -> dict:
    """params.yaml deep-merged with the profile file (if any), then with `overrides`."""
    params = _load_yaml(repo / "params.yaml")
    if profile:
        params = deep_merge(params, _load_yaml(profile_path(profile, repo)))
    return deep_merge(params, overrides)


PARAMS_STAMP = ".atpatch-params.sha256"  # the hash of the params.yaml this module last wrote


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_params(dest: Path, params: Mapping[str, Any]) -> Path:
    """Write `params` as `dest/params.yaml` (key order kept) and remember what was written."""
    import yaml

    path = Path(dest) / PARAMS_FILE
    text = yaml.safe_dump(dict(params), sort_keys=False, default_flow_style=False)
    path.write_text(text, encoding="utf-8")
    (Path(dest) / PARAMS_STAMP).write_text(_sha(text), encoding="utf-8")
    return path


def check_no_hand_edits(dest: Path, profile: str | None) -> None:
    """Refuse to overwrite a workspace params.yaml that was edited by hand since it was written."""
    path, stamp = Path(dest) / PARAMS_FILE, Path(dest) / PARAMS_STAMP
    if path.is_file() and stamp.is_file() and _sha(path.read_text(encoding="utf-8")) != stamp.read_text().strip():
        source = profile_file(profile) if profile else PARAMS_FILE
        raise AtPatchError(f"{path}: edited by hand since it was made; making the workspace again would overwrite "
                           f"the edits. Move them into {source} (or pass them with --set), or delete {path}")


# What a workspace's git never tracks: the data (DVC tracks it; ignored up front, as a workspace made
# without git holds data that DVC never listed in a .gitignore), and the stores and caches of runs.
WORKSPACE_GITIGNORE = "".join(f"{line}\n" for line in (
    "/data/", ".dvc/cache/", ".dvc/tmp/", ".dvc/site_cache/", "dvc_plots/", "mlflow.db", "mlartifacts/", "mlruns/",
    ".prefect/", ".cache/", "reports/", PARAMS_STAMP))


def _git(dest: Path, *args: str) -> str:
    res = subprocess.run(["git", *args], cwd=dest, capture_output=True, text=True)
    if res.returncode != 0:
        raise AtPatchError(f"git {' '.join(args)} in {dest} failed (exit {res.returncode}): "
                           f"{(res.stdout + res.stderr).strip()[-500:]}")
    return res.stdout


def commit_workspace(dest: Path | str, message: str) -> bool:
    """Commit everything git tracks in the workspace (params, dvc.lock, metrics, plots) as the baseline
    that `dvc params diff`, `dvc metrics diff` and `dvc exp` compare with; False when nothing changed."""
    dest = Path(dest)
    _git(dest, "add", "-A")
    if not _git(dest, "status", "--porcelain").strip():
        return False
    _git(dest, "commit", "-q", "-m", message)
    return True


def _init_git(dest: Path) -> None:
    """A git repository of the workspace's own (never the enclosing project's), with a local identity:
    DVC's experiments commit to it."""
    _git(dest, "init", "-q")
    _git(dest, "config", "user.name", "atpatch workspace")
    _git(dest, "config", "user.email", "atpatch@localhost")
    (dest / ".gitignore").write_text(WORKSPACE_GITIGNORE, encoding="utf-8")


def _dvc(dest: Path, *args: str) -> None:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(dest / ".dvc" / "site_cache")}
    res = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=dest, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise AtPatchError(f"dvc {' '.join(args)} in {dest} failed (exit {res.returncode}):\n"
                           f"{(res.stdout + res.stderr).strip()[-2000:]}")


def copy_raw_sources(dest: Path, params: Mapping[str, Any], repo: Path, raw_cache: Path | None) -> list[str]:
    """Copy every raw source of `params` that the repository (or `raw_cache`) already holds into the
    workspace and verify it; return the names copied. Missing ones are left to stage fetch."""
    from atpatch.scenarios.data.sources import fetch_source
    from atpatch.scenarios import raw_dir

    copied = []
    for name in params.get("sources") or []:
        target = dest / raw_dir(name)
        for cand in (raw_cache / name if raw_cache else None, repo / raw_dir(name)):
            if cand is None or not cand.is_dir() or cand.resolve() == target.resolve():
                continue
            # A copy, not a hard link: DVC makes its cache files read-only, which would change the
            # mode of the shared inode in the source folder too.
            shutil.copytree(cand, target, dirs_exist_ok=True)
            fetch_source(name, target)  # verifies the sha256 (downloads only what is missing)
            copied.append(name)
            break
    return copied


LINKED = ("src", "gx")  # repository folders a workspace reaches through a symlink
DVCIGNORE = ".dvcignore"  # what DVC leaves out of dependency hashes (Python bytecode)


def _link(path: Path, target: Path) -> None:
    """`path` a symlink to `target`, unless `path` is a real folder (left alone)."""
    if path.is_symlink() or not path.exists():
        if path.is_symlink():
            path.unlink()
        path.symlink_to(target, target_is_directory=True)


def make_workspace(dest: Path | str, profile: str | None, overrides: Mapping[str, Any] | None = None,
                   raw_cache: Path | str | None = None, repo: Path | str = REPO) -> Path:
    """Create (or refresh) a pipeline workspace at `dest`; return its absolute path.

    Refreshing an existing workspace rewrites dvc.yaml, stages/ and params.yaml and keeps its
    data, DVC cache, lock file and MLflow store (DVC then decides what is stale).
    """
    repo = Path(repo).resolve()
    dest = Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", "stages", DVCIGNORE):
        if not (repo / name).exists():
            raise AtPatchError(f"{repo / name}: not found (is {repo} the AtPatch repository?)")

    shutil.copy2(repo / "dvc.yaml", dest / "dvc.yaml")
    shutil.copytree(repo / "stages", dest / "stages", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in LINKED:
        _link(dest / name, repo / name)
    check_no_hand_edits(dest, profile)
    params = merged_params(profile, overrides, repo)
    write_params(dest, params)

    fresh = not (dest / ".dvc").is_dir()
    if not (dest / ".git").exists():
        _init_git(dest)
    if fresh:
        _dvc(dest, "init", "-q")
    shutil.copy2(repo / DVCIGNORE, dest / DVCIGNORE)  # after init, which writes an empty one
    # As the repository's .dvc/config (one dvc call less than `dvc config` twice); absolute site cache
    # path: DVC reads a relative one against its working directory. Written each time: a workspace
    # made before it had git (no_scm) becomes a git-backed one.
    (dest / ".dvc" / "config").write_text(
        f"[core]\n    analytics = false\n    site_cache_dir = {dest / '.dvc' / 'site_cache'}\n", encoding="utf-8")

    copied = copy_raw_sources(dest, params, repo, Path(raw_cache) if raw_cache else None)
    if copied and (fresh or not (dest / "dvc.lock").is_file()):
        # Record the present files as stage fetch's outputs so that `dvc repro` keeps them.
        _dvc(dest, "commit", "--force", "-q", *[f"fetch@{name}" for name in copied])
    commit_workspace(dest, f"workspace from params.yaml + profile {profile}" if profile else "workspace from params.yaml")
    return dest


def pipeline_env(workdir: Path | str) -> dict[str, str]:
    """The environment of a pipeline run in `workdir`: atpatch.conventions' defaults, with the
    project's own caches and stores (a workspace never writes into the repository's MLflow store)."""
    return environment(workdir, isolate=True)


def profile_workdir(profile: str, repo: Path | str = REPO, create: bool = True) -> Path:
    """Where profile `profile` runs: the repository itself for the default profile, else the workspace
    .work/<profile>, made or refreshed with `create`. AtPatchError naming the known profiles when
    profiles/<profile>.yaml does not exist."""
    repo = Path(repo).resolve()
    if profile == DEFAULT_PROFILE:
        return repo
    if not profile_path(profile, repo).is_file():
        known = [DEFAULT_PROFILE, *sorted(p.stem for p in (repo / PROFILES_DIR).glob("*.yaml"))]
        raise AtPatchError(f"--profile {profile}: {profile_path(profile, repo)} not found (profiles: {', '.join(known)})")
    workdir = workspace_dir(profile, repo)
    return make_workspace(workdir, profile, repo=repo) if create else workdir


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m atpatch.ops.workspace", description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default=None, help="profiles/<name>.yaml (or a YAML path) merged over params.yaml")
    ap.add_argument("--dest", required=True, help="workspace directory (created if missing)")
    ap.add_argument("--raw-cache", default=None, help="folder holding raw sources as <source>/ subfolders")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=YAML",
                    help="dotted override, e.g. --set scenarios.vision-backdoor.gate.force_fail=true (repeatable)")
    a = ap.parse_args(argv)
    import yaml

    overrides: dict = {}
    for item in a.set:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            ap.error(f"--set expects KEY=VALUE, got {item!r}")
        node: dict = {}
        leaf = node
        parts = key.split(".")
        for part in parts[:-1]:
            leaf = leaf.setdefault(part, {})
        leaf[parts[-1]] = yaml.safe_load(raw)
        overrides = deep_merge(overrides, node)
    print(make_workspace(Path(a.dest), a.profile, overrides, a.raw_cache))


if __name__ == "__main__":
    main()
