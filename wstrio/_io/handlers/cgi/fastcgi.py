"""The ``fastcgi`` handler: the request goes to a FastCGI responder.

Framing, as lighttpd (reference section 8): ``FCGI_BEGIN_REQUEST`` (role
RESPONDER, request id 1, no ``FCGI_KEEP_CONN``: one request per
connection), the environment in ``FCGI_PARAMS`` records and the empty one,
then the body in ``FCGI_STDIN`` records and the empty ``FCGI_STDIN`` that
ends it.  While the request may still switch protocols, that empty record is
held back: it goes out when the answer turns out not to be a 101.

:class:`FastCgiStream` makes the request look like a plain byte stream, so
the shared exchange (:mod:`wstrio._io.handlers.cgi.common`) and, after a 101, the shared
relay (:func:`~wstrio._io.streams.relay.relay`) run unchanged:

* ``send_all`` wraps bytes in ``FCGI_STDIN`` records (65535 bytes at most
  each);
* ``send_eof`` sends the empty ``FCGI_STDIN``.  After a switch that is how a
  client EOF reaches the program (a wrapped CGI such as ``fcgi_cgi.py`` then
  sees EOF on its stdin).  lighttpd sends no end record there and half-closes
  the socket instead, which a FastCGI server cannot tell from a broken
  connection;
* ``receive_some`` returns ``FCGI_STDOUT`` content; ``FCGI_STDERR`` lines go
  to the ``wstrio.backend`` log; ``FCGI_END_REQUEST`` is the end (``b""``).
  Records of other request ids and management records are ignored.  A
  connection that ends before ``FCGI_END_REQUEST``, or bytes that are not
  FastCGI records, are a :class:`trio.BrokenResourceError` (502 before the
  response head, an aborted response or tunnel after it).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, final

import trio

from wstrio._io.backends.route import BackendLease
from wstrio._io.handlers.cgi.common import ProgramChannel, send_request_head, serve_on_backend
from wstrio._io.handlers.cgi.stderr import StderrLog
from wstrio._io.http.exchange import Exchange
from wstrio._io.streams.pipes import READ_SIZE
from wstrio._sansio.cgi import fastcgi as fcgi

if TYPE_CHECKING:
    from wstrio._io.context import RouteMatch, ServerContext

__all__ = ["REQUEST_ID", "FastCgiStream", "handle"]

log = logging.getLogger("wstrio.backend")

REQUEST_ID = 1
"""The one request id used on a connection (lighttpd's choice too)."""
_PROTOCOL_STATUS = {
    fcgi.CANT_MPX_CONN: "FCGI_CANT_MPX_CONN",
    fcgi.OVERLOADED: "FCGI_OVERLOADED",
    fcgi.UNKNOWN_ROLE: "FCGI_UNKNOWN_ROLE",
}


@final
class FastCgiStream(trio.abc.HalfCloseableStream):
    """One FastCGI request on a backend connection, as a byte stream.

    See the module docstring for what each method does on the wire.
    ``receive_some`` is as safe to cancel as the transport's: records are
    decoded only after a read returned.
    """

    def __init__(self, transport: trio.abc.Stream, *, name: str, request_id: int = REQUEST_ID) -> None:
        self.transport = transport
        self.name = name
        self.request_id = request_id
        self.app_status: int | None = None
        """The application status from ``FCGI_END_REQUEST``, once it came."""
        self._decoder = fcgi.RecordDecoder()
        self._stdout = bytearray()
        self._stderr = StderrLog(name)
        self._ended = False
        self._stdin_ended = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._stdin_ended:
            msg = "FCGI_STDIN was already ended"
            raise trio.ClosedResourceError(msg)
        if not data:
            # An empty record would end FCGI_STDIN.
            await trio.lowlevel.checkpoint()
            return
        await self.transport.send_all(fcgi.encode_stream(fcgi.STDIN, self.request_id, bytes(data)))

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        if self._stdin_ended:
            await trio.lowlevel.checkpoint()
            return
        self._stdin_ended = True
        await self.transport.send_all(fcgi.encode_record(fcgi.STDIN, self.request_id, b""))

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._stdout and not self._ended:
            data = await self.transport.receive_some(READ_SIZE)
            if not data:
                self._ended = True
                self._stderr.flush()
                msg = "the connection ended before FCGI_END_REQUEST"
                raise trio.BrokenResourceError(msg)
            try:
                records = self._decoder.feed(bytes(data))
            except ValueError as exc:
                self._ended = True
                msg = f"not a FastCGI record stream: {exc}"
                raise trio.BrokenResourceError(msg) from exc
            for record in records:
                self._handle(record)
        size = len(self._stdout) if max_bytes is None else min(max_bytes, len(self._stdout))
        chunk = bytes(self._stdout[:size])
        del self._stdout[:size]
        return chunk

    def _handle(self, record: fcgi.Record) -> None:
        if record.request_id != self.request_id:
            # Management records (id 0) and other requests are none of ours.
            log.debug("%s: ignoring record type %d for request %d", self.name, record.type, record.request_id)
        elif record.type == fcgi.STDOUT:
            self._stdout += record.content
        elif record.type == fcgi.STDERR:
            if record.content:
                self._stderr.feed(record.content)
            else:
                self._stderr.flush()
        elif record.type == fcgi.END_REQUEST and not self._ended:
            self._ended = True
            self._stderr.flush()
            try:
                self.app_status, protocol_status = fcgi.parse_end_request(record.content)
            except ValueError as exc:
                log.warning("%s: %s", self.name, exc)
                return
            if protocol_status != fcgi.REQUEST_COMPLETE:
                what = _PROTOCOL_STATUS.get(protocol_status, str(protocol_status))
                log.warning("%s: the request was refused (%s)", self.name, what)
            elif self.app_status:
                log.info("%s: application status %d", self.name, self.app_status)
        else:
            log.debug("%s: ignoring record type %d", self.name, record.type)

    async def aclose(self) -> None:
        await self.transport.aclose()


async def _start_fastcgi(lease: BackendLease, environ: dict[str, str]) -> ProgramChannel:
    name = f"fastcgi {lease.address}"
    await send_request_head(
        lease, fcgi.encode_begin_request(REQUEST_ID, fcgi.RESPONDER) + fcgi.encode_params(REQUEST_ID, environ)
    )
    stream = FastCgiStream(lease.stream, name=name)
    return ProgramChannel(
        stream,
        name=name,
        read_timeout=lease.backend.read_timeout,
        write_timeout=lease.backend.write_timeout,
        end_body=stream.send_eof,
    )


async def handle(exchange: Exchange, match: RouteMatch, ctx: ServerContext) -> None:
    """Answer one request on a ``fastcgi`` route.

    Args:
        exchange: the client's request and response.
        match: the fastcgi route that matched, with its backends.
        ctx: the server (settings, document root, dispatcher).

    Cancellation: the backend connection is closed (no
    ``FCGI_ABORT_REQUEST``: without ``FCGI_KEEP_CONN`` closing it aborts the
    request) and :class:`trio.Cancelled` propagates.

    Resource handling: the connection is closed before this returns.

    Error handling: as :func:`~wstrio._io.handlers.cgi.common.serve_on_backend`;
    only :class:`~wstrio._errors.ClientGone` propagates.
    """
    await serve_on_backend(exchange, match, ctx, _start_fastcgi)
