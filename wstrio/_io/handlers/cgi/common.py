"""What CGI, SCGI and FastCGI have in common: one request, one CGI-style answer.

The three handlers differ only in how the request environment reaches the
program and how bytes travel (pipes to a child process, a raw socket, or
FastCGI records on a socket).  Each of them opens a :class:`GatewayChannel`
(:mod:`wstrio._io.handlers.cgi.cgi`, :mod:`wstrio._io.handlers.cgi.scgi`, :mod:`wstrio._io.handlers.cgi.fastcgi`);
everything else happens here, once.

Theory of operation
-------------------
:func:`serve_gateway` answers one request:

1. :func:`~wstrio._sansio.http.proxy.plan_request` decides whether the request
   may switch protocols (``upgrade = true``, HTTP/1.1 ``Upgrade`` listed in
   ``Connection``, no body; or an HTTP/2 extended CONNECT WebSocket, which
   gets 405 when the route has no ``upgrade``) and how its body is framed.
   A body of unknown length (chunked, or HTTP/2 without
   ``content-length``) is read into memory first, because CGI/1.1 needs
   ``CONTENT_LENGTH`` up front.
2. The environment is built (:func:`~wstrio._sansio.cgi.environ.build_cgi_environ`);
   an HTTP/2 WebSocket is presented as an HTTP/1.1 upgrade with a random
   ``Sec-WebSocket-Key``, so that an unmodified CGI can answer it.
3. The protocol opens its channel with the environment (spawns the
   script, or connects to a backend and sends the request header).
4. One nursery holds the request-body pump (client -> program, a sibling
   task) and the response reader (program -> client, the nursery body), so
   a program may answer before it has read its input, or stream its answer
   while the body still arrives.  While a switch is possible the program's
   input is left open (for FastCGI: the empty ``FCGI_STDIN`` record is held
   back) until its head shows it is not a 101.
5. The head (:class:`~wstrio._sansio.cgi.environ.CgiResponseParser`) is judged by
   :func:`~wstrio._sansio.http.proxy.judge_response`, the same rules as the
   proxy's: a 101 with ``Upgrade`` to an upgradable request switches the
   client (:meth:`Exchange.upgrade`; a 200 on HTTP/2) and
   :func:`~wstrio._io.streams.relay.relay` moves raw bytes both ways; a 101
   otherwise is a 502; a non-101 answer to an HTTP/2 WebSocket that is a 2xx
   is a 405; everything else is streamed to the client (chunked for
   HTTP/1.1 without ``Content-Length``).  A local redirect (RFC 3875 6.2.2)
   closes the channel and dispatches the new path as a GET, at most
   :data:`MAX_LOCAL_REDIRECTS` times.
6. The channel is finished: a script gets EOF on its input and some time
   to exit, then SIGTERM and SIGKILL for its whole process group; a socket
   is closed.

Failures and what the client sees:

=====================================  ===================================
script not executable / outside root   403 (before any of the above)
program cannot be started              500
no backend reachable                   503
invalid, oversized or missing head     502 (the program is killed)
program silent for ``read-timeout``    504 (the program is killed)
program input stalls ``write-timeout`` 504
101 not allowed, or without Upgrade    502
2xx without switch to an h2 WebSocket  405
failure after the response started     the client connection is closed
                                       (the response stays incomplete)
client silent ``max-read-idle``        408 (before the response started)
bad client body (chunk syntax, ...)    400 (before the response started)
body of unknown length over 16 MiB     413
=====================================  ===================================

Errors never escape a nursery (trio would wrap them in an
:class:`ExceptionGroup`): each task records the first problem in
:class:`_GatewayCall` and cancels the nursery, and the problem is acted on
outside it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import final

import attrs
import h11
import trio

from wstrio._config import Route, ServerConfig
from wstrio._errors import BackendUnavailable, HandshakeRejected
from wstrio._io.backends.pool import BackendLease, RouteBackends
from wstrio._io.http.exchange import ClientGone, Dispatch, Exchange, Upgraded, send_simple
from wstrio._io.streams.pipes import BROKEN, READ_SIZE
from wstrio._io.streams.relay import relay
from wstrio._sansio.cgi.environ import CgiResponseHead, CgiResponseParser, build_cgi_environ, find_script
from wstrio._sansio.http.proxy import (
    Forward,
    ProxyPlan,
    Reject,
    Switch,
    judge_response,
    new_websocket_key,
    plan_request,
)
from wstrio._sansio.http.request import Request, normalize_target
from wstrio._version import __version__

__all__ = [
    "MAX_BUFFERED_BODY",
    "MAX_LOCAL_REDIRECTS",
    "SERVER_SOFTWARE",
    "GatewayChannel",
    "OpenChannel",
    "RedirectedExchange",
    "ScriptTarget",
    "StderrLog",
    "backend_target",
    "locate_script",
    "refuse",
    "send_request_head",
    "serve_backend_gateway",
    "serve_gateway",
]

log = logging.getLogger("wstrio.connection")
backend_log = logging.getLogger("wstrio.backend")

SERVER_SOFTWARE = f"wstrio/{__version__}"
"""``SERVER_SOFTWARE`` in every environment."""
MAX_LOCAL_REDIRECTS = 5
"""Local redirects followed for one request before answering 500 (a loop)."""
MAX_BUFFERED_BODY = 16 * 1024 * 1024
"""Largest request body of unknown length read into memory (413 above)."""
_STDERR_LINE_LIMIT = 4096


async def _nothing() -> None:
    await trio.lowlevel.checkpoint()


async def _finish_nothing(aborted: bool) -> None:
    await trio.lowlevel.checkpoint()


@final
@attrs.define(eq=False)
class GatewayChannel:
    """The program's side of one request, as a protocol presents it.

    Opened by an :data:`OpenChannel` once the environment has been handed
    over; the gateway owns it until the context manager exits.
    """

    stream: trio.abc.Stream
    """Request bytes go in with ``send_all`` (the body, and after a 101 the
    client's raw bytes); response bytes come out of ``receive_some`` (``b""``
    at the end).  After a switch the relay half-closes it on client EOF."""
    name: str
    """The program or backend, for logs."""
    read_timeout: float = 0.0
    """Seconds the program may stay silent before and during its answer (0 = no limit)."""
    write_timeout: float = 0.0
    """Seconds a write of the request body may stall (0 = no limit)."""
    end_body: Callable[[], Awaitable[None]] = _nothing
    """Tell the program that the request body is complete (close a script's
    stdin, send the empty ``FCGI_STDIN``; nothing for SCGI, whose body length
    is in the header)."""
    background: Callable[[], Awaitable[None]] | None = None
    """A task to run while the request lasts (a script's stderr logger)."""
    finish: Callable[[bool], Awaitable[None]] = _finish_nothing
    """Called once with ``aborted`` when the exchange is over, before the
    background task is cancelled: stop the program (bounded, shielded)."""


OpenChannel = Callable[[dict[str, str]], AbstractAsyncContextManager[GatewayChannel]]
"""Opens the channel for an environment.  May raise :class:`HandshakeRejected`
(with the status to answer) or :class:`BackendUnavailable` (503)."""


@final
@attrs.frozen
class ScriptTarget:
    """What a request names: ``SCRIPT_NAME``, ``PATH_INFO`` and ``SCRIPT_FILENAME``."""

    script_name: str
    path_info: str
    script_filename: str | None


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def locate_script(real_root: str, url_path: str) -> ScriptTarget | None:
    """Find the file ``url_path`` names under the document root.

    Args:
        real_root: the document root, symbolic links resolved.
        url_path: the decoded, normalised URL path.

    Returns:
        the script, with ``SCRIPT_FILENAME`` under ``real_root``; or ``None``
        when no prefix of the path is a regular file.

    Raises:
        HandshakeRejected: 403 when the file's real path (symbolic links
            resolved) lies outside the document root.
    """

    def is_file(prefix: str) -> bool:
        return os.path.isfile(os.path.join(real_root, prefix.lstrip("/")))

    found = find_script(url_path, is_file)
    if found is None:
        return None
    script_name, path_info = found
    filename = os.path.join(real_root, script_name.lstrip("/"))
    if not _inside(os.path.realpath(filename), real_root):
        msg = f"{script_name} leads outside document-root"
        raise HandshakeRejected(msg, 403)
    return ScriptTarget(script_name, path_info, filename)


def backend_target(route: Route, request: Request, real_root: str | None) -> ScriptTarget:
    """``SCRIPT_NAME`` and friends for an SCGI or FastCGI request (lighttpd's rules).

    With ``check-local = true`` the request must name an existing file under
    the document root.  Without, a prefix route splits the path at the next
    ``/`` after the prefix (``/ws/`` + ``/ws/x/y`` gives ``/ws/x`` and
    ``/y``), and ``SCRIPT_FILENAME`` is the document root plus the script
    name, whether or not such a file exists.

    Raises:
        HandshakeRejected: 404 (check-local, no such file) or 403 (outside
            the document root).
    """
    check_local = route.backends[0].check_local if route.backends else False
    if check_local:
        target = locate_script(real_root, request.path) if real_root is not None else None
        if target is None:
            msg = f"{request.path} names no file under document-root (check-local)"
            raise HandshakeRejected(msg, 404)
        return target
    script_name, path_info = request.path, ""
    if route.path is not None:
        slash = request.path.find("/", len(route.path))
        if slash >= 0:
            script_name, path_info = request.path[:slash], request.path[slash:]
    filename = os.path.join(real_root, script_name.lstrip("/")) if real_root is not None else None
    return ScriptTarget(script_name, path_info, filename)


@final
class StderrLog:
    """Turns a program's error output into log lines on ``wstrio.backend``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._pending = bytearray()

    def feed(self, data: bytes) -> None:
        """Log every complete line in ``data`` (long lines are cut)."""
        self._pending += data
        while (newline := self._pending.find(b"\n")) >= 0 or len(self._pending) > _STDERR_LINE_LIMIT:
            end = newline if newline >= 0 else _STDERR_LINE_LIMIT
            self._emit(bytes(self._pending[:end]))
            del self._pending[: end + 1 if newline >= 0 else end]

    def flush(self) -> None:
        """Log a last line without its newline."""
        if self._pending:
            self._emit(bytes(self._pending))
            self._pending.clear()

    def _emit(self, line: bytes) -> None:
        text = line.rstrip(b"\r").decode("utf-8", "replace")
        if text:
            backend_log.warning("%s: %s", self.name, text)


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


class _BackendFailed(Exception):
    """The program broke the exchange; ``status`` is the answer if the response has not started."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _ClientFailed(Exception):
    """The client's body could not be read; answer ``status`` if the response has not started."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@final
@attrs.frozen
class _Body:
    length: int | None
    """``CONTENT_LENGTH`` (``None``: an upgradable request, shown as 0)."""
    data: bytes | None
    """The whole body when it was read ahead; ``None`` streams it from the exchange."""


async def _read_body(exchange: Exchange, plan: ProxyPlan) -> _Body:
    """How the body reaches the program; bodies of unknown length are read ahead.

    Raises:
        _ClientFailed: 400, 408 or 413.
        ClientGone: the client went away.
    """
    if plan.mode != "http":
        return _Body(None, b"")
    if plan.body == "none":
        return _Body(0, b"")
    if plan.body == "length":
        return _Body(plan.content_length, None)
    data = bytearray()
    while chunk := await _receive_body(exchange):
        data += chunk
        if len(data) > MAX_BUFFERED_BODY:
            msg = f"request body without Content-Length exceeds {MAX_BUFFERED_BODY} bytes"
            raise _ClientFailed(msg, 413)
    return _Body(len(data), bytes(data))


async def _receive_body(exchange: Exchange) -> bytes:
    try:
        return await exchange.receive_body(READ_SIZE)
    except trio.TooSlowError as exc:
        msg = "the client sent no request body for max-read-idle"
        raise _ClientFailed(msg, 408) from exc
    except h11.RemoteProtocolError as exc:
        msg = f"invalid request body: {exc}"
        raise _ClientFailed(msg, 400) from exc


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    values = {v.strip() for k, v in headers if k == b"content-length"}
    if not values:
        return None
    if len(values) > 1 or not all(v.isascii() and v.isdigit() for v in values):
        msg = f"invalid Content-Length {sorted(values)!r} in the response"
        raise _BackendFailed(msg, 502)
    return int(values.pop())


@final
class _GatewayCall:
    """One exchange between a client and a program; see the module docstring."""

    def __init__(
        self,
        exchange: Exchange,
        plan: ProxyPlan,
        body: _Body,
        route: Route,
        config: ServerConfig,
        websocket_key: bytes | None,
    ) -> None:
        self.exchange = exchange
        self.plan = plan
        self.body = body
        self.route = route
        self.config = config
        self.websocket_key = websocket_key
        self.scope: trio.CancelScope | None = None
        self.failure: str | None = None
        self.status: int | None = None
        self.client_gone = False
        self.redirect: str | None = None
        self.body_ended = False
        self.done = False
        """The answer went out completely (or the switch ran its course)."""

    def fail(self, message: str, status: int | None, *, client_gone: bool = False) -> None:
        """Record the first problem and end the exchange."""
        if self.failure is None:
            self.failure = message
            self.status = status
            self.client_gone = client_gone
        assert self.scope is not None
        self.scope.cancel()

    async def run(self, channel: GatewayChannel) -> None:
        async with trio.open_nursery() as background:
            if channel.background is not None:
                background.start_soon(channel.background)
            try:
                async with trio.open_nursery() as nursery:
                    self.scope = nursery.cancel_scope
                    if self.plan.mode == "http":
                        nursery.start_soon(self._send_body, channel)
                    await self._respond(channel)
                    # The answer is complete; a program that did not read all
                    # of its input does not need the rest.
                    nursery.cancel_scope.cancel()
            finally:
                await channel.finish(not self.done)
                background.cancel_scope.cancel()

    # -- client -> program ----------------------------------------------------

    async def _to_program(self, channel: GatewayChannel, write: Callable[[], Awaitable[None]]) -> None:
        try:
            with trio.fail_after(channel.write_timeout or math.inf):
                await write()
        except trio.TooSlowError as exc:
            msg = f"writing to {channel.name} stalled for {channel.write_timeout:g} s (write-timeout)"
            raise _BackendFailed(msg, 504) from exc

    async def _write(self, channel: GatewayChannel, data: bytes) -> None:
        await self._to_program(channel, functools.partial(channel.stream.send_all, data))

    async def _end_body(self, channel: GatewayChannel) -> None:
        if not self.body_ended:
            self.body_ended = True
            await self._to_program(channel, channel.end_body)

    async def _send_body(self, channel: GatewayChannel) -> None:
        try:
            if self.body.data is not None:
                if self.body.data:
                    await self._write(channel, self.body.data)
            else:
                while chunk := await _receive_body(self.exchange):
                    await self._write(channel, chunk)
            await self._end_body(channel)
        except ClientGone:
            self.fail("the client went away while sending the request body", None, client_gone=True)
        except _ClientFailed as exc:
            self.fail(str(exc), exc.status)
        except _BackendFailed as exc:
            self.fail(str(exc), exc.status)
        except BROKEN as exc:
            # The program stopped reading its input.  That is its right: its
            # answer (or lack of one) decides what the client gets.
            log.debug("%s stopped reading the request body: %r", channel.name, exc)

    # -- program -> client ----------------------------------------------------

    async def _receive(self, channel: GatewayChannel) -> bytes:
        timeout = channel.read_timeout or math.inf
        with trio.move_on_after(timeout) as scope:
            try:
                # bytes() of a bytes object is the object itself, no copy.
                return bytes(await channel.stream.receive_some(READ_SIZE))
            except BROKEN as exc:
                msg = f"reading from {channel.name} failed: {exc}"
                raise _BackendFailed(msg, 502) from exc
        assert scope.cancelled_caught
        msg = f"{channel.name} sent nothing for {timeout:g} s (read-timeout)"
        raise _BackendFailed(msg, 504)

    async def _read_head(self, channel: GatewayChannel) -> CgiResponseHead:
        parser = CgiResponseParser()
        while True:
            data = await self._receive(channel)
            if not data:
                msg = f"{channel.name} ended without a response head"
                raise _BackendFailed(msg, 502)
            try:
                head = parser.feed(data)
            except HandshakeRejected as exc:
                msg = f"{channel.name}: {exc}"
                raise _BackendFailed(msg, exc.status_code) from exc
            if head is not None:
                return head

    async def _respond(self, channel: GatewayChannel) -> None:
        try:
            head = await self._read_head(channel)
            verdict = judge_response(self.plan, head.status, list(head.headers), websocket_key=self.websocket_key)
            if isinstance(verdict, Reject):
                self.fail(f"{channel.name}: {verdict.reason}", verdict.status)
                return
            if isinstance(verdict, Switch):
                await self._switch(channel, verdict, head.rest)
            elif head.local_redirect is not None and self.route.local_redirect:
                self.redirect = head.local_redirect
            else:
                if self.plan.mode != "http":
                    # The program declined to switch: now its input may end
                    # (lighttpd sends the held-back empty FCGI_STDIN here too).
                    try:
                        await self._end_body(channel)
                    except BROKEN as exc:
                        log.debug("%s: ending its input failed: %r", channel.name, exc)
                await self._forward(channel, verdict, head.rest)
            self.done = True
        except ClientGone:
            self.fail("the client went away during the response", None, client_gone=True)
        except _BackendFailed as exc:
            after = " (after the response started)" if self.exchange.response_started else ""
            self.fail(f"{exc}{after}", exc.status)
        except h11.LocalProtocolError as exc:
            # The program's answer cannot be sent on as it is.
            self.fail(f"cannot pass the answer of {channel.name} on: {exc}", 502)

    async def _forward(self, channel: GatewayChannel, verdict: Forward, rest: bytes) -> None:
        length = _content_length(verdict.headers)
        no_body = self.exchange.request.method == "HEAD" or verdict.status in (204, 304)
        await self.exchange.start_response(verdict.status, verdict.headers)
        sent = 0
        data = rest
        while True:
            if data and not no_body:
                if length is not None:
                    data = data[: length - sent]
                if data:
                    await self.exchange.send_data(data)
                    sent += len(data)
            data = await self._receive(channel)
            if not data:
                break
        if length is not None and sent < length and not no_body:
            msg = f"{channel.name} ended after {sent} of the {length} bytes its Content-Length announced"
            raise _BackendFailed(msg, 502)
        await self.exchange.end_response()

    async def _switch(self, channel: GatewayChannel, verdict: Switch, rest: bytes) -> None:
        upgraded = await self.exchange.upgrade(verdict.headers, status=verdict.status)
        started = trio.current_time()
        outcome = await relay(
            upgraded,
            channel.stream,
            rest,
            max_read_idle=self.config.max_read_idle,
            max_write_idle=self.config.max_write_idle,
        )
        self.exchange.set_log_note(
            f"{self.route.handler} upgrade via {channel.name}: {outcome.describe()}"
            f" after {trio.current_time() - started:.1f}s"
        )


async def serve_gateway(
    exchange: Exchange,
    route: Route,
    config: ServerConfig,
    target: ScriptTarget,
    open_channel: OpenChannel,
    *,
    document_root: str | None,
    extra_environ: Mapping[str, str],
    dispatch: Dispatch,
) -> None:
    """Answer one request with a CGI-style program (see the module docstring).

    Args:
        exchange: the client's request and response.
        route: the cgi, scgi or fastcgi route that matched.
        config: server settings (client timeouts).
        target: ``SCRIPT_NAME``, ``PATH_INFO`` and ``SCRIPT_FILENAME``.
        open_channel: the protocol's way to hand the environment over.
        document_root: ``DOCUMENT_ROOT`` (``None`` leaves it out).
        extra_environ: variables added to the environment last.
        dispatch: answers a request from scratch (for local redirects).

    Cancellation: the program is stopped (its input closed, then SIGTERM
    and SIGKILL for a script, within a few seconds, shielded) or the backend
    connection closed, and :class:`trio.Cancelled` propagates; a response in
    progress stays incomplete, and the HTTP layer closes the connection.

    Resource handling: the channel (process, socket) is closed before this
    returns; nothing of the request outlives it.

    Error handling: the answers in the module docstring.  Failures are
    logged to ``wstrio.connection`` (the program's stderr and FastCGI
    ``FCGI_STDERR`` to ``wstrio.backend``) and noted in the access log; only
    :class:`ClientGone` (the client vanished) propagates.
    """
    request = exchange.request
    try:
        plan = plan_request(request, route)
        if plan.note:
            log.debug("%s %s: %s", request.method, request.path, plan.note)
        body = await _read_body(exchange, plan)
    except (HandshakeRejected, _ClientFailed) as exc:
        status = exc.status_code if isinstance(exc, HandshakeRejected) else exc.status
        await refuse(exchange, str(exc), status)
        return
    key = new_websocket_key() if plan.mode == "websocket-h2" else None
    env_request = request
    if key is not None and request.header(b"sec-websocket-key") is None:
        env_request = attrs.evolve(request, headers=(*request.headers, (b"sec-websocket-key", key)))
    environ = build_cgi_environ(
        env_request,
        script_name=target.script_name,
        path_info=target.path_info,
        script_filename=target.script_filename,
        document_root=document_root,
        server_software=SERVER_SOFTWARE,
        content_length=body.length,
        extra=extra_environ,
        allow_upgrade=plan.mode != "http",
    )
    call = _GatewayCall(exchange, plan, body, route, config, key)
    try:
        async with open_channel(environ) as channel:
            await call.run(channel)
    except BackendUnavailable as exc:
        await refuse(exchange, str(exc), 503)
        return
    except HandshakeRejected as exc:
        await refuse(exchange, str(exc), exc.status_code)
        return
    except _BackendFailed as exc:
        await refuse(exchange, str(exc), exc.status)
        return
    if call.failure is not None:
        if call.client_gone:
            log.info("%s %s: %s", request.method, request.path, call.failure)
            exchange.set_log_note(call.failure)
            raise ClientGone(call.failure)
        await refuse(exchange, call.failure, call.status)
        return
    if call.redirect is not None:
        await _local_redirect(exchange, call.redirect, dispatch)


async def send_request_head(lease: BackendLease, data: bytes) -> None:
    """Write an SCGI or FastCGI request header to a backend.

    Raises:
        _BackendFailed: 504 when the write stalls for the backend's
            ``write-timeout``, 502 when the backend broke the connection
            (both answered by :func:`serve_gateway`).
    """
    timeout = lease.backend.write_timeout
    try:
        with trio.fail_after(timeout or math.inf):
            await lease.stream.send_all(data)
    except trio.TooSlowError as exc:
        msg = f"writing the request to {lease.address} stalled for {timeout:g} s (write-timeout)"
        raise _BackendFailed(msg, 504) from exc
    except BROKEN as exc:
        msg = f"writing the request to {lease.address} failed: {exc!r}"
        raise _BackendFailed(msg, 502) from exc


StartOnBackend = Callable[[BackendLease, dict[str, str]], Awaitable[GatewayChannel]]
"""Sends the request header on a fresh backend connection and returns its channel."""


async def serve_backend_gateway(
    exchange: Exchange,
    route: Route,
    backends: RouteBackends,
    config: ServerConfig,
    real_root: str | None,
    dispatch: Dispatch,
    start: StartOnBackend,
) -> None:
    """Answer one request on an ``scgi`` or ``fastcgi`` route.

    The script is named by :func:`backend_target` (``check-local``), a
    backend is chosen and connected by ``backends`` (503 when none can be
    reached), ``start`` hands it the request, and :func:`serve_gateway`
    does the rest.

    Args:
        exchange: the client's request and response.
        route: the route that matched.
        backends: the route's backends (balancing, retries, spawned pools).
        config: server settings.
        real_root: the document root, symbolic links resolved (or ``None``).
        dispatch: answers a request from scratch (for local redirects).
        start: the protocol's request encoder (see :data:`StartOnBackend`).

    Cancellation: the backend connection is closed and
    :class:`trio.Cancelled` propagates.

    Resource handling: the connection is closed and its load released
    before this returns.

    Error handling: as :func:`serve_gateway`; 404/403 from ``check-local``.
    """
    request = exchange.request
    try:
        target = backend_target(route, request, real_root)
    except HandshakeRejected as exc:
        await refuse(exchange, str(exc), exc.status_code)
        return

    @contextlib.asynccontextmanager
    async def open_backend(environ: dict[str, str]) -> AsyncIterator[GatewayChannel]:
        async with backends.connect(request) as lease:
            exchange.set_log_note(f"{route.handler} via {lease.address}")
            yield await start(lease, environ)

    await serve_gateway(
        exchange,
        route,
        config,
        target,
        open_backend,
        document_root=real_root,
        extra_environ=dict(route.environment),
        dispatch=dispatch,
    )


async def refuse(exchange: Exchange, message: str, status: int | None) -> None:
    """Log why a request failed, note it, and answer ``status`` if nothing was sent yet."""
    request = exchange.request
    log.warning("%s %s: %s", request.method, request.path, message)
    exchange.set_log_note(message)
    if status is not None and not exchange.response_started:
        await send_simple(exchange, status)


async def _local_redirect(exchange: Exchange, location: str, dispatch: Dispatch) -> None:
    redirects = (exchange.redirects if isinstance(exchange, RedirectedExchange) else 0) + 1
    if redirects > MAX_LOCAL_REDIRECTS:
        msg = f"more than {MAX_LOCAL_REDIRECTS} local redirects (last to {location!r}); a loop?"
        await refuse(exchange, msg, 500)
        return
    try:
        request = _redirected_request(exchange.request, location)
    except HandshakeRejected as exc:
        await refuse(exchange, f"invalid local redirect to {location!r}: {exc}", 502)
        return
    log.debug("local redirect of %s to %s", exchange.request.path, location)
    await dispatch(RedirectedExchange(exchange, request, redirects))
