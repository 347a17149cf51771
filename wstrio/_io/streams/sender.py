"""The one write path to a WebSocket client (house style 5: one send path per connection)."""

from __future__ import annotations

from typing import final

import trio

from wstrio._io.streams.pipes import BROKEN, Pipe

__all__ = ["ClientSender"]


@final
class ClientSender:
    """The one write path to the client.

    The lock keeps frames whole when the ping task and the data task both
    write.  It is taken without a checkpoint when free (the write itself
    is one), which matters on the hot path.  A write that was cancelled or
    failed midway marks the stream broken, and nothing more is written to it.
    """

    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe
        self.lock = trio.Lock()
        self.broken = False
        self.bytes_sent = 0
        self.write_started: float | None = None
        self._rest = b""

    def resume_with(self, rest: bytes) -> None:
        """Bytes that must go out before any other (a frame the hub half-wrote)."""
        self._rest += rest

    async def flush(self) -> bool:
        """Send what :meth:`resume_with` left, if anything; False if the client is gone."""
        if self._rest:
            return await self.send(b"")
        return not self.broken

    async def send(self, data: bytes) -> bool:
        """Send ``data`` whole; False if the client is gone."""
        if self.broken:
            return False
        try:
            self.lock.acquire_nowait()
        except trio.WouldBlock:
            await self.lock.acquire()
        if self._rest:
            data, self._rest = self._rest + data, b""
        ok = resumable = False
        try:
            self.write_started = trio.current_time()
            await self.pipe.send_all(data)
            ok = True
        except BROKEN:
            pass
        except trio.Cancelled:
            # Cancelled midway (the tunnel is ending): when the pipe knows
            # what it did not write, the stream is whole and that goes out
            # first with the next send (the CLOSE), so the frame is finished.
            unsent, self.pipe.unsent = self.pipe.unsent, None
            if unsent is not None:
                self._rest, resumable = unsent, True
                self.bytes_sent += len(data) - len(unsent)
            raise
        finally:
            self.write_started = None
            self.lock.release()
            # Failed midway, or cancelled with nothing to resume: a partial
            # frame may be on the wire, so nothing else may follow it.
            if not ok and not resumable:
                self.broken = True
        self.bytes_sent += len(data)
        return ok
