"""Static files from ``document-root``.

The request path is already decoded and normalised (no ``..`` can remain:
see :func:`wstrio._sansio.http.request.normalize_target`).  What is left to
guard against is symbolic links and names the operator keeps private: the
real path of the file must lie inside the real path of the document root, and
no segment of the URL path or of the real path under the root may match
``static-deny`` (default ``.*``, with ``/.well-known/`` exempt), or the answer
is 404, the same as for a missing file, so nothing beyond the root and no
denied name is revealed by the status.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from wstrio._io.http.exchange import Exchange, send_simple
from wstrio._sansio.devconsole import HEADERS, PAGE, is_local, wants_console
from wstrio._sansio.http.static import content_type, etag_for, http_date, inside_root, is_denied, is_not_modified

if TYPE_CHECKING:
    from wstrio._io.context import RouteMatch, ServerContext

__all__ = ["handle"]

_CHUNK = 65536


def _resolve(root: str, path: str, deny: tuple[str, ...]) -> str | None:
    """The real path of ``path``, or ``None`` when it lies outside ``root`` or under a denied name there."""
    real = os.path.realpath(path)
    if not inside_root(real, root):
        return None
    if deny and real != root and is_denied("/" + os.path.relpath(real, root).replace(os.sep, "/"), deny):
        return None
    return real


def _locate(
    root: str, url_path: str, index_files: tuple[str, ...], deny: tuple[str, ...]
) -> tuple[int, str | None, os.stat_result | None]:
    """(status, real file path, stat) for ``url_path``; status 0 means "serve it".

    Whatever resolves outside the root, or matches ``static-deny`` in the URL
    or in its real path under the root, is 404 before the file is looked at,
    so the answer does not depend on whether it exists.
    """
    if is_denied(url_path, deny):
        return 404, None, None
    real = _resolve(root, os.path.join(root, url_path.lstrip("/")), deny)
    if real is None:
        return 404, None, None
    try:
        st = os.stat(real)
    except PermissionError:
        return 403, None, None
    except OSError:
        return 404, None, None
    if stat.S_ISDIR(st.st_mode):
        if not url_path.endswith("/"):
            return 301, None, None
        for name in index_files:
            index = _resolve(root, os.path.join(real, name), deny)
            if index is None:
                continue
            try:
                index_st = os.stat(index)
            except OSError:
                continue
            if stat.S_ISREG(index_st.st_mode):
                real, st = index, index_st
                break
        else:
            return 404, None, None
    if not stat.S_ISREG(st.st_mode):
        return 403, None, None
    return 0, real, st


async def _not_here(
    exchange: Exchange, ctx: ServerContext, status: int, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """404 or 405, unless the path is a WebSocket endpoint: then 426 Upgrade Required, with a line of help.

    A wstunnel route takes only handshakes (as lighttpd's), so a browser
    pointed at ``/ws/`` would get a bare 404; 426 (RFC 9110 15.5.22) says
    what the URL is for.  A file in the document root still wins: this is
    only instead of an error.
    """
    request = exchange.request
    route = None if request.websocket else ctx.router.websocket_route(request)
    if route is None:
        await send_simple(exchange, status, headers=headers)
        return
    if ctx.config.devconsole and is_local(request.client[0] if request.client else None):
        if request.method in ("GET", "HEAD") and wants_console(request.header(b"accept")):
            exchange.set_log_note("dev console")
            body = PAGE if request.method == "GET" else b""
            headers = [*HEADERS, (b"content-length", str(len(PAGE)).encode())]
            await exchange.start_response(200, [(b"content-type", b"text/html; charset=utf-8"), *headers])
            await exchange.send_data(body)
            await exchange.end_response()
            return
    text = (
        f"426 Upgrade Required: {request.path} is a WebSocket endpoint (wstrio route {route.describe()}).\n"
        "Connect with a WebSocket client, e.g. new WebSocket('ws://host/path') in a browser's JavaScript.\n"
    )
    upgrade = [] if request.h2 else [(b"upgrade", b"websocket"), (b"connection", b"Upgrade")]
    exchange.set_log_note("not a WebSocket handshake")
    await send_simple(exchange, 426, text.encode(), upgrade)


async def handle(exchange: Exchange, match: RouteMatch | None, ctx: ServerContext) -> None:
    """Answer ``exchange`` from the document root (404 when there is none).

    ``match`` is ``None``: the static files answer what no route takes (and
    what a ``cgi`` route declines).
    """
    request = exchange.request
    config, real_root = ctx.config, ctx.real_root
    if real_root is None:
        await _not_here(exchange, ctx, 404)
        return
    if request.method not in ("GET", "HEAD"):
        await _not_here(exchange, ctx, 405, [(b"allow", b"GET, HEAD")])
        return
    status, path, st = _locate(real_root, request.path, config.index_files, config.static_deny)
    if status == 301:
        location = request.path + "/" + (f"?{request.query}" if request.query else "")
        await send_simple(exchange, 301, headers=[(b"location", location.encode("utf-8"))])
        return
    if status == 404:
        await _not_here(exchange, ctx, 404)
        return
    if status:
        await send_simple(exchange, status)
        return
    assert path is not None
    assert st is not None
    etag = etag_for(st.st_mtime_ns, st.st_size)
    validators = [(b"last-modified", http_date(st.st_mtime).encode()), (b"etag", etag.encode())]
    if is_not_modified(
        etag=etag,
        mtime=st.st_mtime,
        if_none_match=request.header(b"if-none-match"),
        if_modified_since=request.header(b"if-modified-since"),
    ):
        await exchange.start_response(304, validators)
        await exchange.end_response()
        return
    headers = [
        (b"content-type", content_type(Path(path).name, config.mimetype_assign).encode()),
        (b"content-length", str(st.st_size).encode()),
        *validators,
    ]
    if request.method == "HEAD":
        await exchange.start_response(200, headers)
        await exchange.end_response()
        return
    try:
        file = await trio.open_file(path, "rb")
    except OSError:
        await send_simple(exchange, 403)
        return
    async with file:
        await exchange.start_response(200, headers)
        remaining = st.st_size
        while remaining > 0:
            chunk = await file.read(min(_CHUNK, remaining))
            if not chunk:
                break  # the file shrank; the connection will be closed by h11
            remaining -= len(chunk)
            await exchange.send_data(chunk)
    await exchange.end_response()
