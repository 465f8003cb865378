"""Import structure of the Linear layers, rotations, spline and models (issue 8, item 21).

Every import statement is read from the source (``ast``), including imports inside functions:
the old ``linear.py`` ↔ ``gram_linear.py`` cycle was hidden by a lazy import in ``Linear.__new__``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import survae_flowify

PACKAGE = Path(survae_flowify.__file__).parent
AREA = [
    "layers/linear_base.py", "layers/linear.py", "layers/gram_linear.py", "layers/lu_linear.py",
    "layers/rotations.py",
    "transforms/spline.py", "transforms/_rq_kernel.py", "models/__init__.py", "models/builders.py",
    "models/paper.py", "models/small.py", "models/nsf.py",
]


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(dotted: str) -> bool:
    base = PACKAGE.parent / dotted.replace(".", "/")
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, imported names)`` for every import statement of the file, wherever it is; a
    submodule imported by name (``from pkg import mod``) counts as an import of that module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules = [n.name for n in node.names if _is_module(f"{node.module}.{n.name}")]
            found.append((node.module, [n.name for n in node.names if n.name not in modules]))
            found += [(f"{node.module}.{m}", []) for m in modules]
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in (PACKAGE / "layers").glob("*.py"):
        graph[_module(path)] = {m for m, _ in _imports(path) if m.startswith("survae_flowify.layers.")}
    return graph


def test_no_import_cycle_among_the_layers() -> None:
    graph = _graph()

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == target or (nxt not in seen and reaches(nxt, target, seen | {nxt})):
                return True
        return False

    cyclic = sorted(m for m in graph if reaches(m, m, {m}))
    assert not cyclic, f"import cycle through {cyclic}"


@pytest.mark.parametrize("file", AREA)
def test_no_private_name_is_imported_from_another_module(file: str) -> None:
    """Internal modules (``_checks``, ``_cache``, ``_rq_kernel``) may be imported; their private
    names (``_compiling``) may not."""
    path = PACKAGE / file
    private = [(m, n) for m, names in _imports(path) for n in names
               if n.startswith("_") and m.startswith("survae_flowify")]
    assert not private, f"{file} imports private names {private}"
