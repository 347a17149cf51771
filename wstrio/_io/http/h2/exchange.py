"""One request on an HTTP/2 stream: the stream's task and its exchange.

Theory of operation
-------------------
The connection (:mod:`wstrio._io.http.h2.connection`) starts
:func:`run_stream` for every request stream.  It builds the
:class:`~wstrio._sansio.http.request.Request` and calls the dispatcher with
an :class:`H2Exchange` (static files, proxy, CGI, wstunnel: the same
handlers as HTTP/1.1); a malformed request gets its 4xx on its stream,
never a connection error.  After an extended CONNECT,
:meth:`H2Exchange.upgrade` answers 200 and hands the handler the stream as
a byte stream (:class:`~wstrio._io.http.h2.stream.H2Stream`).

**Streams end** as HTTP/2 wants: the response ends with END_STREAM; a
WebSocket stream ends with END_STREAM after the tunnel's CLOSE frame.  If the
client has not finished its side by then, RST_STREAM(NO_ERROR) tells it to
stop (RFC 9113 section 8.1).  A response that broke off midway is reset
(INTERNAL_ERROR) so that the client never takes it as complete; a handler
that returned without answering gets a 500, and a request cut by a server
shutdown is reset with CANCEL.  The client's END_STREAM is a clean
half-close: the reader of the stream gets EOF (lighttpd resets the stream
instead).  The client's RST_STREAM makes every operation on the stream raise
:class:`trio.BrokenResourceError` and cancels that stream's task, and only
that one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Mapping, Sequence
from typing import TYPE_CHECKING, final

import trio
from h2.errors import ErrorCodes

from wstrio._errors import ClientGone, HttpError, RequestTimeout
from wstrio._io.accesslog import log_access
from wstrio._io.http.exchange import Upgraded, answer_asterisk, map_exceptions, reason_phrase
from wstrio._io.http.h1 import SERVER_HEADER
from wstrio._io.http.h2.stream import H2Stream, H2StreamState
from wstrio._io.streams.pipes import BROKEN
from wstrio._sansio.http.forwarded import behind_trusted_proxies
from wstrio._sansio.http.request import H2_CONNECTION_HEADERS, Request
from wstrio._sansio.http.static import http_date

if TYPE_CHECKING:
    from wstrio._io.http.h2.connection import H2Connection

__all__ = ["FINISH_TIMEOUT", "H2Exchange", "run_stream", "send_error"]

log = logging.getLogger("wstrio.connection")

FINISH_TIMEOUT = 5.0
"""Bound on ending one stream (END_STREAM or RST_STREAM reaching the socket)."""
# Response headers HTTP/2 forbids, plus the ones that make no sense in the
# 200 to an extended CONNECT (RFC 8441 section 5, RFC 9110 9.3.6).
_UPGRADE_DROP = H2_CONNECTION_HEADERS | {b"sec-websocket-accept", b"content-length", b"te"}
# The exchange edge: trio's errors become wstrio's (see Exchange).
_READ_ERRORS = map_exceptions(
    {
        trio.TooSlowError: lambda exc: RequestTimeout("the client sent no body data for max-read-idle"),
        BROKEN: lambda exc: ClientGone(),
    }
)
_WRITE_ERRORS = map_exceptions({(*BROKEN, trio.TooSlowError): lambda exc: ClientGone()})


def _pseudo(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes:
    for key, value in headers:
        if key == name:
            return value
    return b"-"


def _log_access(
    conn: H2Connection,
    method: bytes,
    target: bytes,
    status: int | None,
    sent: int,
    started: float,
    note: str,
    fields: Mapping[str, object] | None = None,
    client: tuple[str, int] | None = None,
) -> None:
    log_access(
        json_format=conn.config.access_log_format == "json",
        client=client if client is not None else conn.client,
        method=method.decode("latin-1"),
        target=target.decode("latin-1"),
        protocol="HTTP/2",
        status=status,
        sent=sent,
        duration=trio.current_time() - started,
        note=note,
        fields=fields or {},
    )


def _response_headers(
    status: int, headers: Sequence[tuple[bytes, bytes]], drop: frozenset[bytes]
) -> list[tuple[bytes, bytes]]:
    out = [(b":status", str(status).encode("ascii")), SERVER_HEADER, (b"date", http_date(time.time()).encode())]
    for name, value in headers:
        name = name.lower()
        if name not in drop:
            out.append((name, value))
    return out


async def send_error(st: H2StreamState, status: int, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """Answer ``status`` with a short text body and end the stream."""
    body = b"%d %s\n" % (status, reason_phrase(status))
    hdrs = [
        *headers,
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
    ]
    await st.send_headers(_response_headers(status, hdrs, H2_CONNECTION_HEADERS))
    await st.send_data(body)
    st.end_stream_nowait()
    await st.conn.wait_writer()


@final
class H2Exchange:
    """One request on an HTTP/2 stream (see :class:`~wstrio._io.http.exchange.Exchange`)."""

    def __init__(self, st: H2StreamState, request: Request) -> None:
        self._conn = st.conn
        self._st = st
        self._request = request
        self.status: int | None = None
        self.bytes_sent = 0
        self.upgraded = False
        self.note = ""
        self.log_fields: dict[str, object] = {}
        self._swallow_body = False

    @property
    def request(self) -> Request:
        return self._request

    @property
    def response_started(self) -> bool:
        return self.status is not None

    @property
    def stream_id(self) -> int:
        """The HTTP/2 stream id."""
        return self._st.stream_id

    def set_log_note(self, note: str) -> None:
        self.note = note

    def set_log_fields(self, **fields: object) -> None:
        self.log_fields.update(fields)

    async def receive_body(self, max_bytes: int = 65536) -> bytes:
        """The next chunk of the request body; ``b""`` at its end.

        An extended CONNECT has no body, like the HTTP/1.1 ``GET`` it stands
        for: its DATA is the WebSocket, read through :meth:`upgrade`'s
        stream.  So this returns ``b""`` for it at once (a handler that
        drains the body before upgrading must not wait for WebSocket frames).

        Raises:
            ClientGone: the stream was reset or the connection is gone.
            RequestTimeout: nothing arrived for ``max-read-idle`` seconds.
        """
        if self._request.websocket:
            await trio.lowlevel.checkpoint()
            return b""
        with _READ_ERRORS, trio.fail_after(self._conn.config.max_read_idle or math.inf):
            return await self._st.receive(max_bytes)

    async def _send(self, operation: Awaitable[None]) -> None:
        with _WRITE_ERRORS, trio.fail_after(self._conn.config.max_write_idle or math.inf):
            await operation

    async def start_response(self, status: int, headers: Sequence[tuple[bytes, bytes]]) -> None:
        """Send the response headers.

        A 2xx answer to an extended CONNECT that is not an upgrade becomes a
        405, as in lighttpd: the client asked for a WebSocket, and a page is
        not one.
        """
        if self._request.websocket and 200 <= status < 300:
            self.note = f"{status} from the handler is no WebSocket answer; 405"
            self._swallow_body = True
            self.status = 405
            await self._send(send_error(self._st, 405))
            return
        self.status = status
        await self._send(self._st.send_headers(_response_headers(status, headers, H2_CONNECTION_HEADERS)))

    async def send_data(self, data: bytes) -> None:
        if self._request.method == "HEAD" or self._swallow_body or not data:
            return
        self.bytes_sent += len(data)
        await self._send(self._st.send_data(data))

    async def end_response(self) -> None:
        self._st.end_stream_nowait()
        await self._send(self._conn.wait_writer())

    async def upgrade(self, headers: Sequence[tuple[bytes, bytes]], *, status: int = 101) -> Upgraded:
        """Accept the extended CONNECT: ``:status 200``, then the stream carries WebSocket frames.

        ``status`` is ignored: HTTP/2 has no 101, the answer is always 200
        (RFC 8441 section 5).  Headers HTTP/2 forbids or that belong to the
        HTTP/1.1 handshake (``upgrade``, ``connection``,
        ``sec-websocket-accept``, ``content-length``, ...) are dropped, so a
        backend's 101 headers can be passed as they are.

        Raises:
            ClientGone: the stream was reset or the connection is gone.
            RuntimeError: the request is not an extended CONNECT.
        """
        del status
        if not self._request.websocket:
            msg = "upgrade() on HTTP/2 needs an extended CONNECT (:protocol websocket) request"
            raise RuntimeError(msg)
        self.status = 200
        await self._send(self._st.send_headers(_response_headers(200, headers, _UPGRADE_DROP)))
        self.upgraded = True
        return Upgraded(H2Stream(self._st), b"")


async def run_stream(conn: H2Connection, st: H2StreamState, headers: tuple[tuple[bytes, bytes], ...]) -> None:
    """The task of one request stream: parse, dispatch, end the stream, log.

    Cancellation: the stream's own scope (``st.scope``) is cancelled by the
    client's RST_STREAM and by the connection's end; the stream is then
    ended (bounded, shielded) as the module docstring says.

    Error handling: a handler's exception is logged and the stream reset
    (or answered 500); a gone client ends the task quietly.
    """
    started = trio.current_time()
    exchange: H2Exchange | None = None
    wire_method = _pseudo(headers, b":method")
    finished = False
    try:
        with st.scope:
            try:
                request = Request.from_h2(
                    headers,
                    scheme=conn.scheme,
                    client=conn.client,
                    server=conn.server,
                    max_header_list_size=conn.config.max_request_field_size,
                    max_headers=conn.config.max_request_headers,
                )
                request = behind_trusted_proxies(request, conn.config.forwarded_trust)
            except HttpError as exc:
                log.info("%s: stream %d: %s", conn.peer, st.stream_id, exc)
                await send_error(st, exc.status, exc.headers)
                target = _pseudo(headers, b":path")
                _log_access(conn, wire_method, target, exc.status, 0, started, str(exc))
                return
            conn.served += 1
            exchange = H2Exchange(st, request)
            if request.path == "*":
                await answer_asterisk(exchange)
            else:
                await conn.dispatch(exchange)
        finished = True
    except (ClientGone, *BROKEN):
        finished = True
    except Exception:
        finished = True
        log.exception("%s: HTTP/2 stream %d failed", conn.peer, st.stream_id)
    finally:
        with trio.move_on_after(FINISH_TIMEOUT, shield=True):
            await _finish_stream(conn, st, exchange, cancelled=not finished)
        conn.forget(st)
        if exchange is not None:
            _log_access(
                conn,
                wire_method,
                exchange.request.target,
                exchange.status,
                exchange.bytes_sent,
                started,
                exchange.note,
                exchange.log_fields,
                exchange.request.client,
            )


async def _finish_stream(
    conn: H2Connection, st: H2StreamState, exchange: H2Exchange | None, *, cancelled: bool
) -> None:
    st.discard_unread()
    if st.reset or conn.broken:
        return
    try:
        if cancelled and (exchange is None or not exchange.upgraded) and not st.local_ended:
            # Server shutdown in the middle of a request: we cannot say
            # whether it was processed; CANCEL says so.
            conn.reset_stream(st.stream_id, ErrorCodes.CANCEL)
            st.reset = True
        elif exchange is not None and exchange.status is None:
            # The handler returned without answering (as HTTP/1.1 does).
            await send_error(st, 500)
        elif not st.local_ended:
            if exchange is not None and exchange.upgraded:
                # The tunnel is over (its CLOSE frame went out): a clean end.
                st.end_stream_nowait()
            else:
                # A response that broke off: the client must not take it as whole.
                conn.reset_stream(st.stream_id, ErrorCodes.INTERNAL_ERROR)
                st.reset = True
        if not st.peer_ended and not st.reset:
            # Our answer is complete; the client may stop sending (RFC 9113 8.1).
            conn.reset_stream(st.stream_id, ErrorCodes.NO_ERROR)
            st.reset = True
        await conn.wait_writer()
    except BROKEN:
        pass
