"""The sans-I/O core stays sans-I/O, and imports point one way (DESIGN.md, docs/architecture.md).

The layout is the map: ``_sansio/`` knows no I/O; under ``_io/``, ``streams/``
moves bytes and knows no HTTP, ``backends/`` opens byte streams and knows no
handler, ``http/`` speaks HTTP and knows no handler, and each handler under
``handlers/`` stands alone (only ``dispatch`` knows them all).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "wstrio"
ALL = sorted(PACKAGE.rglob("*.py"))
SANSIO = sorted((PACKAGE / "_sansio").rglob("*.py"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the modules imported at run time (``if TYPE_CHECKING:`` imports are for types only)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            node.body = []
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _within(names: set[str], prefix: str) -> set[str]:
    return {n for n in names if n == prefix or n.startswith(prefix + ".")}


def _ids(path: Path) -> str:
    return str(path.relative_to(PACKAGE))


def test_every_module_is_found() -> None:
    assert len(ALL) > 40
    assert len(SANSIO) > 15


@pytest.mark.parametrize("path", SANSIO, ids=_ids)
def test_sansio_never_imports_trio_or_the_io_layer(path: Path) -> None:
    modules = imported_modules(path)
    assert not _within(modules, "trio"), f"{path.name} imports trio"
    assert not _within(modules, "wstrio._io"), f"{path.name} imports the I/O layer"


def test_config_and_errors_import_nothing_above_them() -> None:
    for name in ("_config.py", "_errors.py"):
        modules = imported_modules(PACKAGE / name)
        assert not _within(modules, "trio"), name
        assert not _within(modules, "wstrio._io"), name


@pytest.mark.parametrize("path", sorted((PACKAGE / "_io" / "streams").rglob("*.py")), ids=_ids)
def test_streams_know_no_http_and_no_handler(path: Path) -> None:
    modules = imported_modules(path)
    for layer in ("h11", "h2", "wstrio._io.http", "wstrio._io.handlers", "wstrio._io.backends", "wstrio._sansio.http"):
        assert not _within(modules, layer), f"{path.name} imports {layer}"


@pytest.mark.parametrize("path", sorted((PACKAGE / "_io" / "backends").rglob("*.py")), ids=_ids)
def test_backends_know_no_handler_and_no_http_engine(path: Path) -> None:
    modules = imported_modules(path)
    for layer in ("h11", "h2", "wstrio._io.http", "wstrio._io.handlers"):
        assert not _within(modules, layer), f"{path.name} imports {layer}"


@pytest.mark.parametrize("path", sorted((PACKAGE / "_io" / "http").rglob("*.py")), ids=_ids)
def test_http_knows_no_handler(path: Path) -> None:
    assert not _within(imported_modules(path), "wstrio._io.handlers"), path.name


HANDLERS = sorted(p for p in (PACKAGE / "_io" / "handlers").rglob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("path", HANDLERS, ids=_ids)
def test_handlers_never_import_each_other(path: Path) -> None:
    if path.name == "dispatch.py":
        return  # the one place that knows every handler
    own = module_name(path)
    family = own.rpartition(".")[0]  # the CGI family shares handlers/cgi/common.py
    others = {
        m
        for m in _within(imported_modules(path), "wstrio._io.handlers")
        if m != own and not (family.endswith(".cgi") and _within({m}, family))
    }
    assert not others, f"{path.name} imports another handler: {sorted(others)}"


def test_imports_have_no_cycle_between_modules() -> None:
    """A module never imports (at run time, through any chain) a module that imports it back."""
    known = {module_name(p): p for p in ALL}
    graph = {name: {m for m in imported_modules(p) if m in known and m != name} for name, p in known.items()}
    for start in graph:
        seen: set[str] = set()
        todo = list(graph[start])
        while todo:
            name = todo.pop()
            assert name != start, f"{start} imports itself through a chain"
            if name not in seen:
                seen.add(name)
                todo.extend(graph[name])
