"""The raw byte relay after a protocol switch (proxy, and CGI/SCGI pass-through).

Theory of operation
-------------------
:func:`relay` runs one nursery with two sibling tasks, one per direction.
Each reads up to 64 KiB (:data:`wstrio._io.streams.pipes.READ_SIZE`) from its source and writes them,
unchanged and uncopied, to its destination before reading again, so a slow
reader on either side stops reads from the other (backpressure: at most one
chunk per direction is held in memory, plus the kernel's socket buffers).
Nothing is parsed: the relay never sees WebSocket frames, and any protocol
the two ends agreed on passes.

Endings:

* **EOF** from one side: the other side is half-closed
  (:meth:`~trio.abc.HalfCloseableStream.send_eof`), and the other direction
  runs on until it reaches EOF too; then the relay returns.  A destination
  that cannot be half-closed (TLS, for one) cannot be told about the EOF,
  so the relay ends there and the caller closes both streams.
* **An error** on either side (a broken stream, a write stalled for
  ``max_write_idle``) ends both directions at once.  When the *backend's*
  connection broke (a read or a write failed: a reset, say), the client's is reset too when it is a
  TCP socket (``SO_LINGER`` 0, so its owner's close sends RST): a clean EOF
  would tell the client the stream ended whole when data was lost.
* **Idle**: when no byte moved in *either* direction for ``max_read_idle``
  seconds the relay ends.  lighttpd counts only the client's silence; a
  backend that streams to a quiet client would then be cut off, so wstrio
  counts both (reference section 13, "make idle bidirectional").  A write
  that waits for a slow reader is not idleness (backpressure): while one is
  in progress nothing is idle, and a write's progress is activity; only a
  write that makes no progress at all for ``max_write_idle`` ends the relay.

Per chunk the relay does one read, one write and two clock reads; nothing
per message.  Between two plain sockets with no leftovers, the relay starts
in the server's hub (:mod:`wstrio._io.streams.fastpath.hub`, handlers in
:mod:`wstrio._io.streams.fastpath.relay`), which copies without a task
switch until the first EOF, error or full socket, and hands back one
:class:`~wstrio._io.streams.fastpath.handback.HandBack`; the pumps then
start with what it left (bytes not yet written, an EOF already read).
Plain sockets go through :mod:`wstrio._io.streams.pipes`'s file
descriptor fast path, and one watchdog task checks the idle and write
deadlines from timestamps (no cancel scope per operation).

Neither stream is closed here: their owners (the HTTP layer for the client,
the backend lease for the backend) close them.
"""

from __future__ import annotations

import math
from typing import Literal, final

import attrs
import trio

from wstrio._io.first import FirstProblem
from wstrio._io.streams.budget import UNLIMITED, BufferBudget
from wstrio._io.streams.fastpath.handback import HandBack
from wstrio._io.streams.fastpath.hub import Hub
from wstrio._io.streams.fastpath.relay import relay_handlers
from wstrio._io.streams.pipes import BROKEN, FdPipe, Pipe, pipe_for, reset_on_close

__all__ = ["RelayOutcome", "relay"]


Side = Literal["client", "backend"]


@final
@attrs.frozen
class RelayOutcome:
    """How a relay ended."""

    bytes_to_backend: int
    """Bytes written to the backend (including the client's leftover)."""
    bytes_to_client: int
    """Bytes written to the client (including the backend's leftover)."""
    first_eof: Side | None
    """The side that closed its sending half first, or ``None``."""
    error: str | None
    """Why the relay was cut short (an error, a stall, idleness), or ``None``
    for an orderly end."""

    def log_fields(self) -> dict[str, object]:
        """The JSON access-log keys of a relayed upgrade (bytes only: a relay sees no messages)."""
        return {
            "close_code": None,
            "closed_by": self.first_eof if self.error is None else "error",
            "close_reason": self.error,
            "bytes_from_client": self.bytes_to_backend,
            "bytes_to_client": self.bytes_to_client,
        }

    def describe(self) -> str:
        """A one-line summary for the access log."""
        how = self.error if self.error is not None else f"closed by {self.first_eof or 'both'}"
        return f"{how}; {self.bytes_to_backend} bytes up, {self.bytes_to_client} down"


# Which direction a failed operation of the hub belongs to.
_DIRECTION = {
    "client_read_failed": "client -> backend",
    "backend_write_failed": "client -> backend",
    "backend_read_failed": "backend -> client",
    "client_write_failed": "backend -> client",
}


@final
class _Relay:
    def __init__(
        self, max_read_idle: float, max_write_idle: float, max_lifetime: float = 0.0, budget: BufferBudget = UNLIMITED
    ) -> None:
        self.budget = budget
        self.idle = max_read_idle or math.inf
        self.write_idle = max_write_idle or math.inf
        self.lifetime = max_lifetime or math.inf
        self.born = trio.current_time()
        self.last_activity = trio.current_time()
        self.written: dict[Side, int] = {"client": 0, "backend": 0}
        # When the write to each side started, while one is in progress.
        self.writing: dict[Side, float | None] = {"client": None, "backend": None}
        self.first_eof: Side | None = None
        self.error: FirstProblem[str] = FirstProblem(trio.CancelScope())
        self.watchdog_scope = trio.CancelScope()
        self.pumps = 2
        self.pipes: dict[Side, Pipe] = {}
        """Each side's pipe (its write progress is activity); set by :func:`relay`."""
        self.backend_broke = False
        """The backend connection broke (a read or write failed): the client must not see a clean end."""

    @property
    def scope(self) -> trio.CancelScope:
        assert self.error.scope is not None
        return self.error.scope

    def fail(self, reason: str) -> None:
        self.error.report(reason)

    async def watchdog(self) -> None:
        """Idleness and stalled writes, checked from timestamps (no cancel scope per operation)."""
        with self.watchdog_scope:
            await self._watch()

    async def _watch(self) -> None:
        poll = min(self.write_idle, self.idle, 5.0)
        while True:
            now = trio.current_time()
            if now >= self.born + self.lifetime:
                self.fail(f"max-tunnel-lifetime of {self.lifetime:g} s reached")
                return
            writing = [side for side, started in self.writing.items() if started is not None]
            # Nothing is idle while a write waits for its reader (backpressure).
            deadline = math.inf
            if not writing:
                last = max(self.last_activity, *(pipe.progress for pipe in self.pipes.values()))
                if now >= last + self.idle:
                    self.fail(f"no data in either direction for {self.idle:g} s")
                    return
                deadline = last + self.idle
            for side in writing:
                started = self.writing[side]
                assert started is not None
                since = max(started, self.pipes[side].progress)
                if now >= since + self.write_idle:
                    self.fail(f"writing to the {side} made no progress for {self.write_idle:g} s")
                    return
                deadline = min(deadline, since + self.write_idle)
            await trio.sleep_until(min(deadline, self.born + self.lifetime, now + poll))

    def outcome(self) -> RelayOutcome:
        return RelayOutcome(
            bytes_to_backend=self.written["backend"],
            bytes_to_client=self.written["client"],
            first_eof=self.first_eof,
            error=self.error.problem,
        )

    async def visit(self, hub: Hub, client: FdPipe, backend: FdPipe) -> HandBack:
        """Let the hub copy bytes until something unusual happens."""
        on_client, on_backend = relay_handlers(self, client.fd, backend.fd)
        return await hub.enter(client.fd, backend.fd, on_client, on_backend)

    def take_back(self, handback: HandBack) -> bool:
        """End the relay if the hub's hand-back says so; True if the pumps go on."""
        why = handback.why
        if why == "fault":
            self.fail("internal error in the relay's fast path")
            return False
        if why in _DIRECTION:
            if why in ("backend_read_failed", "backend_write_failed"):
                self.backend_broke = True
            self.fail(f"{_DIRECTION[why]}: {handback.error!r}")
            return False
        return True

    # -- the pumps ------------------------------------------------------------

    async def pump(
        self, source: Side, src: Pipe, target: Side, dst: Pipe, pending: bytes | bytearray, eof: bool = False
    ) -> None:
        try:
            await self._pump(source, src, target, dst, pending, eof)
        finally:
            self.pumps -= 1
            if not self.pumps:
                self.watchdog_scope.cancel()  # both directions are done

    async def _pump(
        self, source: Side, src: Pipe, target: Side, dst: Pipe, pending: bytes | bytearray, eof: bool
    ) -> None:
        written = 0
        try:
            while True:
                if pending:
                    self.writing[target] = trio.current_time()
                    try:
                        await dst.send_all(pending)
                    except BROKEN:
                        if target == "backend":
                            self.backend_broke = True
                        raise
                    self.writing[target] = None
                    written += len(pending)
                if eof:  # the source's EOF was already read (by the hub)
                    break
                try:
                    pending = await src.receive()
                except BROKEN:
                    if source == "backend":
                        self.backend_broke = True
                    raise
                if not pending:
                    break
                self.last_activity = trio.current_time()
        except BROKEN as exc:
            self.fail(f"{source} -> {target}: {exc!r}")
            return
        finally:
            self.written[target] += written
        if self.backend_broke or self.error.problem is not None:
            # The other direction failed first (a socket's error is reported
            # once: to that write, and this read saw a plain EOF): not an end.
            return
        if self.first_eof is None:
            self.first_eof = source
        if not isinstance(dst.stream, trio.abc.HalfCloseableStream):
            # No way to pass the EOF on alone: end the relay; the owners
            # close both streams.
            self.error.stop()
            return
        try:
            await dst.send_eof()
        except BROKEN:
            if target == "client":
                # The client left first (a browser closing its tab while the
                # backend closes too): a normal end, not a failure.
                self.error.stop()
            else:
                self.fail("the backend had gone before the client's EOF could be passed on")


async def relay(
    client: trio.abc.Stream,
    client_leftover: bytes,
    backend: trio.abc.Stream,
    backend_leftover: bytes,
    *,
    max_read_idle: float,
    max_write_idle: float,
    max_lifetime: float = 0.0,
    hub: Hub | None = None,
    budget: BufferBudget = UNLIMITED,
) -> RelayOutcome:
    """Copy bytes both ways between a client and a backend until both end.

    Args:
        client: the client's stream (after a protocol switch).
        client_leftover: bytes the client sent that were already read (behind
            its request); they go to the backend before anything else.
        backend: the backend's stream.
        backend_leftover: bytes the backend sent that were already read
            (behind its 101); they go to the client first.
        max_read_idle: seconds with no data in either direction before the
            relay gives up (0 = no limit).
        max_write_idle: seconds a write to either side may stall (0 = no
            limit).
        max_lifetime: seconds after which the relay ends whatever happens
            (``max-tunnel-lifetime``; 0 = no limit).
        budget: the server's :class:`~wstrio._io.streams.budget.BufferBudget`.
        hub: the server's :class:`~wstrio._io.streams.fastpath.hub.Hub`: between two plain
            sockets the bytes are copied there until the first EOF, error or
            full socket, and then by the two pump tasks.

    Returns:
        how it ended.  Neither stream is closed: the caller owns them.

    Cancellation: both directions stop at once and :class:`trio.Cancelled`
    propagates; nothing is written on the way out (there is no framing to
    close politely), so the caller's closing of the streams is the signal.

    Error handling: broken streams, stalled writes and idleness end the
    relay and are reported in :attr:`RelayOutcome.error`, never raised.
    """
    state = _Relay(max_read_idle, max_write_idle, max_lifetime, budget)
    client_pipe, backend_pipe = pipe_for(client, budget), pipe_for(backend, budget)
    state.pipes = {"client": client_pipe, "backend": backend_pipe}
    with state.scope:
        async with trio.open_nursery() as nursery:
            if state.idle < math.inf or state.write_idle < math.inf or state.lifetime < math.inf:
                nursery.start_soon(state.watchdog)
            to_backend, to_client = client_leftover, backend_leftover
            client_eof = backend_eof = False
            if (
                hub is not None
                and hub.available
                and isinstance(client_pipe, FdPipe)
                and isinstance(backend_pipe, FdPipe)
                and not to_backend
                and not to_client
            ):
                handback = await state.visit(hub, client_pipe, backend_pipe)
                if not state.take_back(handback):
                    if state.backend_broke:
                        reset_on_close(client)
                    return state.outcome()
                to_backend, to_client = handback.to_backend, handback.to_client
                client_eof, backend_eof = handback.why == "client_eof", handback.why == "backend_eof"
            nursery.start_soon(state.pump, "client", client_pipe, "backend", backend_pipe, to_backend, client_eof)
            nursery.start_soon(state.pump, "backend", backend_pipe, "client", client_pipe, to_client, backend_eof)
    if state.backend_broke:
        reset_on_close(client)
    return state.outcome()
