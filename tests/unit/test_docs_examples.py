"""Every configuration in the docs loads, and every Python example compiles.

(Runnable examples live in examples/ and are run by other tests; example
configurations there are checked with ``wstrio check`` in test_cli.py.)
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

import wstrio

ROOT = Path(__file__).parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```(toml|python)\n(.*?)```", re.S)


def blocks(kind: str) -> list[tuple[str, str]]:
    out = []
    for page in PAGES:
        for n, (lang, text) in enumerate(BLOCK.findall(page.read_text())):
            if lang == kind:
                out.append((f"{page.name}#{n}", text))
    return out


TOML = blocks("toml")
PYTHON = blocks("python")


def test_there_are_examples_to_check() -> None:
    assert len(TOML) > 10
    assert len(PYTHON) > 5


@pytest.mark.parametrize(("where", "text"), TOML, ids=[w for w, _ in TOML])
def test_toml_examples_are_valid(where: str, text: str, tmp_path: Path) -> None:
    if "myproject." in text:
        pytest.skip("refers to the reader's own module")
    data = tomllib.loads(text)
    route = {"path": "/", "handler": "wstunnel"}
    if isinstance(data.get("route"), dict):
        # Only [[route.backend]] tables: check them inside a route.
        data = {"route": [{**route, **data["route"]}]}
    elif "route" not in data and "server" not in data:
        # Bare keys of a spawned backend's table.
        data = {"route": [{**route, "backend": [{"socket": "s.sock", "bin-path": "prog", **data}]}]}
    wstrio.config_from_mapping(data, base_dir=tmp_path)


@pytest.mark.parametrize(("where", "text"), PYTHON, ids=[w for w, _ in PYTHON])
def test_python_examples_compile(where: str, text: str) -> None:
    compile(text, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def _readme_block_after(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index(heading) :]
    start = section.index("```sh\n") + len("```sh\n")
    return section[start : section.index("```", start)].strip()


def test_ci_runs_the_readmes_test_command() -> None:
    command = _readme_block_after("## Running the tests")
    assert command.startswith("python3 -m venv .venv && ")  # no pip install outside a venv (PEP 668)
    ci = (ROOT / ".ci" / "run").read_text()
    assert command.replace("python3 ", '"$PYTHON" ', 1) in ci


def test_the_quick_start_is_one_venv_command() -> None:
    command = _readme_block_after("## Quick start")
    assert command.startswith("python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/wstrio serve examples/")
