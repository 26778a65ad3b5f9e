"""Atomic file and directory writes, and params.yaml loading.

Stages write their outputs through these helpers so that a crash or a failed validation never
leaves a half-written output where DVC (or the next stage) would take it for a finished one.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from atpatch.core.errors import AtPatchError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_dir(final: Path | str) -> Iterator[Path]:
    """Yield an empty temp directory next to `final`; on success it replaces `final`.

    The temp dir is a sibling (same filesystem) so that the swap is a rename, not a copy.
    On an exception the temp dir is removed and an existing `final` is left untouched.
    The swap itself is two renames (old -> trash, temp -> final): a crash between them leaves
    `final` missing, never half-written.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temps(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{os.getpid()}-", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the usual directory mode
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    trash = None
    if final.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.replace(final, trash / final.name)
    os.replace(tmp, final)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_temps(final: Path) -> list[Path]:
    """Remove temp dirs of `final` left by writers that died (SIGKILL skips cleanup): their names
    carry the writer's pid. Live writers' temp dirs are kept. Returns what was removed."""
    removed = []
    for cand in final.parent.glob(f".{final.name}.tmp-*-*"):
        pid = cand.name[len(f".{final.name}.tmp-"):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)) and cand.is_dir():
            shutil.rmtree(cand, ignore_errors=True)
            removed.append(cand)
    return removed


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    """Write `data` to `path` via a temp file in the same directory and os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def safetensors_bytes(tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> bytes:
    """`safetensors.torch.save(tensors, metadata)` with the metadata in sorted order.

    safetensors writes the metadata keys in an order that changes from process to process (a hash map),
    so the same tensors would give different files, and DVC different hashes, run after run. The header
    is rewritten with the keys sorted: the same keys and values, so the same length, and the same file
    for safetensors readers."""
    import struct

    from safetensors.torch import save

    data = save(dict(tensors), metadata=dict(metadata) if metadata else None)
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + size])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        header = {"__metadata__": header.pop("__metadata__"), **header}
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(text) > size:
        raise AtPatchError(f"safetensors header grew from {size} to {len(text)} bytes when its metadata was sorted")
    return data[:8] + text.ljust(size, b" ") + data[8 + size:]


def finite(obj: Any) -> Any:
    """`obj` with every NaN or infinite float replaced by None: standard JSON has neither."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def write_json_atomic(path: Path | str, obj: Any) -> None:
    """Write `obj` as sorted, indented, standard JSON (NaN and infinities as null; stable bytes for DVC)
    to `path`, atomically."""
    text = json.dumps(finite(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def deep_merge(base: Mapping[str, Any] | None, override: Mapping[str, Any] | None) -> dict:
    """A new dict: `base` with `override` merged in, recursively.

    Where both sides hold a mapping the merge recurses; anything else in `override` (a scalar,
    a list, None) replaces the base value whole: lists are not concatenated and `None` sets the
    key to None (it does not delete it). Neither input is modified.
    """
    out = copy.deepcopy(dict(base or {}))
    for key, value in (override or {}).items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_params(section: str | None = None, path: Path | str = "params.yaml") -> dict:
    """Read `path` (YAML); return the whole mapping, or one top-level `section` of it.

    Raises AtPatchError naming the file when it is missing, not a mapping, or lacks `section`.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise AtPatchError(f"params file {path}: not found (cwd {Path.cwd()})")
    with path.open("r", encoding="utf-8") as fh:
        params = yaml.safe_load(fh)
    if not isinstance(params, dict):
        raise AtPatchError(f"params file {path}: expected a mapping at top level, got {type(params).__name__}")
    if section is None:
        return params
    if section not in params:
        raise AtPatchError(
            f"params file {path}: section '{section}' is missing (sections present: {sorted(params)})"
        )
    return params[section]


def read_json(path: Path | str, produced_by: str) -> Any:
    """A JSON file written by stage `produced_by`; AtPatchError naming it when missing or broken."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise AtPatchError(f"{path}: not found; run stage {produced_by} first") from exc
    except json.JSONDecodeError as exc:
        raise AtPatchError(f"{path}: not valid JSON ({exc})") from exc


def report_paths(params: dict) -> dict[str, Path]:
    """evaluate.json and gate.json paths: `evaluate.out` / `gate.out` if set, else metrics/<scenario>/..."""
    from atpatch.conventions import out_path

    return {stage: Path((params.get(stage) or {}).get("out") or out_path(stage, params["scenario"]))
            for stage in ("evaluate", "gate")}
