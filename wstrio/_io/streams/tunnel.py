"""The wstunnel tunnel: one WebSocket client, one backend byte stream.

Theory of operation
-------------------
:func:`run_tunnel` runs one nursery with sibling tasks (the first one in
the nursery's own body, which saves a task per tunnel):

* ``client -> backend``: read client bytes, feed the codec, write data
  payloads to the backend, answer PINGs, note PONGs;
* ``backend -> client``: read backend bytes, frame them (text or binary),
  send them;
* ``ping`` (only with ``ping-interval``): PING every interval and wait at
  most ``pong-timeout`` for the PONG.

The first task to reach an ending records an :class:`Outcome` (the close
code to send, and why) and cancels its siblings.  Exceptions never escape the
tasks: each failure is mapped to its outcome where it happens (client gone:
no close frame; backend error: 1011; protocol error: wsproto's code).  Then,
outside the nursery, the close frame goes out and wstrio waits (bounded) for
the client's CLOSE, as RFC 6455 asks.

Endings and their close codes (lighttpd's, reference section 2.10):

==============================  ===========================================
client CLOSE (any code)         data before it is delivered, the backend is
                                half-closed (EOF), reply **1000**
client protocol error           **1002** (1007 for invalid UTF-8 text)
client TCP EOF, no CLOSE        backend half-closed; the tunnel lives on
                                until the backend closes (then **1001**)
backend EOF                     data first, then **1001**
backend error or timeout        **1011**
client silent ``max-read-idle`` **1001**, actually delivered
no PONG within ``pong-timeout``  **1011**
server shutdown (cancelled)     **1001**
==============================  ===========================================

Backpressure: each direction reads only after its last write finished, so a
slow reader on either side stops reads from the other (memory per tunnel is
bounded by the 64 KiB read size and the kernel's socket buffers).

Timers: ``max-read-idle``, ``max-write-idle`` and the backend's
``read-timeout``/``write-timeout`` are checked from timestamps the pumps
update, instead of a cancel scope around every read and write (which cost
about a tenth of a small message's round trip).  In a server, one
:class:`~wstrio._io.streams.timers.TimerService` task checks every tunnel
once a second (lighttpd's trigger); standalone, a ``watchdog`` sibling does
it to the deadline.

Plain sockets are read and written through :mod:`wstrio._io.streams.pipes`'s file
descriptor fast path; TLS, HTTP/2 and memory streams through their own
Stream API.

The hub (:mod:`wstrio._io.streams.fastpath.hub`): a tunnel between two plain sockets, without
pings, first lives in the server's hub, which moves its data synchronously
from one epoll set shared by all such tunnels (no task switch per message).
Its handlers (:mod:`wstrio._io.streams.fastpath.tunnel`) do per message what
the tasks do.  At the first control frame, EOF, error or write that would
block, the hub hands the tunnel back with one
:class:`~wstrio._io.streams.fastpath.handback.HandBack` (bytes not yet
written each way, events not yet handled, and why), :meth:`_Tunnel.take_back`
resumes or ends it, and the tasks above take over for the rest of its life.
The hub never finishes an ending itself: each ending (a client CLOSE, an
EOF, a failure) is finished by one method of the task path, wherever it was
seen.  On resuming, the backend -> client task starts before anything is
written to the backend: a backend that writes before it reads would
otherwise never see its bytes read, nor read ours.

One writer: every write to the client goes through
:class:`~wstrio._io.streams.sender.ClientSender`, whose lock keeps frames
whole.  A write that was cancelled or failed midway marks the stream
broken, and nothing more is written to it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from typing import final

import attrs
import trio
from wsproto.frame_protocol import CloseReason

from wstrio._io.first import FirstProblem
from wstrio._io.grace import grace_scope
from wstrio._io.streams.budget import UNLIMITED, BufferBudget
from wstrio._io.streams.fastpath.handback import HandBack
from wstrio._io.streams.fastpath.hub import Hub
from wstrio._io.streams.fastpath.tunnel import tunnel_handlers
from wstrio._io.streams.pipes import BROKEN, READ_SIZE, FdPipe, pipe_for
from wstrio._io.streams.sender import ClientSender
from wstrio._io.streams.timers import TimerService
from wstrio._sansio.websocket.codec import Close, Data, Ping, Pong, TextFramer, WebSocketCodec
from wstrio._sansio.websocket.framing import Framing, FramingError, MessageSplitter

LINGER_BYTES = 1 << 20
"""What a tunnel reads and drops after a protocol error before it closes (see ``_Tunnel.close``)."""

__all__ = ["READ_SIZE", "Outcome", "TunnelSettings", "run_tunnel"]

log = logging.getLogger("wstrio.tunnel")


@final
@attrs.frozen
class TunnelSettings:
    """Timers of one tunnel (seconds; 0 disables the optional ones)."""

    max_read_idle: float = 60.0
    max_write_idle: float = 360.0
    ping_interval: float = 0.0
    pong_timeout: float = 0.0
    backend_read_timeout: float = 0.0
    backend_write_timeout: float = 0.0
    close_timeout: float = 5.0
    shutdown_timeout: float = 30.0
    max_lifetime: float = 0.0
    """``max-tunnel-lifetime``: at this age the tunnel gets CLOSE 1001 (0 = none)."""
    framing: Framing | None = None
    """Message framing to the backend (``None``: ``stream``, bytes as they come; the hub's case)."""
    backend_ended: Callable[[], Awaitable[tuple[int, str]]] | None = None
    """The close code and reason when the backend ends its output (default 1001); a ``process``
    route's: 1000 if the program exited with 0, else 1011."""


@final
@attrs.frozen
class Outcome:
    """How a tunnel ended.

    ``code`` is the close code sent to the client, or ``None`` when no close
    frame could be sent (the client vanished or stopped reading).
    """

    code: int | None
    reason: str
    by: str
    """``client``, ``backend``, ``protocol``, ``idle``, ``ping``, ``lifetime``, ``shutdown``,
    or ``fault`` (the hub failed for this tunnel)."""
    bytes_from_client: int = attrs.field(default=0, eq=False)
    """Payload bytes written to the backend (set when :func:`run_tunnel` returns)."""
    bytes_to_client: int = attrs.field(default=0, eq=False)
    """Bytes written to the client, framing included (set when :func:`run_tunnel` returns)."""
    received_code: int | None = attrs.field(default=None, eq=False)
    """The code of the client's CLOSE (1005: it sent none), ``None`` if it sent no CLOSE."""


@final
class _Tunnel:
    def __init__(
        self,
        client: trio.abc.Stream,
        backend: trio.abc.Stream,
        codec: WebSocketCodec,
        settings: TunnelSettings,
        budget: BufferBudget = UNLIMITED,
    ) -> None:
        self.budget = budget
        self.client = pipe_for(client, budget)
        self.backend = pipe_for(backend, budget)
        self.codec = codec
        self.settings = settings
        self.sender = ClientSender(self.client)
        self.ending: FirstProblem[Outcome] = FirstProblem()
        self.pong: trio.Event | None = None  # created by the pinger
        self.bytes_to_backend = 0
        self.received_code: int | None = None
        self.client_eof = False
        self.tasks_started = False
        now = trio.current_time()
        self.born = now
        # Timestamps read by the watchdog (one timer per tunnel instead of a
        # cancel scope around every read and write).
        self.last_client_read = now
        self.last_backend_read = now
        self.backend_write_started: float | None = None
        framing = settings.framing
        self.splitter = framing.splitter(not codec.binary) if framing is not None else None
        self.framer = None if codec.binary or framing is not None else TextFramer()

    @property
    def outcome(self) -> Outcome | None:
        return self.ending.problem

    def finish(self, code: int | None, reason: str, by: str) -> None:
        """Record how the tunnel ends (the first call wins) and stop its tasks."""
        self.ending.report(Outcome(code, reason, by))

    def check_timers(self, now: float) -> float | None:
        """End the tunnel if a timer expired (return None); else return the next deadline.

        Backpressure is not idleness: a peer counts as silent only while
        wstrio is reading it.  While the client -> backend pump waits on a
        write to the backend, the client is not read, so its silence is not
        counted (and counts again from the write's last progress); the same
        for the backend while a write to the client waits.  A write that
        makes progress is activity: the write timers run from its last
        progress, not its start.  A write to the backend that makes no
        progress for the backend's ``write-timeout`` (else ``max-write-idle``)
        ends the tunnel, as a stalled write to the client does.
        """
        s = self.settings
        deadline = math.inf
        what = "idle"
        backend_started = self.backend_write_started
        client_started = self.sender.write_started
        if backend_started is None and s.max_read_idle:
            deadline = max(self.last_client_read, self.backend.progress) + s.max_read_idle
        if s.backend_read_timeout and client_started is None:
            d = max(self.last_backend_read, self.client.progress) + s.backend_read_timeout
            if d < deadline:
                deadline, what = d, "backend read"
        if client_started is not None and s.max_write_idle:
            d = max(client_started, self.client.progress) + s.max_write_idle
            if d < deadline:
                deadline, what = d, "client write"
        backend_write_limit = s.backend_write_timeout or s.max_write_idle
        if backend_started is not None and backend_write_limit:
            d = max(backend_started, self.backend.progress) + backend_write_limit
            if d < deadline:
                deadline, what = d, "backend write"
        if s.max_lifetime and self.born + s.max_lifetime < deadline:
            deadline, what = self.born + s.max_lifetime, "lifetime"
        if now < deadline:
            return deadline
        if what == "idle":
            self.finish(CloseReason.GOING_AWAY, "idle timeout", "idle")
        elif what == "lifetime":
            self.finish(CloseReason.GOING_AWAY, f"max-tunnel-lifetime of {s.max_lifetime:g} s reached", "lifetime")
        elif what == "client write":
            self.sender.broken = True
            self.finish(None, "client stopped reading (max-write-idle)", "client")
        else:
            self.finish(CloseReason.INTERNAL_ERROR, f"{what} timeout", "backend")
        return None

    async def watchdog(self) -> None:
        """Enforce the timers precisely (used when there is no :class:`TimerService`)."""
        s = self.settings
        # A write may start after we went to sleep: wake at least this often.
        poll = min(s.max_write_idle or math.inf, s.backend_write_timeout or math.inf, 5.0)
        while True:
            now = trio.current_time()
            deadline = self.check_timers(now)
            if deadline is None:
                return
            await trio.sleep_until(min(deadline, now + poll))

    # -- the body of the nursery ----------------------------------------------

    async def run(self, nursery: trio.Nursery, hub: Hub | None) -> None:
        """The tunnel's life: in the hub while it may, then on its tasks."""
        if hub is not None and self.can_use_hub(hub):
            handback = await self.visit(hub)
            if not await self.take_back(handback, nursery):
                return
        self.start_tasks(nursery)
        # The client -> backend pump runs in this task, the nursery's
        # body: one task fewer per tunnel (memory per idle tunnel).
        await self.client_to_backend()

    def start_tasks(self, nursery: trio.Nursery) -> None:
        if self.tasks_started:
            return
        self.tasks_started = True
        nursery.start_soon(self.backend_to_client)
        if self.settings.ping_interval > 0:
            nursery.start_soon(self.pinger)

    # -- the hub (see wstrio._io.streams.fastpath) -----------------------------

    def can_use_hub(self, hub: Hub) -> bool:
        return (
            hub.available
            and isinstance(self.client, FdPipe)
            and isinstance(self.backend, FdPipe)
            and self.settings.ping_interval <= 0
            and self.settings.framing is None
        )

    async def visit(self, hub: Hub) -> HandBack:
        """Let the hub move the data until it hands the tunnel back."""
        assert isinstance(self.client, FdPipe)
        assert isinstance(self.backend, FdPipe)
        cfd, bfd = self.client.fd, self.backend.fd
        forward, on_client, on_backend = tunnel_handlers(self, cfd, bfd)
        handback = forward()  # bytes pipelined behind the handshake
        if handback is None:
            handback = await hub.enter(cfd, bfd, on_client, on_backend)
        return handback

    async def take_back(self, handback: HandBack, nursery: trio.Nursery) -> bool:
        """Resume or end the tunnel as the hub left it; True if the tasks go on."""
        why = handback.why
        if why == "fault":
            self.finish(CloseReason.INTERNAL_ERROR, "internal error in the hub", "fault")
            return False
        if why == "client_read_failed":
            self._client_lost()
            return False
        if why == "client_write_failed":
            self._client_gone()
            return False
        if why == "backend_read_failed":
            self._backend_failed("read", handback.error)
            return False
        if why == "backend_write_failed":
            self._backend_failed("write", handback.error)
            return False
        if why == "backend_eof":
            await self._backend_ended()
            return False
        # "blocked", "events" or "client_eof": the tunnel goes on.
        if handback.to_client:
            self.sender.resume_with(handback.to_client)
        if handback.to_backend:
            # Start reading the backend before writing to it (see the module
            # docstring: no deadlock with a backend that writes first).
            self.start_tasks(nursery)
            if not await self._to_backend(handback.to_backend):
                return False
        if handback.events and not await self._handle(handback.events):
            return False
        if why == "client_eof":
            self.start_tasks(nursery)
            await self._client_ended()
        return True

    # -- endings: each one finished here, wherever it was seen ----------------

    def _client_lost(self) -> None:
        self.sender.broken = True
        self.finish(None, "client connection lost", "client")

    def _client_gone(self) -> None:
        self.sender.broken = True
        self.finish(None, "client gone", "client")

    def _backend_failed(self, what: str, exc: BaseException | None) -> None:
        log.info("backend %s failed: %r", what, exc)
        self.finish(CloseReason.INTERNAL_ERROR, f"backend {what} failed", "backend")

    async def _client_closed(self) -> None:
        """The client's CLOSE, with everything it sent before it written."""
        # Now the backend sees EOF (lighttpd loses data that arrives in the
        # same read as the CLOSE); the reply goes out in close().
        await self._backend_eof()
        self.finish(CloseReason.NORMAL_CLOSURE, "", "client")

    async def _client_ended(self) -> None:
        """TCP half-close without a CLOSE frame: pass the EOF on, and let the
        backend finish; it closing ends the tunnel (1001), or the idle timeout does."""
        self.client_eof = True
        await self._backend_eof()
        await trio.sleep_forever()

    async def _backend_ended(self) -> None:
        """Backend EOF: the data first, then 1001 (or what ``backend_ended`` says)."""
        if self.framer is not None and (tail := self.framer.flush()):
            await self.sender.send(self.codec.data(tail))
        if self.splitter is not None and (rest := self.splitter.flush()) is not None:
            await self.sender.send(self.codec.data(rest))
        code: int = CloseReason.GOING_AWAY
        reason = ""
        if self.settings.backend_ended is not None:
            code, reason = await self.settings.backend_ended()
        self.finish(code, reason, "backend")

    # -- the tasks ------------------------------------------------------------

    async def _to_backend(self, data: bytes) -> bool:
        self.backend_write_started = trio.current_time()
        try:
            await self.backend.send_all(data)
        except BROKEN as exc:
            self._backend_failed("write", exc)
            return False
        finally:
            self.backend_write_started = None
        self.bytes_to_backend += len(data)
        return True

    async def _backend_eof(self) -> None:
        try:
            await self.backend.send_eof()
        except BROKEN:
            pass

    async def client_to_backend(self) -> None:
        codec = self.codec
        # Bytes pipelined behind the handshake were fed to the codec already.
        if not await self._handle(codec.events()):
            return
        receive = self.client.receive
        while True:
            try:
                data = await receive()
            except BROKEN:
                self._client_lost()
                return
            self.last_client_read = trio.current_time()
            if not data:
                await self._client_ended()
            codec.receive_data(data)
            # One buffer per direction: what the codec made of the read is
            # all a write that waits holds, not the read as well.
            data = b""
            if not await self._handle(codec.events()):
                return

    async def _handle(self, events: Iterable[Data | Ping | Pong | Close]) -> bool:
        for event in events:
            if isinstance(event, Data):
                if not await self._to_backend(event.data):
                    return False
            elif isinstance(event, Ping):
                await self.sender.send(self.codec.pong(event.payload))
            elif isinstance(event, Pong):
                if self.pong is not None:
                    self.pong.set()
            elif isinstance(event, Close):
                if not event.error:
                    self.received_code = event.code
                if event.error:
                    self.finish(event.code, event.reason, "protocol")
                else:
                    await self._client_closed()
                return False
        return True

    async def backend_to_client(self) -> None:
        if self.splitter is not None:
            await self._messages_to_client(self.splitter)
            return
        codec = self.codec
        framer = self.framer
        receive = self.backend.receive
        send = self.sender.send
        if not await self.sender.flush():  # the rest of a frame the hub half-wrote
            self._client_gone()
            return
        while True:
            try:
                data = await receive()
            except BROKEN as exc:
                self._backend_failed("read", exc)
                return
            self.last_backend_read = trio.current_time()
            if not data:
                await self._backend_ended()
                return
            if framer is not None:
                data = framer.feed(data)
                if not data:
                    continue
            # The frame replaces the read (one buffer held while it waits).
            data = codec.data(data)
            if not await send(data):
                self._client_gone()
                return

    async def _messages_to_client(self, splitter: MessageSplitter) -> None:
        """backend_to_client with a ``framing``: each backend message is one WebSocket message."""
        codec = self.codec
        receive = self.backend.receive
        send = self.sender.send
        framing = self.settings.framing
        assert framing is not None
        flush_after = framing.flush_timeout
        if not await self.sender.flush():
            self._client_gone()
            return
        while True:
            try:
                if flush_after and splitter.pending:
                    data = None
                    with trio.move_on_after(flush_after):
                        data = await receive()
                    if data is None:  # a partial line waited flush-timeout: send it as it is
                        rest = splitter.flush()
                        if rest is not None and not await send(codec.data(rest)):
                            self._client_gone()
                            return
                        continue
                else:
                    data = await receive()
            except BROKEN as exc:
                self._backend_failed("read", exc)
                return
            self.last_backend_read = trio.current_time()
            if not data:
                await self._backend_ended()
                return
            try:
                messages = splitter.feed(data)
            except FramingError as exc:
                self.finish(CloseReason.INTERNAL_ERROR, str(exc), "backend")
                return
            for message in messages:
                if not await send(codec.data(message)):
                    self._client_gone()
                    return

    async def pinger(self) -> None:
        interval = self.settings.ping_interval
        pong_timeout = self.settings.pong_timeout or interval
        while True:
            await trio.sleep(interval)
            self.pong = pong = trio.Event()
            # One deadline for writing the PING and getting the PONG: a PING
            # that cannot be written (the client reads nothing, so a data
            # write holds the socket) is a missed pong too, found within
            # pong-timeout, not only by max-write-idle.
            written = False
            with trio.move_on_after(pong_timeout):
                if not await self.sender.send(self.codec.ping(b"ping")):
                    self._client_gone()
                    return
                written = True
                await pong.wait()
                continue
            why = "no pong within pong-timeout"
            if not written:
                why += " (the PING could not be written: the client is not reading)"
            self.finish(CloseReason.INTERNAL_ERROR, why, "ping")
            return

    async def close(self, shutdown: bool) -> None:
        """Send the close frame and wait, bounded, for the client's CLOSE."""
        outcome = self.outcome
        assert outcome is not None
        if outcome.code is None or self.sender.broken:
            return
        timeout = self.settings.shutdown_timeout if shutdown else self.settings.close_timeout
        with grace_scope(timeout):
            if not self.codec.close_sent:
                if not await self.sender.send(self.codec.close(outcome.code, outcome.reason)):
                    return
            if self.codec.closed_by_client or self.client_eof:
                return
            if outcome.by == "protocol":
                # After a protocol error, RFC 6455 section 7.1.7: send CLOSE,
                # then stop processing the client's data (even its CLOSE).
                # It is still read and dropped, bounded (a lingering close):
                # closing with it unread would make the kernel reset the
                # connection, and the reset can destroy the CLOSE just sent.
                await self._drain(LINGER_BYTES)
                return
            # Read (and drop) until the client's CLOSE or EOF.
            while True:
                try:
                    data = await self.client.receive()
                except BROKEN:
                    return
                if not data:
                    return
                self.codec.receive_data(data)
                if any(isinstance(e, Close) for e in self.codec.events()):
                    return

    async def _drain(self, limit: int) -> None:
        """Read and drop what the client sends, up to ``limit`` bytes or its EOF."""
        while limit > 0:
            try:
                data = await self.client.receive()
            except BROKEN:
                return
            if not data:
                return
            limit -= len(data)


async def run_tunnel(
    client: trio.abc.Stream,
    backend: trio.abc.Stream,
    codec: WebSocketCodec,
    settings: TunnelSettings,
    timers: TimerService | None = None,
    hub: Hub | None = None,
    budget: BufferBudget = UNLIMITED,
) -> Outcome:
    """Relay between a WebSocket client and a backend until either side ends.

    Args:
        client: the client's stream, after the handshake (bytes the client
            pipelined behind the handshake must already be fed to ``codec``).
        backend: the backend's byte stream.
        codec: the client's WebSocket codec.
        settings: timers.
        timers: the server's :class:`~wstrio._io.streams.timers.TimerService`;
            without one, the tunnel runs its own watchdog task (exact to the
            deadline).
        hub: the server's :class:`~wstrio._io.streams.fastpath.hub.Hub`; plain-socket tunnels
            without pings start there and come back to their tasks at the
            first event that is not plain data.
        budget: the server's :class:`~wstrio._io.streams.budget.BufferBudget`
            (what waiting writes hold, and the read size).

    Returns:
        how the tunnel ended.  Neither stream is closed: the caller owns them.

    Cancellation: when cancelled from outside (server shutdown) the client
    gets CLOSE 1001, bounded by ``settings.shutdown_timeout``, and then
    :class:`trio.Cancelled` propagates.
    """
    tunnel = _Tunnel(client, backend, codec, settings, budget)
    shutdown = True
    try:
        async with trio.open_nursery() as nursery:
            tunnel.ending.attach(nursery.cancel_scope)
            if timers is None:
                nursery.start_soon(tunnel.watchdog)
            else:
                timers.add(tunnel)
            await tunnel.run(nursery, hub)
            # Ended without the tasks (in the hub, or as it handed back):
            # stop the watchdog, if any.  (A task that ended the tunnel has
            # cancelled the nursery already.)
            nursery.cancel_scope.cancel()
        shutdown = False
    finally:
        if timers is not None:
            timers.discard(tunnel)
        if tunnel.outcome is None:
            tunnel.finish(CloseReason.GOING_AWAY, "server shutting down", "shutdown")
        await tunnel.close(shutdown)
    outcome = tunnel.outcome
    assert outcome is not None
    return attrs.evolve(
        outcome,
        bytes_from_client=tunnel.bytes_to_backend,
        bytes_to_client=tunnel.sender.bytes_sent,
        received_code=tunnel.received_code,
    )
