"""One request/response exchange, whatever the HTTP version.

Handlers (static, wstunnel, proxy, CGI, ...) talk to an :class:`Exchange`;
HTTP/1.1 (:mod:`wstrio._io.http.h1`) and HTTP/2 streams implement it.  The one
WebSocket-specific verb is :meth:`Exchange.upgrade`: it sends the 101 (or,
on HTTP/2, the 200 to an extended CONNECT) and hands back the raw byte
stream, so the same tunnel code runs over both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol, final

import attrs
import trio

from wstrio._config import ServerConfig
from wstrio._errors import ClientGone, WstrioError
from wstrio._sansio.http.request import Request

__all__ = [
    "ClientGone",
    "ConnectionContext",
    "Dispatch",
    "Exchange",
    "Upgraded",
    "answer_asterisk",
    "map_exceptions",
    "reason_phrase",
    "send_simple",
]

Headers = Sequence[tuple[bytes, bytes]]

_REASONS = {
    101: b"Switching Protocols",
    200: b"OK",
    204: b"No Content",
    301: b"Moved Permanently",
    302: b"Found",
    304: b"Not Modified",
    400: b"Bad Request",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    411: b"Length Required",
    413: b"Content Too Large",
    426: b"Upgrade Required",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}


def reason_phrase(status: int) -> bytes:
    """The standard reason phrase for ``status`` (or ``b""``)."""
    return _REASONS.get(status, b"")


@final
@attrs.define(eq=False)
class Upgraded:
    """The raw stream after a protocol switch.

    ``leftover`` holds bytes the client sent right after its handshake that
    were already read; they come before anything read from ``stream``.
    """

    stream: trio.abc.Stream
    leftover: bytes = b""


class Exchange(Protocol):
    """The response side of one request, for handlers.

    Error handling: every method raises only wstrio's own exceptions, the
    same for HTTP/1.1 and HTTP/2 (each implementation translates its
    engine's errors once, with :class:`map_exceptions`):

    * :class:`~wstrio._errors.ClientGone`: the client closed or broke the
      connection, or stopped reading for ``max-write-idle``;
    * :class:`~wstrio._errors.BadRequest` (from :meth:`receive_body`): the
      body is malformed (chunk syntax, more than its ``Content-Length``);
    * :class:`~wstrio._errors.RequestTimeout` (from :meth:`receive_body`):
      no body data for ``max-read-idle``;
    * :class:`~wstrio._errors.InvalidResponse` (from the sending methods):
      the response given breaks HTTP (a body on a 204, more than its
      ``Content-Length``, a header with CR or LF).
    """

    @property
    def request(self) -> Request:
        """The request being answered."""
        ...

    async def receive_body(self, max_bytes: int = 65536) -> bytes:
        """The next chunk of the request body; ``b""`` at its end."""
        ...

    async def start_response(self, status: int, headers: Headers) -> None:
        """Send the status line and headers (body follows with :meth:`send_data`)."""
        ...

    async def send_data(self, data: bytes) -> None:
        """Send a chunk of the response body."""
        ...

    async def end_response(self) -> None:
        """Finish the response body."""
        ...

    async def upgrade(self, headers: Headers, *, status: int = 101) -> Upgraded:
        """Switch protocols: send the 101 (HTTP/2: a 200) and return the raw stream."""
        ...

    @property
    def response_started(self) -> bool:
        """True once :meth:`start_response` or :meth:`upgrade` was called."""
        ...

    def set_log_note(self, note: str) -> None:
        """Add a note to this request's access-log line (e.g. the backend used)."""
        ...

    def set_log_fields(self, **fields: object) -> None:
        """Add keys to this request's JSON access-log record (``route``, ``backend``, a tunnel's end).

        See :mod:`wstrio._sansio.accesslog` for the keys.
        """
        ...


async def send_simple(
    exchange: Exchange,
    status: int,
    body: bytes = b"",
    headers: Headers = (),
    *,
    content_type: bytes = b"text/plain; charset=utf-8",
) -> None:
    """Send a whole small response (error pages and the like)."""
    all_headers = list(headers)
    if body or status >= 400:
        if not body:
            body = b"%d %s\n" % (status, reason_phrase(status))
        all_headers.append((b"content-type", content_type))
    all_headers.append((b"content-length", str(len(body)).encode()))
    await exchange.start_response(status, all_headers)
    await exchange.send_data(body)
    await exchange.end_response()


ASTERISK_ALLOW = b"OPTIONS, GET, HEAD, POST"
"""What ``OPTIONS *`` answers in ``Allow``: the methods wstrio itself serves
(a proxy route may pass on more; ``OPTIONS`` on its path asks its backend)."""


async def answer_asterisk(exchange: Exchange) -> None:
    """Answer ``OPTIONS *`` (RFC 9110 section 9.3.7), a question about the server.

    No route matches ``*`` and no backend is asked: wstrio answers 200 with
    ``Allow`` and an empty body, as lighttpd and nginx do.
    """
    await send_simple(exchange, 200, headers=[(b"allow", ASTERISK_ALLOW)])


ExceptionTypes = type[BaseException] | tuple[type[BaseException], ...]
"""What ``isinstance`` takes: one exception type, or a tuple of them (e.g. ``BROKEN``)."""


@final
class map_exceptions:  # lower case: used like a function, as contextlib.suppress
    """Re-raise foreign exceptions as wstrio's, at the edge of an API (httpcore's ``map_exceptions``).

    ``errors`` maps an exception type (trio's, h11's, ``OSError``) to a
    function that builds the wstrio exception from it; the first entry that
    matches wins, and the new exception is chained (``raise ... from exc``).
    Anything else passes unchanged.  An instance holds no state, so one made
    at import time serves every ``with`` (it is a class, not a generator
    context manager, because it runs on every send of every response)::

        _ERRORS = map_exceptions({h11.RemoteProtocolError: lambda exc: BadRequest(str(exc))})
        with _ERRORS:
            event = conn.next_event()
    """

    __slots__ = ("_errors",)

    def __init__(self, errors: Mapping[ExceptionTypes, Callable[[Any], WstrioError]]) -> None:
        self._errors = tuple(errors.items())

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if exc is None:
            return
        for source, make in self._errors:
            if isinstance(exc, source):
                raise make(exc) from exc


Dispatch = Callable[[Exchange], Awaitable[None]]
"""Answers one request from scratch (the server's router, for local redirects)."""


@final
@attrs.frozen
class ConnectionContext:
    """What the HTTP layer needs to serve one client connection."""

    config: ServerConfig
    """Server settings (timeouts, limits)."""
    dispatch: Dispatch
    """Called with each request's exchange."""
    scheme: str = "http"
    """``"http"`` or ``"https"``."""
    client: tuple[str, int] | None = None
    """The remote address, for the environment and logs (``None``: a unix socket)."""
    server: tuple[str, int] | None = None
    """The local address."""
