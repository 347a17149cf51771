"""HTTP/1.1 connections on h11.

One task per connection runs :func:`serve_h1`: it reads requests one after
the other (keep-alive), hands each to the dispatcher as an
:class:`H1Exchange`, and stops when the connection must close or a handler
took the raw stream over (a WebSocket upgrade).

Timeouts: the first request head must start within ``max-read-idle``
seconds, later ones (keep-alive) within ``max-keep-alive-idle``; each read
of a head gets ``max-read-idle``, and the whole head, from its first byte,
``max-request-head-time`` (slowloris: one byte at a time), else 408.  A stalled
write to the client aborts the connection after ``max-write-idle``.  Request
heads larger than ``max-request-field-size`` or with more than
``max-request-headers`` fields get 431; malformed requests get 400, as do
requests with ambiguous body framing (``Transfer-Encoding`` with
``Content-Length``, or on HTTP/1.0: request smuggling), and the connection
closes.  A body that breaks off before a switch of protocols gets 400 (408
if it stalls), not the 101.  After an error response the close lingers: the
write side is shut down and input is read and dropped for up to
:data:`LINGER_TIME` seconds, so the kernel does not reset the connection
under the response.

Absolute-form targets (``GET http://host/path``) are served as their path,
with their authority as ``Host`` (RFC 9112 section 3.2.2), and ``OPTIONS *``
is answered by wstrio itself (200 with ``Allow``).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Sequence
from typing import final

import h11
import trio

from wstrio._config import ServerConfig
from wstrio._errors import BadRequest, ClientGone, HttpError, InvalidResponse, RequestTimeout
from wstrio._io.accesslog import log_access
from wstrio._io.http.exchange import ConnectionContext, Upgraded, answer_asterisk, map_exceptions, reason_phrase
from wstrio._io.streams.pipes import BROKEN
from wstrio._sansio.http.forwarded import behind_trusted_proxies
from wstrio._sansio.http.request import Request, check_h1_framing
from wstrio._sansio.http.static import http_date
from wstrio._version import __version__

__all__ = ["H1Exchange", "serve_h1"]

log = logging.getLogger("wstrio.connection")

SERVER_HEADER = (b"server", f"wstrio/{__version__}".encode())
_DRAIN_LIMIT = 1 << 20
# Lingering close (see _linger): how long and how much wstrio reads and drops
# after an error response before it closes.  nginx: lingering_time 30 s.
LINGER_TIME = 2.0
LINGER_BYTES = 1 << 20

# The exchange edge: what h11 raises becomes wstrio's own (see Exchange).
# Broken streams become ClientGone where the stream is used, below.
_READ_ERRORS = map_exceptions(
    {h11.RemoteProtocolError: lambda exc: BadRequest(f"invalid request: {exc}", exc.error_status_hint)}
)
_WRITE_ERRORS = map_exceptions(
    {
        h11.LocalProtocolError: lambda exc: InvalidResponse(f"invalid response: {exc}"),
        ValueError: lambda exc: InvalidResponse(str(exc)),
    }
)


class _Date:
    """The Date header value, computed at most once a second."""

    second = -1
    value = b""

    @classmethod
    def get(cls) -> bytes:
        now = int(time.time())
        if now != cls.second:
            cls.second = now
            cls.value = http_date(now).encode()
        return cls.value


@final
class H1Exchange:
    """One HTTP/1.1 request being answered (see :class:`Exchange`)."""

    def __init__(self, conn: _H1Connection, request: Request, close_after: bool) -> None:
        self._conn = conn
        self._request = request
        self._close_after = close_after
        self.status: int | None = None
        self.bytes_sent = 0
        self.upgraded = False
        self.note = ""
        self.log_fields: dict[str, object] = {}

    @property
    def request(self) -> Request:
        return self._request

    @property
    def response_started(self) -> bool:
        return self.status is not None

    def set_log_note(self, note: str) -> None:
        self.note = note

    def set_log_fields(self, **fields: object) -> None:
        self.log_fields.update(fields)

    async def receive_body(self, max_bytes: int = 65536) -> bytes:
        h = self._conn.h11
        while True:
            if h.their_state is not h11.SEND_BODY:
                return b""
            event = await self._conn.next_event(self._conn.config.max_read_idle or math.inf)
            if isinstance(event, h11.Data):
                return bytes(event.data)
            if isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)) or event is h11.PAUSED:
                return b""

    async def start_response(self, status: int, headers: Sequence[tuple[bytes, bytes]]) -> None:
        self.status = status
        hdrs = [SERVER_HEADER, (b"date", _Date.get()), *headers]
        if self._close_after:
            hdrs.append((b"connection", b"close"))
        await self._conn.send(h11.Response(status_code=status, headers=hdrs, reason=reason_phrase(status)))

    async def send_data(self, data: bytes) -> None:
        if self._request.method == "HEAD" or not data:
            return
        self.bytes_sent += len(data)
        await self._conn.send(h11.Data(data=data))

    async def end_response(self) -> None:
        await self._conn.send(h11.EndOfMessage())

    async def upgrade(self, headers: Sequence[tuple[bytes, bytes]], *, status: int = 101) -> Upgraded:
        h = self._conn.h11
        # h11 switches only once it has seen the end of the request body; a
        # GET has none, so this reads nothing from the network.  A body that
        # breaks off or is malformed ends the connection here, answered 400
        # (408 if it stalls): no handler can do anything else with it.
        try:
            while h.their_state is h11.SEND_BODY:
                await self.receive_body()
        except (BadRequest, RequestTimeout) as exc:
            self.status = exc.status
            await _send_error(self._conn, exc.status)
            msg = f"request body before the switch: {exc.__cause__ or exc}"
            log.info("%s: %s", _peer_text(self._request.client), msg)
            raise ClientGone(msg) from exc
        # The connection stops being HTTP after this response, so h11's
        # state would be thrown away anyway: the 101 is formatted here
        # (h11's send path was a sixth of the cost of a WebSocket handshake).
        with _WRITE_ERRORS:
            head = format_informational(status, [SERVER_HEADER, *headers])
        self.status = status
        await self._conn.send_bytes(head)
        self.upgraded = True
        leftover, _closed = h.trailing_data
        # The connection is not HTTP any more: drop h11's state and buffers,
        # which would otherwise live as long as the tunnel.
        self._conn.h11 = _SWITCHED
        return Upgraded(self._conn.stream, bytes(leftover))


_BAD_FIELD = re.compile(rb"[\x00\r\n]")
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def format_informational(status: int, headers: Sequence[tuple[bytes, bytes]]) -> bytes:
    """A 1xx response head, as h11 would write it.

    Raises:
        ValueError: a header name is not a token, or a value contains CR,
            LF or NUL (headers may come from a backend's 101).
    """
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason_phrase(status))]
    for name, value in headers:
        if not _TOKEN.fullmatch(name) or _BAD_FIELD.search(value):
            msg = f"invalid response header {name!r}: {value!r}"
            raise ValueError(msg)
        lines.append(b"%s: %s\r\n" % (name, value.strip(b" \t")))
    lines.append(b"\r\n")
    return b"".join(lines)


# Replaces a connection's h11 state once it switched protocols.
_SWITCHED = h11.Connection(h11.SERVER)


@final
class _H1Connection:
    def __init__(self, stream: trio.abc.Stream, config: ServerConfig) -> None:
        self.stream = stream
        self.config = config
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=config.max_request_field_size)

    async def next_event(self, idle: float, head_time: float = math.inf) -> h11.Event | type[h11.PAUSED]:
        """The next event from the client.

        Args:
            idle: seconds each read may wait.
            head_time: when reading a request head, seconds from its first
                byte (here or already buffered) to its end.

        Raises:
            BadRequest: the request (head or body) breaks HTTP, with h11's
                status hint (400, 431 for a head over the size limit).
            RequestTimeout: nothing arrived for ``idle`` seconds, or the
                head did not end within ``head_time``.
            ClientGone: the connection broke.
        """
        head_deadline = math.inf
        while True:
            with _READ_ERRORS:
                event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]
            if head_deadline == math.inf and self.h11.trailing_data[0]:
                head_deadline = trio.current_time() + head_time
            with trio.move_on_after(idle) as scope:
                scope.deadline = min(scope.deadline, head_deadline)
                try:
                    data = await self.stream.receive_some(65536)
                except BROKEN as exc:
                    raise ClientGone from exc
            if scope.cancelled_caught:
                if trio.current_time() >= head_deadline:
                    msg = f"the request head took more than max-request-head-time ({head_time:g} s)"
                else:
                    msg = f"the client sent nothing for {idle:g} s"
                raise RequestTimeout(msg)
            self.h11.receive_data(bytes(data))

    async def send_bytes(self, data: bytes) -> None:
        # move_on_after, not fail_after: the latter is a generator context
        # manager, and this runs for every response.  0 means no limit.
        with trio.move_on_after(self.config.max_write_idle or math.inf) as scope:
            try:
                await self.stream.send_all(data)
            except BROKEN as exc:
                raise ClientGone from exc
        if scope.cancelled_caught:
            msg = f"the client read nothing for max-write-idle ({self.config.max_write_idle:g} s)"
            raise ClientGone(msg)

    async def send(self, event: h11.Event) -> None:
        with _WRITE_ERRORS:
            data = self.h11.send(event)
        if data:
            await self.send_bytes(data)


async def _send_error(conn: _H1Connection, status: int, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    if conn.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    body = b"%d %s\n" % (status, reason_phrase(status))
    hdrs = [
        SERVER_HEADER,
        (b"date", _Date.get()),
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *headers,
    ]
    try:
        await conn.send(h11.Response(status_code=status, headers=hdrs, reason=reason_phrase(status)))
        await conn.send(h11.Data(data=body))
        await conn.send(h11.EndOfMessage())
    except (ClientGone, InvalidResponse):
        pass


async def _linger(stream: trio.abc.Stream) -> None:
    """Close politely after an error response: half-close, then drop input.

    Closing a socket whose receive buffer holds unread bytes makes the kernel
    send a TCP reset, and a reset can destroy the response the client has not
    read yet (RFC 9112 section 9.6; Apache and nginx call the cure lingering
    close).  So wstrio shuts down its write side (the client sees the end of
    the response, then EOF; a TLS stream cannot half-close and just drains),
    then reads and discards what the client still sends until it closes, for
    at most :data:`LINGER_TIME` seconds and :data:`LINGER_BYTES` bytes, so a
    lingering connection cannot be held open longer than that.
    """
    if isinstance(stream, trio.abc.HalfCloseableStream):
        try:
            await stream.send_eof()
        except (*BROKEN, OSError):
            return
    drained = 0
    with trio.move_on_after(LINGER_TIME):
        try:
            while drained < LINGER_BYTES:
                data = await stream.receive_some(65536)
                if not data:
                    return
                drained += len(data)
        except (*BROKEN, OSError):
            return


def _peer_text(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "unix"


def _peer(address: object) -> tuple[str, int] | None:
    if isinstance(address, tuple) and len(address) >= 2:
        return str(address[0]), int(address[1])
    return None


async def serve_h1(stream: trio.abc.Stream, connection: ConnectionContext, *, initial: bytes = b"") -> None:
    """Serve HTTP/1.1 requests on ``stream`` until the connection ends.

    Args:
        stream: the client connection (closed by the caller).
        connection: the settings, the dispatcher (called with each
            request's :class:`H1Exchange`), the scheme and the addresses.
        initial: bytes already read from the stream (protocol sniffing).

    Cancellation: returns or raises :class:`trio.Cancelled` at the next
    checkpoint; the caller closes the stream.

    Error handling: a malformed request gets 400 (431 for a head over the
    limits), a stalled one 408, and the connection closes; a handler's
    unfinished response closes it too (500 if nothing was sent).  Such a
    close lingers (:func:`_linger`) so the error response is not lost to a
    TCP reset.  ``OPTIONS *`` is answered here, not dispatched.
    """
    conn = _H1Connection(stream, connection.config)
    if initial:
        conn.h11.receive_data(initial)
    if await _serve_requests(conn, connection):
        await _linger(stream)


async def _serve_requests(conn: _H1Connection, connection: ConnectionContext) -> bool:
    """The request loop of :func:`serve_h1`; True when the close must linger."""
    config, dispatch = connection.config, connection.dispatch
    scheme, client, server = connection.scheme, connection.client, connection.server
    served = 0
    peer = _peer_text(client)
    while True:
        # 0 = no limit for max-read-idle (as everywhere); a max-keep-alive-idle
        # of 0 closes an idle connection at once (no keep-alive).
        timeout = (config.max_read_idle or math.inf) if served == 0 else config.max_keep_alive_idle
        try:
            event = await conn.next_event(timeout, config.max_request_head_time or math.inf)
        except RequestTimeout as exc:
            if conn.h11.their_state is h11.IDLE and not conn.h11.trailing_data[0] and served:
                return False  # an idle keep-alive connection: just close it
            partial = bool(conn.h11.trailing_data[0])
            await _send_error(conn, 408)
            if partial:
                log.info("%s: %s", peer, exc)
            return True
        except BadRequest as exc:
            await _send_error(conn, exc.status)
            log.info("%s: bad request: %s", peer, exc.__cause__ or exc)
            return True
        except ClientGone:
            return False
        if isinstance(event, h11.ConnectionClosed) or not isinstance(event, h11.Request):
            return False
        served += 1
        started = trio.current_time()
        if len(event.headers) > config.max_request_headers:
            await _send_error(conn, 431)
            log.info("%s: %d header fields, more than max-request-headers", peer, len(event.headers))
            return True
        # h11's max_incomplete_event_size only bounds a head that is still
        # incomplete; one that arrived in a single read must be measured.
        head_size = (
            len(event.method)
            + len(event.target)
            + 11
            + sum(len(name) + len(value) + 4 for name, value in event.headers.raw_items())
        )
        if head_size > config.max_request_field_size:
            await _send_error(conn, 431)
            log.info("%s: request head of %d bytes, more than max-request-field-size", peer, head_size)
            return True
        try:
            check_h1_framing(event.headers.raw_items(), event.http_version)
            request = Request.from_h1(
                event.method,
                event.target,
                event.headers.raw_items(),
                event.http_version,
                scheme=scheme,
                client=client,
                server=server,
            )
            request = behind_trusted_proxies(request, config.forwarded_trust)
        except HttpError as exc:
            await _send_error(conn, exc.status, exc.headers)
            log.info("%s: %s", peer, exc)
            return True
        close_after = served >= config.max_keep_alive_requests
        exchange = H1Exchange(conn, request, close_after)
        try:
            if request.path == "*":
                await answer_asterisk(exchange)
            else:
                await dispatch(exchange)
        except ClientGone:
            return False
        finally:
            _log_access(request, exchange, trio.current_time() - started)
        if exchange.upgraded:
            return False
        if conn.h11.our_state is not h11.DONE:
            # The handler did not finish its response: the connection is unusable.
            if exchange.status is None:
                await _send_error(conn, 500)
            return True
        if conn.h11.their_state is h11.SEND_BODY:
            drained = 0
            try:
                while drained <= _DRAIN_LIMIT:
                    chunk = await exchange.receive_body()
                    if not chunk:
                        break
                    drained += len(chunk)
            except ClientGone:
                return False
            except HttpError:
                return True
        if conn.h11.their_state is not h11.DONE:
            return True
        try:
            conn.h11.start_next_cycle()
        except h11.LocalProtocolError:
            # Connection: close (ours or the client's): a pipelined request
            # after it would meet a reset without the lingering close.
            return bool(conn.h11.trailing_data[0])


def _log_access(request: Request, exchange: H1Exchange, duration: float) -> None:
    # The request's client: behind a trusted proxy, the one it spoke for (forwarded-trust).
    log_access(
        json_format=exchange._conn.config.access_log_format == "json",
        client=request.client,
        method=request.method,
        target=request.target.decode("latin-1"),
        protocol=f"HTTP/{request.http_version}",
        status=exchange.status,
        sent=exchange.bytes_sent,
        duration=duration,
        note=exchange.note,
        fields=exchange.log_fields,
    )
