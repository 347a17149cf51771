"""The ``proxy`` handler: a reverse proxy with protocol-upgrade pass-through.

Theory of operation
-------------------
One request, one backend connection (``Connection: close``, as lighttpd):

1. :func:`~wstrio._sansio.upgrade.plan_request` decides how the request goes
   on (plain HTTP, an HTTP/1.1 ``Upgrade`` passed through, or an HTTP/2
   WebSocket turned into an HTTP/1.1 one); 405/400 end it here.
   :func:`~wstrio._sansio.http.proxy.backend_target` picks the target the
   backend gets (``proxy-target``: the normalised one by default); a 400
   with ``reject`` ends it here, before any backend is contacted.
2. :meth:`RouteBackends.connect` picks and connects a backend (balancing,
   retries); none reachable is a 503, as for wstunnel and lighttpd.
3. The request head goes out through an h11 *client* on the backend stream.
   Then one nursery holds the request-body pump (client -> backend, a
   sibling task) and the response reader (backend -> client, the nursery
   body), so a backend may answer before it read the whole body, or stream
   its answer while the body still arrives.  Each direction holds at most
   one chunk: memory does not grow with body sizes.
4. The backend's answer is judged by
   :func:`~wstrio._sansio.upgrade.judge_response`: an ordinary response is
   streamed on; a 101 to an upgrade switches the client
   (:meth:`Exchange.upgrade`) and :func:`~wstrio._io.streams.relay.relay` moves raw
   bytes until both sides close.

Failures and what the client sees:

=====================================  ===================================
no backend reachable                   503
invalid or missing response head       502
backend silent for ``read-timeout``    504 (before the response started)
backend write stalls ``write-timeout`` 504 (before the response started)
any backend failure after the start    the client connection is closed
                                       (the response stays incomplete)
client silent ``max-read-idle``        408 (before the response started)
bad client body (chunk syntax, ...)    400 (before the response started)
``Content-Length`` over the limit      413 before any backend is contacted
body over the limit, counted           413 (the backend request abandoned)
                                       before the response started; the
                                       client connection closed (HTTP/2:
                                       the stream reset) after it
=====================================  ===================================

The limit is ``max-request-body-size`` (the route's, else the server's; see
:mod:`wstrio._sansio.http.body`): each chunk is counted before it is sent
on, so a backend never gets more than the limit.

Errors never escape the nursery (trio would wrap them in an
:class:`ExceptionGroup`): each task reports the first problem to the call's
:class:`~wstrio._io.first.FirstProblem`, which cancels the nursery, and the
problem is acted on outside it.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, final

import attrs
import h11
import trio

from wstrio._config import Backend, Route, ServerConfig
from wstrio._errors import (
    BackendError,
    BackendUnavailable,
    BadRequest,
    ClientGone,
    HttpError,
    InvalidResponse,
    RequestTimeout,
)
from wstrio._io.backends.route import BackendLease
from wstrio._io.first import FirstProblem
from wstrio._io.http.exchange import Exchange, send_simple
from wstrio._io.streams.budget import UNLIMITED, BufferBudget
from wstrio._io.streams.fastpath.hub import Hub
from wstrio._io.streams.pipes import BROKEN, READ_SIZE
from wstrio._io.streams.relay import relay
from wstrio._sansio.http.body import BodyLimit, RequestBodyTooLarge
from wstrio._sansio.http.proxy import backend_request, backend_target, host_header
from wstrio._sansio.upgrade import ProxyPlan, Reject, Switch, judge_response, new_websocket_key, plan_request

if TYPE_CHECKING:
    from wstrio._io.context import RouteMatch, ServerContext

__all__ = ["handle"]

log = logging.getLogger("wstrio.connection")

# Largest backend response head (status line plus headers); more is a 502,
# as lighttpd answers headers over its limit.
MAX_RESPONSE_HEAD = 64 * 1024


@final
class _BackendHttp:
    """An h11 client on the backend stream: its only reader and writer until a switch.

    ``read-timeout`` counts from the last progress in either direction on
    this connection, so a backend that is busy reading a long upload is not
    taken for a silent one.
    """

    def __init__(self, stream: trio.abc.Stream, backend: Backend) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE_HEAD)
        self.read_timeout = backend.read_timeout or math.inf
        self.write_timeout = backend.write_timeout or math.inf
        self.progress = trio.current_time()

    async def send(self, event: h11.Event) -> None:
        try:
            data = self.h11.send(event)
        except h11.LocalProtocolError as exc:
            msg = f"cannot send the request to the backend: {exc}"
            raise BackendError(msg, 502) from exc
        if not data:
            return
        try:
            with trio.fail_after(self.write_timeout):
                await self.stream.send_all(data)
        except trio.TooSlowError as exc:
            msg = f"writing to the backend stalled for {self.write_timeout:g} s (write-timeout)"
            raise BackendError(msg, 504) from exc
        except BROKEN as exc:
            msg = f"writing to the backend failed: {exc!r}"
            raise BackendError(msg, 502) from exc
        self.progress = trio.current_time()

    async def next_event(self) -> h11.Event:
        """The next event from the backend (never ``NEED_DATA``/``PAUSED``)."""
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                msg = f"invalid response from the backend: {exc}"
                raise BackendError(msg, 502) from exc
            if event is h11.PAUSED:
                msg = "the backend connection switched protocols unexpectedly"
                raise BackendError(msg, 502)
            if event is not h11.NEED_DATA:
                assert isinstance(event, h11.Event)
                return event
            self.h11.receive_data(await self._receive())

    async def _receive(self) -> bytes:
        while True:
            with trio.move_on_at(self.progress + self.read_timeout) as scope:
                try:
                    data = await self.stream.receive_some(READ_SIZE)
                except BROKEN as exc:
                    msg = f"reading from the backend failed: {exc!r}"
                    raise BackendError(msg, 502) from exc
            if not scope.cancelled_caught:
                self.progress = trio.current_time()
                return bytes(data)
            # A body write may have made progress meanwhile: wait again.
            if trio.current_time() >= self.progress + self.read_timeout:
                msg = f"the backend sent nothing for {self.read_timeout:g} s (read-timeout)"
                raise BackendError(msg, 504)


@final
@attrs.define(eq=False)
class _Problem:
    """The first thing that went wrong in a proxied exchange."""

    message: str
    status: int | None
    """The answer if the response has not started; ``None`` = none possible."""
    client_gone: bool = False
    headers: tuple[tuple[bytes, bytes], ...] = ()
    """Headers for that answer (``Connection: close`` with a 413)."""


@final
class _ProxyCall:
    """One request forwarded over one backend connection."""

    def __init__(
        self,
        exchange: Exchange,
        plan: ProxyPlan,
        target: bytes,
        route: Route,
        config: ServerConfig,
        lease: BackendLease,
        limit: BodyLimit,
        hub: Hub | None = None,
        budget: BufferBudget = UNLIMITED,
    ) -> None:
        self.exchange = exchange
        self.limit = limit
        self.hub = hub
        self.budget = budget
        self.plan = plan
        self.target = target
        self.route = route
        self.config = config
        self.lease = lease
        exchange.set_log_fields(backend=str(lease.address))
        self.conn = _BackendHttp(lease.stream, lease.backend)
        self.key = new_websocket_key() if plan.mode == "websocket-h2" else None
        self.first: FirstProblem[_Problem] = FirstProblem()
        self.switch: Switch | None = None

    def fail(
        self,
        message: str,
        status: int | None,
        *,
        client_gone: bool = False,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        self.first.report(_Problem(message, status, client_gone, headers))

    async def run(self, first_chunk: bytes) -> None:
        request = self.exchange.request
        head = backend_request(
            request,
            self.plan,
            host=host_header(request, self.lease.backend, replace=self.route.replace_http_host),
            forwarded=self.route.forwarded,
            websocket_key=self.key,
            target=self.target,
        )
        try:
            await self.conn.send(h11.Request(method=head.method, target=head.target, headers=head.headers))
            if self.plan.body == "none":
                await self.conn.send(h11.EndOfMessage())
        except BackendError as exc:
            self.fail(str(exc), exc.status)
        else:
            async with trio.open_nursery() as nursery:
                self.first.attach(nursery.cancel_scope)
                if self.plan.body != "none":
                    nursery.start_soon(self._send_body, first_chunk)
                await self._respond()
                # The backend is done (or failed): a body it did not read is
                # not sent on; the HTTP layer drains or closes the client.
                nursery.cancel_scope.cancel()
        if self.switch is not None and self.first.problem is None:
            await self._relay(self.switch)
            return
        await self._settle()

    async def _settle(self) -> None:
        problem = self.first.problem
        if problem is None:
            return
        request = self.exchange.request
        where = f"{request.method} {request.path} via {self.lease.address}"
        self.exchange.set_log_note(f"proxy to {self.lease.address}: {problem.message}")
        # The client's own failures (4xx; 501 for a transfer coding nobody
        # implements) are routine; the backend's (502-504) are the operator's business.
        client_side = problem.client_gone or (
            problem.status is not None and (400 <= problem.status < 500 or problem.status == 501)
        )
        log.log(logging.INFO if client_side else logging.WARNING, "%s: %s", where, problem.message)
        if problem.client_gone:
            raise ClientGone(problem.message)
        if not self.exchange.response_started and problem.status is not None:
            await send_simple(self.exchange, problem.status, headers=problem.headers)
        # Otherwise the response is left unfinished, and the HTTP layer
        # closes the client connection: the only honest signal left.

    async def _send_body(self, first_chunk: bytes) -> None:
        # first_chunk was counted by handle(); every later chunk is counted
        # before it goes out, so the backend never gets more than the limit.
        chunk = first_chunk
        try:
            while True:
                if chunk:
                    await self.conn.send(h11.Data(data=chunk))
                chunk = await self.exchange.receive_body(READ_SIZE)
                if not chunk:
                    break
                self.limit.count(len(chunk))
            await self.conn.send(h11.EndOfMessage())
        except RequestBodyTooLarge as exc:
            # Before the response: the backend request is abandoned (the
            # nursery is cancelled, the connection closed) and the client
            # gets the 413; after it, the exchange is aborted.
            self.fail(str(exc), exc.status, headers=exc.headers)
        except ClientGone:
            self.fail("the client went away while sending the request body", None, client_gone=True)
        except RequestTimeout:
            self.fail(f"the client sent no body data for {self.config.max_read_idle:g} s", 408)
        except BadRequest as exc:
            self.fail(f"invalid request body: {exc.__cause__ or exc}", exc.status)
        except BackendError as exc:
            if exc.status == 504:
                self.fail(str(exc), 504)
            # Otherwise the backend stopped reading; it may still answer
            # (a 413, say), so the response reader decides.
            else:
                log.debug("request body not fully sent: %s", exc)

    async def _respond(self) -> None:
        try:
            event = await self.conn.next_event()
            while isinstance(event, h11.InformationalResponse) and event.status_code != 101:
                # 100 Continue, 102, 103: wstrio sends no interim responses.
                event = await self.conn.next_event()
        except BackendError as exc:
            self.fail(str(exc), exc.status)
            return
        if not isinstance(event, (h11.Response, h11.InformationalResponse)):
            self.fail("the backend closed the connection without a response", 502)
            return
        verdict = judge_response(self.plan, event.status_code, list(event.headers), websocket_key=self.key)
        if isinstance(verdict, Reject):
            self.fail(verdict.reason, verdict.status)
            return
        if isinstance(verdict, Switch):
            self.switch = verdict
            return
        self.exchange.set_log_note(f"proxy to {self.lease.address}")
        try:
            await self.exchange.start_response(verdict.status, verdict.headers)
            while True:
                event = await self.conn.next_event()
                if isinstance(event, h11.Data):
                    await self.exchange.send_data(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    await self.exchange.end_response()
                    return
                else:
                    self.fail(f"unexpected {type(event).__name__} from the backend mid-response", None)
                    return
        except ClientGone:
            self.fail("the client went away during the response", None, client_gone=True)
        except BackendError as exc:
            self.fail(f"{exc} (after the response started)", None)
        except InvalidResponse as exc:
            # The backend's response cannot be sent on as it is (a body on
            # a 204, say).
            self.fail(f"cannot pass the backend's response on: {exc.__cause__ or exc}", 502)

    async def _relay(self, switch: Switch) -> None:
        leftover, _closed = self.conn.h11.trailing_data
        upgraded = await self.exchange.upgrade(switch.headers, status=switch.status)
        started = trio.current_time()
        outcome = await relay(
            upgraded.stream,
            upgraded.leftover,
            self.lease.stream,
            bytes(leftover),
            max_read_idle=self.config.max_read_idle,
            max_write_idle=self.config.max_write_idle,
            max_lifetime=self.config.tunnel_lifetime(self.route),
            hub=self.hub,
            budget=self.budget,
        )
        self.exchange.set_log_note(
            f"upgrade via {self.lease.address}: {outcome.describe()} after {trio.current_time() - started:.1f}s"
        )
        self.exchange.set_log_fields(**outcome.log_fields())


async def handle(exchange: Exchange, match: RouteMatch, ctx: ServerContext) -> None:
    """Forward one request on a ``proxy`` route and pass its answer back.

    Args:
        exchange: the client's request and response.
        match: the proxy route that matched, with its backends (balancing,
            retries).
        ctx: the server: settings (client timeouts), and the hub, for
            relaying an upgraded connection.

    Cancellation: the backend connection is closed at once and
    :class:`trio.Cancelled` propagates; a response in progress stays
    incomplete, and the HTTP layer closes the client connection.

    Error handling: the answers in the module docstring.  Failures are
    logged to ``wstrio.connection`` and noted in the access log; only
    :class:`ClientGone` (the client vanished) propagates.
    """
    request = exchange.request
    route, config = match.route, ctx.config
    limit = BodyLimit(config.request_body_limit(route))
    try:
        plan = plan_request(request, route)
        target = backend_target(request, route.proxy_target)
        # Before any backend is contacted; the body is not read.
        limit.check_declared(plan.content_length)
    except HttpError as exc:
        log.info("%s %s: %s (%d)", request.method, request.path, exc, exc.status)
        exchange.set_log_note(str(exc))
        await send_simple(exchange, exc.status, headers=exc.headers)
        return
    if plan.note:
        log.debug("%s %s: %s", request.method, request.path, plan.note)
    first_chunk = b""
    if plan.body == "unknown":
        # HTTP/2 without content-length: one look at the body tells "none"
        # (END_STREAM came with the headers) from a stream to send chunked.
        try:
            first_chunk = await exchange.receive_body(READ_SIZE)
            limit.count(len(first_chunk))
        except (RequestTimeout, RequestBodyTooLarge) as exc:
            log.info("%s %s: %s (%d)", request.method, request.path, exc, exc.status)
            exchange.set_log_note(str(exc))
            await send_simple(exchange, exc.status, headers=exc.headers)
            return
        plan = attrs.evolve(plan, body="chunked" if first_chunk else "none")
    try:
        async with match.backends.connect(request) as lease:
            await _ProxyCall(exchange, plan, target, route, config, lease, limit, ctx.hub, ctx.budget).run(first_chunk)
    except BackendUnavailable as exc:
        log.warning("%s: %s", request.path, exc)
        exchange.set_log_note(str(exc))
        if not exchange.response_started:
            await send_simple(exchange, exc.status)
