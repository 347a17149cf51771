"""Local redirects (RFC 3875 6.2.2): a CGI answer that names another path on this server.

A program that answers with only ``Location: /some/path`` asks the server
to answer that path instead, as a ``GET`` without a body.  The program's
channel is closed first; then :func:`redirected_exchange` makes the new
request and the server dispatches it again (through the server context),
at most :data:`MAX_LOCAL_REDIRECTS` times for one request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import final

import attrs
import trio

from wstrio._errors import HttpError
from wstrio._io.http.exchange import Exchange, Upgraded
from wstrio._sansio.http.request import Request, normalize_target

__all__ = ["MAX_LOCAL_REDIRECTS", "RedirectedExchange", "redirected_exchange"]

MAX_LOCAL_REDIRECTS = 5
"""Local redirects followed for one request before answering 500 (a loop)."""


@final
class RedirectedExchange:
    """The exchange of a local redirect: the same response, a new request.

    The new request has no body (RFC 3875 6.2.2 redirects are GETs), and
    :attr:`redirects` counts how deep the chain is.
    """

    def __init__(self, inner: Exchange, request: Request, redirects: int) -> None:
        self._inner = inner
        self._request = request
        self.redirects = redirects

    @property
    def request(self) -> Request:
        return self._request

    async def receive_body(self, max_bytes: int = 65536) -> bytes:
        await trio.lowlevel.checkpoint()
        return b""

    async def start_response(self, status: int, headers: Sequence[tuple[bytes, bytes]]) -> None:
        await self._inner.start_response(status, headers)

    async def send_data(self, data: bytes) -> None:
        await self._inner.send_data(data)

    async def end_response(self) -> None:
        await self._inner.end_response()

    async def upgrade(self, headers: Sequence[tuple[bytes, bytes]], *, status: int = 101) -> Upgraded:
        return await self._inner.upgrade(headers, status=status)

    @property
    def response_started(self) -> bool:
        return self._inner.response_started

    def set_log_note(self, note: str) -> None:
        self._inner.set_log_note(note)

    def set_log_fields(self, **fields: object) -> None:
        self._inner.set_log_fields(**fields)


def _redirected_request(request: Request, location: str) -> Request:
    target = location.encode("latin-1")
    path, query = normalize_target(target)
    dropped = (b"content-length", b"content-type", b"transfer-encoding")
    return attrs.evolve(
        request,
        method="HEAD" if request.method == "HEAD" else "GET",
        target=target,
        path=path,
        query=query,
        headers=tuple((k, v) for k, v in request.headers if k not in dropped),
    )


def redirected_exchange(exchange: Exchange, location: str) -> RedirectedExchange:
    """The exchange that answers ``exchange`` with the request for ``location``.

    Raises:
        HttpError: 500 after :data:`MAX_LOCAL_REDIRECTS` redirects (a loop),
            502 for a location that is no usable target.
    """
    redirects = (exchange.redirects if isinstance(exchange, RedirectedExchange) else 0) + 1
    if redirects > MAX_LOCAL_REDIRECTS:
        msg = f"more than {MAX_LOCAL_REDIRECTS} local redirects (last to {location!r}); a loop?"
        raise HttpError(msg, 500)
    try:
        request = _redirected_request(exchange.request, location)
    except HttpError as exc:
        msg = f"invalid local redirect to {location!r}: {exc}"
        raise HttpError(msg, 502) from exc
    return RedirectedExchange(exchange, request, redirects)
