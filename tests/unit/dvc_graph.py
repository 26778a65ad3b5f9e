"""What each pipeline stage really imports: the atpatch modules reachable from stages/<stage>.py
(function-level imports included; a stage that resolves scenario kinds by name reaches every kind)."""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"


@lru_cache(maxsize=1)
def graph():
    import grimp

    return grimp.build_graph("atpatch")


def direct_imports(script: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("atpatch"):
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("atpatch"))
    return {n for n in names if n in graph().modules}


def reachable(script: Path) -> set[str]:
    """Modules `script` imports, directly or through other modules, with their parent packages."""
    from atpatch.conventions import KIND_MODULES

    g, todo, seen = graph(), list(direct_imports(script)), set()
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        todo += g.find_modules_directly_imported_by(mod)
        parts = mod.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b.c runs a/__init__, a/b/__init__
        if mod == "atpatch.scenarios":
            todo += list(KIND_MODULES.values())
    return seen


def module_file(mod: str) -> Path:
    base = SRC / mod.replace(".", "/")
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def needed_files(stage: str) -> set[Path]:
    return {module_file(m).relative_to(REPO) for m in reachable(REPO / "stages" / f"{stage}.py")}


def covered(path: Path, deps: list[str]) -> bool:
    return any(path == Path(d) or Path(d) in path.parents for d in deps)
