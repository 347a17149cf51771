"""What CGI, SCGI and FastCGI have in common: one request, one CGI-style answer.

The three handlers differ only in how the request environment reaches the
program and how bytes travel (pipes to a child process, a raw socket, or
FastCGI records on a socket).  Each of them opens a :class:`ProgramChannel`
(:mod:`wstrio._io.handlers.cgi.cgi`, :mod:`wstrio._io.handlers.cgi.scgi`, :mod:`wstrio._io.handlers.cgi.fastcgi`);
everything else happens here, once.  Beside this module: which script a
request names (:mod:`~wstrio._io.handlers.cgi.locate`), local redirects
(:mod:`~wstrio._io.handlers.cgi.redirect`) and a program's error output
(:mod:`~wstrio._io.handlers.cgi.stderr`).

Theory of operation
-------------------
:func:`serve_program` answers one request:

1. :func:`~wstrio._sansio.upgrade.plan_request` decides whether the request
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
5. The head (:class:`~wstrio._sansio.cgi.response.CgiResponseParser`) is judged by
   :func:`~wstrio._sansio.upgrade.judge_response`, the same rules as the
   proxy's: a 101 with ``Upgrade`` to an upgradable request switches the
   client (:meth:`Exchange.upgrade`; a 200 on HTTP/2) and
   :func:`~wstrio._io.streams.relay.relay` moves raw bytes both ways; a 101
   otherwise is a 502; a non-101 answer to an HTTP/2 WebSocket that is a 2xx
   is a 405; everything else is streamed to the client (chunked for
   HTTP/1.1 without ``Content-Length``).  A local redirect (RFC 3875 6.2.2)
   closes the channel and dispatches the new path as a GET, at most
   :data:`~wstrio._io.handlers.cgi.redirect.MAX_LOCAL_REDIRECTS` times.
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
:class:`ExceptionGroup`): each task reports the first problem to the call's
:class:`~wstrio._io.first.FirstProblem`, which cancels the nursery, and the
problem is acted on outside it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, final

import attrs
import trio

from wstrio._config import Route, ServerConfig
from wstrio._errors import BackendError, BadRequest, ClientGone, HttpError, InvalidResponse
from wstrio._io.backends.route import BackendLease
from wstrio._io.first import FirstProblem
from wstrio._io.handlers.cgi.locate import ScriptTarget, backend_target
from wstrio._io.handlers.cgi.redirect import redirected_exchange
from wstrio._io.http.exchange import Exchange, send_simple
from wstrio._io.streams.budget import UNLIMITED, BufferBudget
from wstrio._io.streams.pipes import BROKEN, READ_SIZE
from wstrio._io.streams.relay import relay
from wstrio._sansio.cgi.environ import build_cgi_environ
from wstrio._sansio.cgi.response import CgiResponseHead, CgiResponseParser
from wstrio._sansio.http.body import BodyLimit
from wstrio._sansio.upgrade import Forward, ProxyPlan, Reject, Switch, judge_response, new_websocket_key, plan_request
from wstrio._version import __version__

if TYPE_CHECKING:
    from wstrio._io.context import RouteMatch, ServerContext
    from wstrio._io.streams.fastpath.hub import Hub

__all__ = [
    "MAX_BUFFERED_BODY",
    "SERVER_SOFTWARE",
    "OpenChannel",
    "ProgramChannel",
    "StartOnBackend",
    "refuse",
    "send_request_head",
    "serve_on_backend",
    "serve_program",
]

log = logging.getLogger("wstrio.connection")

SERVER_SOFTWARE = f"wstrio/{__version__}"
"""``SERVER_SOFTWARE`` in every environment."""
MAX_BUFFERED_BODY = 16 * 1024 * 1024
"""Largest request body of unknown length read into memory (413 above)."""


async def _nothing() -> None:
    await trio.lowlevel.checkpoint()


async def _finish_nothing(aborted: bool) -> None:
    await trio.lowlevel.checkpoint()


@final
@attrs.define(eq=False)
class ProgramChannel:
    """The program's side of one request, as a protocol presents it.

    Opened by an :data:`OpenChannel` once the environment has been handed
    over; :func:`serve_program` owns it until the context manager exits.
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


OpenChannel = Callable[[dict[str, str]], AbstractAsyncContextManager[ProgramChannel]]
"""Opens the channel for an environment.  May raise :class:`~wstrio._errors.HttpError`
(a script that cannot be started: 403, 500) or :class:`~wstrio._errors.BackendError`
(503 when no backend is reachable, 502/504 when the request header cannot be sent)."""


@final
@attrs.frozen
class _Body:
    length: int | None
    """``CONTENT_LENGTH`` (``None``: an upgradable request, shown as 0)."""
    data: bytes | None
    """The whole body when it was read ahead; ``None`` streams it from the exchange."""


async def _read_body(exchange: Exchange, plan: ProxyPlan, limit: BodyLimit) -> _Body:
    """How the body reaches the program; bodies of unknown length are read ahead.

    A declared length over ``max-request-body-size`` is refused before
    anything is read (and before any program is started or backend
    contacted); a body read ahead is counted as it comes.

    Raises:
        HttpError: 400, 408 (from the exchange) or 413.
        ClientGone: the client went away.
    """
    if plan.mode != "http":
        return _Body(None, b"")
    if plan.body == "none":
        return _Body(0, b"")
    limit.check_declared(plan.content_length)
    if plan.body == "length":
        return _Body(plan.content_length, None)
    data = bytearray()
    while chunk := await exchange.receive_body(READ_SIZE):
        limit.count(len(chunk))
        data += chunk
        if len(data) > MAX_BUFFERED_BODY:
            msg = f"request body without Content-Length exceeds {MAX_BUFFERED_BODY} bytes"
            raise BadRequest(msg, 413)
    return _Body(len(data), bytes(data))


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    values = {v.strip() for k, v in headers if k == b"content-length"}
    if not values:
        return None
    if len(values) > 1 or not all(v.isascii() and v.isdigit() for v in values):
        msg = f"invalid Content-Length {sorted(values)!r} in the response"
        raise BackendError(msg, 502)
    return int(values.pop())


@final
@attrs.frozen
class _Problem:
    """The first thing that went wrong in an exchange with a program."""

    message: str
    status: int | None
    """The answer if the response has not started; ``None`` = none possible."""
    client_gone: bool = False


@final
class _ProgramCall:
    """One exchange between a client and a program; see the module docstring."""

    def __init__(
        self,
        exchange: Exchange,
        plan: ProxyPlan,
        body: _Body,
        route: Route,
        config: ServerConfig,
        websocket_key: bytes | None,
        hub: Hub | None = None,
        budget: BufferBudget = UNLIMITED,
    ) -> None:
        self.budget = budget
        self.exchange = exchange
        self.plan = plan
        self.body = body
        self.route = route
        self.config = config
        self.websocket_key = websocket_key
        self.hub = hub
        """For the relay after a 101: it takes it between two plain sockets
        (SCGI); a FastCGI record stream or a CGI script's pipes stay on the
        relay's pump tasks."""
        self.first: FirstProblem[_Problem] = FirstProblem()
        self.redirect: str | None = None
        self.body_ended = False
        self.done = False
        """The answer went out completely (or the switch ran its course)."""

    def fail(self, message: str, status: int | None, *, client_gone: bool = False) -> None:
        """Record the first problem and end the exchange."""
        self.first.report(_Problem(message, status, client_gone))

    async def run(self, channel: ProgramChannel) -> None:
        self.exchange.set_log_fields(backend=channel.name)
        async with trio.open_nursery() as background:
            if channel.background is not None:
                background.start_soon(channel.background)
            try:
                async with trio.open_nursery() as nursery:
                    self.first.attach(nursery.cancel_scope)
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

    async def _to_program(self, channel: ProgramChannel, write: Callable[[], Awaitable[None]]) -> None:
        try:
            with trio.fail_after(channel.write_timeout or math.inf):
                await write()
        except trio.TooSlowError as exc:
            msg = f"writing to {channel.name} stalled for {channel.write_timeout:g} s (write-timeout)"
            raise BackendError(msg, 504) from exc

    async def _write(self, channel: ProgramChannel, data: bytes) -> None:
        await self._to_program(channel, functools.partial(channel.stream.send_all, data))

    async def _end_body(self, channel: ProgramChannel) -> None:
        if not self.body_ended:
            self.body_ended = True
            await self._to_program(channel, channel.end_body)

    async def _send_body(self, channel: ProgramChannel) -> None:
        try:
            if self.body.data is not None:
                if self.body.data:
                    await self._write(channel, self.body.data)
            else:
                while chunk := await self.exchange.receive_body(READ_SIZE):
                    await self._write(channel, chunk)
            await self._end_body(channel)
        except ClientGone:
            self.fail("the client went away while sending the request body", None, client_gone=True)
        except HttpError as exc:
            self.fail(f"the request body: {exc}", exc.status)
        except BackendError as exc:
            self.fail(str(exc), exc.status)
        except BROKEN as exc:
            # The program stopped reading its input.  That is its right: its
            # answer (or lack of one) decides what the client gets.
            log.debug("%s stopped reading the request body: %r", channel.name, exc)

    # -- program -> client ----------------------------------------------------

    async def _receive(self, channel: ProgramChannel) -> bytes:
        timeout = channel.read_timeout or math.inf
        with trio.move_on_after(timeout) as scope:
            try:
                # bytes() of a bytes object is the object itself, no copy.
                return bytes(await channel.stream.receive_some(READ_SIZE))
            except BROKEN as exc:
                msg = f"reading from {channel.name} failed: {exc}"
                raise BackendError(msg, 502) from exc
        assert scope.cancelled_caught
        msg = f"{channel.name} sent nothing for {timeout:g} s (read-timeout)"
        raise BackendError(msg, 504)

    async def _read_head(self, channel: ProgramChannel) -> CgiResponseHead:
        parser = CgiResponseParser()
        while True:
            data = await self._receive(channel)
            if not data:
                msg = f"{channel.name} ended without a response head"
                raise BackendError(msg, 502)
            try:
                head = parser.feed(data)
            except BackendError as exc:
                msg = f"{channel.name}: {exc}"
                raise BackendError(msg, exc.status) from exc
            if head is not None:
                return head

    async def _respond(self, channel: ProgramChannel) -> None:
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
        except BackendError as exc:
            after = " (after the response started)" if self.exchange.response_started else ""
            self.fail(f"{exc}{after}", exc.status)
        except InvalidResponse as exc:
            # The program's answer cannot be sent on as it is.
            self.fail(f"cannot pass the answer of {channel.name} on: {exc.__cause__ or exc}", 502)

    async def _forward(self, channel: ProgramChannel, verdict: Forward, rest: bytes) -> None:
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
            raise BackendError(msg, 502)
        await self.exchange.end_response()

    async def _switch(self, channel: ProgramChannel, verdict: Switch, rest: bytes) -> None:
        upgraded = await self.exchange.upgrade(verdict.headers, status=verdict.status)
        started = trio.current_time()
        outcome = await relay(
            upgraded.stream,
            upgraded.leftover,
            channel.stream,
            rest,
            max_read_idle=self.config.max_read_idle,
            max_write_idle=self.config.max_write_idle,
            max_lifetime=self.config.tunnel_lifetime(self.route),
            hub=self.hub,
            budget=self.budget,
        )
        self.exchange.set_log_note(
            f"{self.route.handler} upgrade via {channel.name}: {outcome.describe()}"
            f" after {trio.current_time() - started:.1f}s"
        )
        self.exchange.set_log_fields(**outcome.log_fields())


async def serve_program(
    exchange: Exchange,
    match: RouteMatch,
    ctx: ServerContext,
    target: ScriptTarget,
    open_channel: OpenChannel,
    *,
    extra_environ: Mapping[str, str],
) -> None:
    """Answer one request with a CGI-style program (see the module docstring).

    Args:
        exchange: the client's request and response.
        match: the cgi, scgi or fastcgi route that matched.
        ctx: the server: settings (client timeouts), ``DOCUMENT_ROOT``, and
            the dispatcher for local redirects.
        target: ``SCRIPT_NAME``, ``PATH_INFO`` and ``SCRIPT_FILENAME``.
        open_channel: the protocol's way to hand the environment over.
        extra_environ: variables added to the environment last.

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
    route, config = match.route, ctx.config
    try:
        plan = plan_request(request, route)
        if plan.note:
            log.debug("%s %s: %s", request.method, request.path, plan.note)
        body = await _read_body(exchange, plan, BodyLimit(config.request_body_limit(route)))
    except HttpError as exc:
        await refuse(exchange, str(exc), exc.status, exc.headers)
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
        document_root=ctx.real_root,
        server_software=SERVER_SOFTWARE,
        content_length=body.length,
        extra=extra_environ,
        allow_upgrade=plan.mode != "http",
    )
    call = _ProgramCall(exchange, plan, body, route, config, key, hub=ctx.hub, budget=ctx.budget)
    try:
        async with open_channel(environ) as channel:
            await call.run(channel)
    except (HttpError, BackendError) as exc:
        await refuse(exchange, str(exc), exc.status)
        return
    problem = call.first.problem
    if problem is not None:
        if problem.client_gone:
            log.info("%s %s: %s", request.method, request.path, problem.message)
            exchange.set_log_note(problem.message)
            raise ClientGone(problem.message)
        await refuse(exchange, problem.message, problem.status)
        return
    if call.redirect is not None:
        try:
            redirected = redirected_exchange(exchange, call.redirect)
        except HttpError as exc:
            await refuse(exchange, str(exc), exc.status)
            return
        log.debug("local redirect of %s to %s", request.path, call.redirect)
        await ctx.dispatch(redirected)


async def send_request_head(lease: BackendLease, data: bytes) -> None:
    """Write an SCGI or FastCGI request header to a backend.

    Raises:
        BackendError: 504 when the write stalls for the backend's
            ``write-timeout``, 502 when the backend broke the connection
            (both answered by :func:`serve_program`).
    """
    timeout = lease.backend.write_timeout
    try:
        with trio.fail_after(timeout or math.inf):
            await lease.stream.send_all(data)
    except trio.TooSlowError as exc:
        msg = f"writing the request to {lease.address} stalled for {timeout:g} s (write-timeout)"
        raise BackendError(msg, 504) from exc
    except BROKEN as exc:
        msg = f"writing the request to {lease.address} failed: {exc!r}"
        raise BackendError(msg, 502) from exc


StartOnBackend = Callable[[BackendLease, dict[str, str]], Awaitable[ProgramChannel]]
"""Sends the request header on a fresh backend connection and returns its channel."""


async def serve_on_backend(exchange: Exchange, match: RouteMatch, ctx: ServerContext, start: StartOnBackend) -> None:
    """Answer one request on an ``scgi`` or ``fastcgi`` route.

    The script is named by :func:`~wstrio._io.handlers.cgi.locate.backend_target`
    (``check-local``), a backend is chosen and connected by the route's
    backends (503 when none can be reached), ``start`` hands it the request,
    and :func:`serve_program` does the rest.

    Args:
        exchange: the client's request and response.
        match: the route that matched, with its backends (balancing,
            retries, spawned pools).
        ctx: the server (settings, document root, dispatcher).
        start: the protocol's request encoder (see :data:`StartOnBackend`).

    Cancellation: the backend connection is closed and
    :class:`trio.Cancelled` propagates.

    Resource handling: the connection is closed and its load released
    before this returns.

    Error handling: as :func:`serve_program`; 404/403 from ``check-local``.
    """
    request = exchange.request
    route = match.route
    try:
        target = backend_target(route, request, ctx.real_root)
    except HttpError as exc:
        await refuse(exchange, str(exc), exc.status)
        return
    backends = match.backends

    @contextlib.asynccontextmanager
    async def open_backend(environ: dict[str, str]) -> AsyncIterator[ProgramChannel]:
        async with backends.connect(request) as lease:
            exchange.set_log_note(f"{route.handler} via {lease.address}")
            yield await start(lease, environ)

    await serve_program(exchange, match, ctx, target, open_backend, extra_environ=dict(route.environment))


_CLIENT_FAULTS = frozenset([400, 408, 413, 431, 501])
"""Statuses that mean the client's own fault: logged at INFO, not WARNING."""


async def refuse(
    exchange: Exchange, message: str, status: int | None, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """Log why a request failed, note it, and answer ``status`` if nothing was sent yet.

    A client's fault (a malformed, stalled or too large body) is routine and
    logged at INFO; the rest (a script or backend failing, a route that
    cannot work) is the operator's business, at WARNING.
    """
    request = exchange.request
    level = logging.INFO if status in _CLIENT_FAULTS else logging.WARNING
    log.log(level, "%s %s: %s", request.method, request.path, message)
    exchange.set_log_note(message)
    if status is not None and not exchange.response_started:
        await send_simple(exchange, status, headers=headers)
