"""Static files from ``document-root`` over real sockets.

Requests are written byte for byte (:class:`tests.helpers.RawClient`) so
that no client library normalises paths such as ``/../`` or ``%2e%2e``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

import wstrio
from tests.h2client import open_h2_client
from tests.helpers import EXAMPLES, RawClients, start_server

INDEX = b"<!DOCTYPE html><title>root</title>\n"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A document root, with a secret next to it (outside) and links that point out."""
    root = tmp_path / "www"
    (root / "sub").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    (root / "index.html").write_bytes(INDEX)
    (root / "style.css").write_text("body { color: red }\n")
    (root / "data.json").write_text('{"a": 1}\n')
    (root / "pixel.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 16)
    (root / "blob.unknownext").write_bytes(b"\x00\x01")
    (root / "sub" / "index.html").write_text("sub index\n")
    (root / "sub" / "page.txt").write_text("a page\n")
    (root / "space name.txt").write_text("spaced\n")
    (tmp_path / "secret.txt").write_text("TOP SECRET\n")
    (root / "link-out.txt").symlink_to(tmp_path / "secret.txt")
    (root / "dir-out").symlink_to(tmp_path)
    (root / "link-in.txt").symlink_to(root / "sub" / "page.txt")
    return root


async def static_server(nursery: trio.Nursery, root: Path) -> wstrio.Server:
    return await start_server(nursery, {"server": {"document-root": str(root)}})


def get(path: str, *headers: str, method: str = "GET", close: bool = True) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", *headers]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_get_file_with_content_type_and_validators(nursery: trio.Nursery, raw: RawClients, site: Path) -> None:
    server = await static_server(nursery, site)
    client = await raw.tcp(server.port)
    response = await client.request(get("/style.css"))
    assert response.status == 200
    assert response.body == b"body { color: red }\n"
    assert response.header(b"content-type") == b"text/css; charset=utf-8"
    assert response.header(b"content-length") == b"20"
    assert response.header(b"last-modified") is not None
    assert response.header(b"etag") is not None


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/index.html", b"text/html; charset=utf-8"),
        ("/data.json", b"application/json; charset=utf-8"),
        ("/pixel.png", b"image/png"),
        ("/sub/page.txt", b"text/plain; charset=utf-8"),
        ("/blob.unknownext", b"application/octet-stream"),
    ],
)
async def test_content_types(
    nursery: trio.Nursery, raw: RawClients, site: Path, path: str, content_type: bytes
) -> None:
    server = await static_server(nursery, site)
    response = await (await raw.tcp(server.port)).request(get(path))
    assert response.status == 200
    assert response.header(b"content-type") == content_type
    assert response.body == (site / path.lstrip("/")).read_bytes()


async def test_head_has_headers_and_no_body(nursery: trio.Nursery, raw: RawClients, site: Path) -> None:
    server = await static_server(nursery, site)
    client = await raw.tcp(server.port)
    response = await client.request(get("/index.html", method="HEAD"), method="HEAD")
    assert response.status == 200
    assert response.header(b"content-length") == str(len(INDEX)).encode()
    assert response.header(b"content-type") == b"text/html; charset=utf-8"
    assert await client.read_to_eof() == b"", "HEAD sent a body"


async def test_index_files_and_slash_redirect(nursery: trio.Nursery, raw: RawClients, site: Path) -> None:
    server = await static_server(nursery, site)
    root = await (await raw.tcp(server.port)).request(get("/"))
    assert (root.status, root.body) == (200, INDEX)
    sub = await (await raw.tcp(server.port)).request(get("/sub/"))
    assert (sub.status, sub.body) == (200, b"sub index\n")
    redirect = await (await raw.tcp(server.port)).request(get("/sub?x=1"))
    assert redirect.status == 301
    assert redirect.header(b"location") == b"/sub/?x=1"
    no_index = await (await raw.tcp(server.port)).request(get("/empty-dir/"))
    assert no_index.status in (403, 404)


async def test_custom_index_files_in_order(nursery: trio.Nursery, raw: RawClients, site: Path) -> None:
    (site / "sub" / "default.htm").write_text("default first\n")
    config = {"server": {"document-root": str(site), "index-files": ["default.htm", "index.html"]}}
    server = await start_server(nursery, config)
    response = await (await raw.tcp(server.port)).request(get("/sub/"))
    assert (response.status, response.body) == (200, b"default first\n")
    assert response.header(b"content-type") == b"text/html; charset=utf-8"


async def test_percent_encoded_names(nursery: trio.Nursery, raw: RawClients, site: Path) -> None:
    server = await static_server(nursery, site)
    response = await (await raw.tcp(server.port)).request(get("/space%20name.txt"))
    assert (response.status, response.body) == (200, b"spaced\n")


async def test_conditional_requests_get_304(nursery: trio.Nursery, raw: RawClients, site: Path) -> None:
    server = await static_server(nursery, site)
    first = await (await raw.tcp(server.port)).request(get("/index.html"))
    last_modified = first.header(b"last-modified")
    etag = first.header(b"etag")
    assert last_modified is not None
    assert etag is not None

    by_date = await (await raw.tcp(server.port)).request(
        get("/index.html", f"If-Modified-Since: {last_modified.decode()}")
    )
    assert by_date.status == 304
    assert by_date.body == b""
    by_etag = await (await raw.tcp(server.port)).request(get("/index.html", f"If-None-Match: {etag.decode()}"))
    assert by_etag.status == 304
    assert by_etag.header(b"etag") == etag

    stale_etag = await (await raw.tcp(server.port)).request(get("/index.html", 'If-None-Match: "other"'))
    assert (stale_etag.status, stale_etag.body) == (200, INDEX)
    old_date = await (await raw.tcp(server.port)).request(
        get("/index.html", "If-Modified-Since: Mon, 01 Jan 1990 00:00:00 GMT")
    )
    assert (old_date.status, old_date.body) == (200, INDEX)


async def test_modified_file_is_served_again(nursery: trio.Nursery, raw: RawClients, site: Path) -> None:
    server = await static_server(nursery, site)
    first = await (await raw.tcp(server.port)).request(get("/style.css"))
    etag = first.header(b"etag")
    assert etag is not None
    (site / "style.css").write_text("body { color: blue; margin: 0 }\n")
    stat = (site / "style.css").stat()
    os.utime(site / "style.css", ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
    again = await (await raw.tcp(server.port)).request(get("/style.css", f"If-None-Match: {etag.decode()}"))
    assert (again.status, again.body) == (200, b"body { color: blue; margin: 0 }\n")


async def test_missing_file_is_404(nursery: trio.Nursery, raw: RawClients, site: Path) -> None:
    server = await static_server(nursery, site)
    response = await (await raw.tcp(server.port)).request(get("/nope.html"))
    assert response.status == 404
    below_file = await (await raw.tcp(server.port)).request(get("/index.html/more"))
    assert below_file.status == 404


async def test_no_document_root_is_404(nursery: trio.Nursery, raw: RawClients) -> None:
    server = await start_server(nursery, {})
    response = await (await raw.tcp(server.port)).request(get("/index.html"))
    assert response.status == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
async def test_other_methods_are_405(nursery: trio.Nursery, raw: RawClients, site: Path, method: str) -> None:
    server = await static_server(nursery, site)
    request = get("/index.html", "Content-Length: 5", method=method)[:-4] + b"\r\n\r\nhello"
    response = await (await raw.tcp(server.port)).request(request)
    assert response.status == 405
    assert response.header(b"allow") == b"GET, HEAD"


@pytest.mark.parametrize(
    "path",
    [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/sub/../../secret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt",
    ],
)
async def test_traversal_out_of_the_root_is_refused(
    nursery: trio.Nursery, raw: RawClients, site: Path, path: str
) -> None:
    server = await static_server(nursery, site)
    response = await (await raw.tcp(server.port)).request(get(path))
    assert response.status == 400  # the path climbs above "/"
    assert b"TOP SECRET" not in response.body


async def test_dot_segments_inside_the_root_are_resolved(nursery: trio.Nursery, raw: RawClients, site: Path) -> None:
    server = await static_server(nursery, site)
    response = await (await raw.tcp(server.port)).request(get("/sub/%2e%2e/sub/./page.txt"))
    assert (response.status, response.body) == (200, b"a page\n")


@pytest.mark.parametrize("path", ["/link-out.txt", "/dir-out/secret.txt", "/dir-out/missing.txt"])
async def test_symlinks_out_of_the_root_are_404(nursery: trio.Nursery, raw: RawClients, site: Path, path: str) -> None:
    server = await static_server(nursery, site)
    response = await (await raw.tcp(server.port)).request(get(path))
    assert response.status == 404  # as for a missing file: existence outside the root is not revealed
    assert b"TOP SECRET" not in response.body


async def test_symlink_inside_the_root_is_served(nursery: trio.Nursery, raw: RawClients, site: Path) -> None:
    server = await static_server(nursery, site)
    response = await (await raw.tcp(server.port)).request(get("/link-in.txt"))
    assert (response.status, response.body) == (200, b"a page\n")


async def test_large_file_is_served_whole(nursery: trio.Nursery, raw: RawClients, site: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)
    (site / "big.bin").write_bytes(data)
    server = await static_server(nursery, site)
    response = await (await raw.tcp(server.port)).request(get("/big.bin"))
    assert response.status == 200
    assert response.body == data


# --------------------------------------------------------------------------
# A plain request on a WebSocket endpoint: 426, not 404
# --------------------------------------------------------------------------


async def websocket_endpoint_server(nursery: trio.Nursery, root: Path | None) -> wstrio.Server:
    route = {"path": "/ws/", "handler": "wstunnel", "backend": [{"host": "127.0.0.1", "port": 9}]}
    server: dict[str, object] = {"document-root": str(root)} if root is not None else {}
    return await start_server(nursery, {"server": server, "route": [route]})


@pytest.mark.parametrize("with_root", [True, False])
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_plain_request_on_a_websocket_route_is_426(
    nursery: trio.Nursery, raw: RawClients, site: Path, with_root: bool, method: str
) -> None:
    server = await websocket_endpoint_server(nursery, site if with_root else None)
    client = await raw.tcp(server.port)
    response = await client.request(get("/ws/", "Content-Length: 0", method=method))
    assert response.status == 426
    assert response.header(b"upgrade") == b"websocket"
    assert b"upgrade" in [value.lower() for name, value in response.headers if name == b"connection"]
    assert b"/ws/ is a WebSocket endpoint (wstrio route path=/ws/)" in response.body
    # Elsewhere a missing file is still 404.
    client = await raw.tcp(server.port)
    assert (await client.request(get("/nothing-here"))).status == 404


async def test_a_file_under_a_websocket_path_is_still_served(
    nursery: trio.Nursery, raw: RawClients, site: Path
) -> None:
    (site / "ws").mkdir()
    (site / "ws" / "index.html").write_text("ws index\n")
    server = await websocket_endpoint_server(nursery, site)
    client = await raw.tcp(server.port)
    response = await client.request(get("/ws/"))
    assert (response.status, response.body) == (200, b"ws index\n")


async def test_426_on_http2_has_no_connection_headers(nursery: trio.Nursery, site: Path) -> None:
    server = await websocket_endpoint_server(nursery, site)
    async with open_h2_client("127.0.0.1", server.port) as client:
        status, stream, body = await client.get("/ws/", scheme="http")
    assert status == 426
    assert stream.header(b"connection") is None
    assert stream.header(b"upgrade") is None
    assert b"is a WebSocket endpoint" in body


@pytest.mark.parametrize(("example", "page"), [("count", "count.html"), ("tls", "count.html"), ("cgi", "echo.html")])
async def test_each_example_root_says_where_the_page_is(
    nursery: trio.Nursery, raw: RawClients, example: str, page: str
) -> None:
    # The quick start prints "listening on http://127.0.0.1:8080": / must not be a 404.
    server = await static_server(nursery, EXAMPLES / example / "www")
    client = await raw.tcp(server.port)
    response = await client.request(get("/"))
    assert response.status == 200
    assert f'href="{page}"'.encode() in response.body
    client = await raw.tcp(server.port)
    assert (await client.request(get(f"/{page}"))).status == 200
