"""Issue 12, defect 6: dotfiles are not served, and nothing outside the root is revealed.

``static-deny`` (default ``[".*"]``) answers 404 for a path with a segment
that matches; ``/.well-known/`` stays served.  Everything that resolves
outside the document root (through a symbolic link) is 404 whether or not
it exists, so a client cannot probe the file system beyond the root.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

import wstrio
from tests.helpers import RawClients, start_server


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A document root with dotfiles, a ``.well-known`` file, and a link to a folder outside."""
    root = tmp_path / "www"
    (root / ".git").mkdir(parents=True)
    (root / ".git" / "config").write_text("[core]\n")
    (root / ".env").write_text("SECRET=1\n")
    (root / ".well-known").mkdir()
    (root / ".well-known" / "security.txt").write_text("Contact: mailto:security@example.com\n")
    (root / ".well-known" / ".htpasswd").write_text("admin:x\n")
    (root / "sub").mkdir()
    (root / "sub" / ".hidden.txt").write_text("hidden\n")
    (root / "plain.txt").write_text("plain\n")
    (root / "git-link").symlink_to(root / ".git")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "exists.txt").write_text("OUTSIDE\n")
    (root / "out").symlink_to(outside)
    (root / "out-file.txt").symlink_to(outside / "exists.txt")
    return root


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()


async def status_of(raw: RawClients, server: wstrio.Server, path: str) -> tuple[int, bytes]:
    response = await (await raw.tcp(server.port)).request(get(path))
    return response.status, response.body


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/.git/config", 404),
        ("/.env", 404),
        ("/.git/", 404),
        ("/.git", 404),
        ("/sub/.hidden.txt", 404),
        ("/%2egit/config", 404),  # percent-encoded: the decoded segment is matched
        ("/git-link/config", 404),  # a link inside the root to a denied folder
        ("/.well-known/security.txt", 200),
        ("/.well-known/.htpasswd", 404),  # only the .well-known segment itself is exempt
        ("/plain.txt", 200),
    ],
)
async def test_dotfiles_are_404_by_default(
    nursery: trio.Nursery, raw: RawClients, site: Path, path: str, status: int
) -> None:
    server = await start_server(nursery, {"server": {"document-root": str(site)}})
    got, body = await status_of(raw, server, path)
    assert got == status
    if status == 404:
        assert b"SECRET" not in body
        assert b"[core]" not in body


@pytest.mark.parametrize(
    "path",
    [
        "/out/exists.txt",
        "/out/missing.txt",
        "/out/",
        "/out",
        "/out-file.txt",
    ],
)
async def test_outside_the_root_is_404_whether_or_not_it_exists(
    nursery: trio.Nursery, raw: RawClients, site: Path, path: str
) -> None:
    server = await start_server(nursery, {"server": {"document-root": str(site)}})
    got, body = await status_of(raw, server, path)
    assert got == 404
    assert b"OUTSIDE" not in body


async def test_static_deny_patterns_replace_the_default(nursery: trio.Nursery, raw: RawClients, site: Path) -> None:
    (site / "notes.bak").write_text("old\n")
    (site / "sub" / "page~").write_text("old\n")
    config = {"server": {"document-root": str(site), "static-deny": ["*.bak", "*~", ".git"]}}
    server = await start_server(nursery, config)
    assert (await status_of(raw, server, "/notes.bak"))[0] == 404
    assert (await status_of(raw, server, "/sub/page~"))[0] == 404
    assert (await status_of(raw, server, "/.git/config"))[0] == 404
    assert (await status_of(raw, server, "/.env")) == (200, b"SECRET=1\n")
    assert (await status_of(raw, server, "/plain.txt")) == (200, b"plain\n")


async def test_static_deny_can_be_emptied(nursery: trio.Nursery, raw: RawClients, site: Path) -> None:
    server = await start_server(nursery, {"server": {"document-root": str(site), "static-deny": []}})
    assert (await status_of(raw, server, "/.env")) == (200, b"SECRET=1\n")


async def test_naming_well_known_denies_it(nursery: trio.Nursery, raw: RawClients, site: Path) -> None:
    config = {"server": {"document-root": str(site), "static-deny": [".*", ".well-known"]}}
    server = await start_server(nursery, config)
    assert (await status_of(raw, server, "/.well-known/security.txt"))[0] == 404


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (3, "array of strings"),
        ([".*", 3], "item 1 must be a string"),
        ([""], "item 0 must not be empty"),
        (["a/b"], "one path segment"),
    ],
)
def test_bad_static_deny_names_the_file_and_key(tmp_path: Path, value: object, fragment: str) -> None:
    path = tmp_path / "site.toml"
    path.write_text(f"[server]\nstatic-deny = {_toml(value)}\n")
    with pytest.raises(wstrio.ConfigError) as info:
        wstrio.load_config(path)
    assert str(info.value).startswith(f"{path}: server.static-deny: ")
    assert fragment in str(info.value)


def test_bad_static_deny_in_python_is_checked() -> None:
    with pytest.raises(wstrio.ConfigError) as info:
        wstrio.ServerConfig(static_deny=("ok", "a/b"))
    assert info.value.path == "server.static-deny"


def _toml(value: object) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)
