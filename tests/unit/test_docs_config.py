"""docs/configuration.md lists exactly the keys the loader accepts and the attrs classes hold."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import attrs
import pytest

import wstrio

DOC = Path(__file__).parents[2] / "docs" / "configuration.md"


def documented() -> dict[str, set[str]]:
    sections: dict[str, set[str]] = {}
    current = None
    for line in DOC.read_text().splitlines():
        heading = re.match(r"## `(\[.*\])`", line)
        if heading:
            current = heading.group(1)
            sections[current] = set()
        elif line.startswith("## "):
            current = None
        elif current and (row := re.match(r"\| `([a-z0-9-]+)` \|", line)):
            sections[current].add(row.group(1))
    return sections


def accepted(probe: dict[str, Any]) -> set[str]:
    with pytest.raises(wstrio.ConfigError) as info:
        wstrio.config_from_mapping(probe)
    for key, message in info.value.problems:
        if key.endswith("__probe__"):
            return set(message.split("allowed keys here: ")[1].split(", "))
    raise AssertionError(info.value.problems)


PROBES: dict[str, dict[str, Any]] = {
    "[server]": {"server": {"__probe__": 1}},
    "[server.tls]": {"server": {"tls": {"__probe__": 1}}},
    "[server.metrics]": {"server": {"metrics": {"__probe__": 1}}},
    "[[route]]": {"route": [{"__probe__": 1}]},
    "[[route.backend]]": {"route": [{"handler": "wstunnel", "path": "/", "backend": [{"__probe__": 1}]}]},
}
CLASSES: dict[str, tuple[type, set[str]]] = {
    # Fields that are not keys: nested tables, and bookkeeping.
    "[server]": (wstrio.ServerConfig, {"routes", "source"}),
    "[server.tls]": (wstrio.TlsConfig, set()),
    "[server.metrics]": (wstrio.MetricsConfig, set()),
    "[[route]]": (wstrio.Route, set()),
    "[[route.backend]]": (wstrio.Backend, set()),
}


@pytest.mark.parametrize("section", list(PROBES))
def test_documented_keys_are_the_loaders_keys(section: str) -> None:
    assert documented()[section] == accepted(PROBES[section])


@pytest.mark.parametrize("section", list(CLASSES))
def test_every_class_field_is_a_documented_key(section: str) -> None:
    cls, not_keys = CLASSES[section]
    fields = {f.name.replace("_", "-") for f in attrs.fields(cls)} - not_keys
    keys = documented()[section]
    # The TOML table key for the list of backends is "backend"; the field is "backends".
    keys = {"backends" if k == "backend" else k for k in keys}
    assert fields == keys


def test_the_complete_example_is_valid(tmp_path: Path) -> None:
    text = DOC.read_text()
    example = text.split("## A complete example", 1)[1].split("```toml", 1)[1].split("```", 1)[0]
    config = wstrio.config_from_mapping(tomllib.loads(example), base_dir=tmp_path)
    assert len(config.routes) == 3
