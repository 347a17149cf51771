"""The sans-I/O core stays sans-I/O, and imports point one way (DESIGN.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "wstrio"
SANSIO = sorted((PACKAGE / "_sansio").glob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """Modules imported at run time (imports under ``if TYPE_CHECKING:`` are for types only)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            node.body = []
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            prefix = "." * node.level
            names.add(prefix + (node.module or ""))
    return names


@pytest.mark.parametrize("path", SANSIO, ids=lambda p: p.name)
def test_sansio_never_imports_trio_or_the_io_layer(path: Path) -> None:
    modules = imported_modules(path)
    assert not {m for m in modules if m == "trio" or m.startswith("trio.")}, f"{path.name} imports trio"
    assert not {m for m in modules if "_io" in m.split(".")}, f"{path.name} imports the I/O layer"


def test_config_and_errors_import_nothing_above_them() -> None:
    for name in ("_config.py", "_errors.py"):
        modules = imported_modules(PACKAGE / name)
        assert not {m for m in modules if m.startswith(("trio", "._io", ".._io"))}, name
