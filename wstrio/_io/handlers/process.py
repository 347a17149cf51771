"""``handler = "process"``: one program per WebSocket, its standard input and output bridged (websocketd).

For each accepted WebSocket handshake (origins and limits checked first,
``max-processes`` too: 503 before the 101 above it) the route's ``command``
starts in its own process group, with a CGI-like environment.  Its
standard input and output are one end of a socket pair (a pseudo-terminal
with ``pty = true``), so the tunnel is an ordinary wstunnel tunnel with
``framing = "lines"`` by default: each message from the client is written
with a newline after it, each line the program writes is one message.

The WebSocket ends when the program closes its output (it exited): CLOSE
1000 if it exited with status 0, 1011 otherwise.  When the client leaves
first, the program's group gets SIGTERM, and SIGKILL after ``kill-grace``
seconds.  The server's keeper kills the group if wstrio itself dies.

Standard error (``stderr``): ``log`` sends each line to wstrio's log
(``wstrio.process``, at INFO, with the pid), ``client`` makes it the same
socket as the output (lines go to the client as messages, interleaved as
the program writes them), ``discard`` drops it.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import subprocess
import tty
from collections.abc import Mapping
from typing import TYPE_CHECKING

import attrs
import trio

from wstrio._config import Route, ServerConfig
from wstrio._errors import HandshakeRejected
from wstrio._io.backends.process import SpawnedProcess
from wstrio._io.http.exchange import Exchange, send_simple
from wstrio._io.route_tunnels import log_tunnel_end, route_codec, tunnel_settings
from wstrio._io.streams.pipes import close_stream
from wstrio._io.streams.tunnel import run_tunnel
from wstrio._sansio.cgi.environ import build_cgi_environ
from wstrio._sansio.http.request import Request
from wstrio._sansio.limits import BUSY_RETRY_AFTER
from wstrio._sansio.websocket.handshake import accept_headers, check_websocket
from wstrio._version import __version__

if TYPE_CHECKING:
    from wstrio._io.context import RouteMatch, ServerContext

__all__ = ["handle", "process_environment"]

log = logging.getLogger("wstrio.process")

SERVER_SOFTWARE = f"wstrio/{__version__}"
_LINE = 4096
"""Bytes of one logged stderr line (longer lines are cut)."""
_EXIT_WAIT = 2.0
"""Seconds a program that closed its output has to exit before the close code is chosen without its status."""
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def process_environment(
    request: Request, route: Route, config: ServerConfig, parent: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """The program's environment: websocketd's (CGI/1.1 variables, ``HTTP_*``) and the route's.

    ``PATH`` (wstrio's, else a default), ``LANG``/``LC_ALL``/``TZ`` when set,
    ``PYTHONUNBUFFERED=1``, then ``bin-copy-environment`` from wstrio's
    environment and ``bin-environment`` (which wins).
    """
    # SCRIPT_NAME is the route's path without its final "/" (empty for "/"); PATH_INFO what follows.
    script_name, path_info = request.path, ""
    if route.path is not None:
        base = route.path.rstrip("/")
        if request.path.startswith(base):
            script_name, path_info = base, request.path[len(base) :]
    environ = build_cgi_environ(
        request,
        script_name=script_name,
        path_info=path_info,
        script_filename=route.command[0] if route.command else None,
        document_root=str(config.document_root) if config.document_root is not None else None,
        server_software=SERVER_SOFTWARE,
        content_length=None,
    )
    environ.pop("CONTENT_LENGTH", None)
    environ.pop("REDIRECT_STATUS", None)
    environ["PATH"] = parent.get("PATH", _DEFAULT_PATH)
    for name in ("LANG", "LC_ALL", "TZ", "HOME"):
        if name in parent:
            environ[name] = parent[name]
    environ["PYTHONUNBUFFERED"] = "1"
    for name in route.bin_copy_environment:
        if name in parent:
            environ[name] = parent[name]
    environ.update(route.bin_environment)
    return environ


@attrs.define(eq=False)
class _PtyStream(trio.abc.Stream):
    """A pseudo-terminal's master side: EIO after the program closed the slave is the end (EOF)."""

    fd_stream: trio.lowlevel.FdStream

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.fd_stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.fd_stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        try:
            return await self.fd_stream.receive_some(max_bytes)
        except trio.BrokenResourceError as exc:
            if isinstance(exc.__cause__, OSError) and exc.__cause__.errno == errno.EIO:
                return b""
            raise

    async def aclose(self) -> None:
        await self.fd_stream.aclose()


@attrs.define(eq=False)
class _Started:
    process: SpawnedProcess
    stream: trio.abc.Stream
    stderr: trio.lowlevel.FdStream | None


def _spawn(route: Route, environ: dict[str, str], ctx: ServerContext) -> _Started:
    """Start the route's program.

    Raises:
        OSError: it cannot be started (the message names it).
    """
    stderr_target: int | None
    ours: socket.socket | None = None
    master: int | None = None
    if route.pty:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no CR/LF translation: bytes as they are
        child_out = slave
    else:
        ours, theirs = socket.socketpair()
        child_out = theirs.detach()
    child_fds = [child_out]
    stderr_read: int | None = None
    if route.stderr == "client":
        stderr_target = child_out
    elif route.stderr == "discard":
        stderr_target = subprocess.DEVNULL
    else:
        stderr_read, stderr_write = os.pipe()
        stderr_target = stderr_write
        child_fds.append(stderr_write)
    try:
        popen = subprocess.Popen(
            list(route.command),
            stdin=child_out,
            stdout=child_out,
            stderr=stderr_target,
            cwd=str(route.working_directory) if route.working_directory is not None else None,
            env=environ,
            close_fds=True,
            process_group=0,
            # No preexec_fn (PR_SET_PDEATHSIG): it would force a fork of the whole server per connection
            # instead of vfork, halving the handshake rate; the keeper kills the group if wstrio dies, as for CGI.
            restore_signals=True,
        )
    except OSError as exc:
        for fd in (stderr_read, master):
            if fd is not None:
                os.close(fd)
        if ours is not None:
            ours.close()
        reason = exc.strerror or str(exc)
        if exc.errno == errno.EACCES:
            reason += " (is it executable? chmod +x)"
        msg = f"cannot start {route.command[0]!r}: {reason}"
        raise OSError(exc.errno, msg) from exc
    finally:
        for fd in child_fds:
            os.close(fd)
    process = SpawnedProcess(popen, None, signal.SIGTERM, ctx.keeper)
    parent_end: trio.abc.Stream
    if ours is not None:
        ours.setblocking(False)
        parent_end = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
    else:
        assert master is not None
        parent_end = _PtyStream(trio.lowlevel.FdStream(master))
    stderr = trio.lowlevel.FdStream(stderr_read) if stderr_read is not None else None
    return _Started(process, parent_end, stderr)


async def _log_stderr(stream: trio.lowlevel.FdStream, pid: int, route: str) -> None:
    pending = b""
    try:
        while data := await stream.receive_some(65536):
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                log.info("%s pid %d: %s", route, pid, line[:_LINE].decode("utf-8", "replace").rstrip("\r"))
            if len(pending) > _LINE:
                log.info("%s pid %d: %s", route, pid, pending[:_LINE].decode("utf-8", "replace"))
                pending = b""
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        if pending:
            log.info("%s pid %d: %s", route, pid, pending[:_LINE].decode("utf-8", "replace"))
        await stream.aclose()


async def handle(exchange: Exchange, match: RouteMatch, ctx: ServerContext) -> None:
    """Answer a WebSocket handshake on a process route: start the program and bridge it.

    Error handling: a refused handshake gets its status (400, 403, 426),
    ``max-processes`` programs running 503, a program that cannot be started
    500; the tunnel's end (and the program's exit status) is noted in the
    access log.  Only :class:`~wstrio._errors.ClientGone` propagates.
    """
    request = exchange.request
    route, config = match.route, ctx.config
    try:
        accept = check_websocket(request, route)
    except HandshakeRejected as exc:
        log.info("%s %s: handshake refused (%d): %s", request.method, request.path, exc.status, exc)
        exchange.set_log_note(str(exc))
        await send_simple(exchange, exc.status, headers=exc.headers)
        return
    state = match.state
    if route.max_processes and state.processes >= route.max_processes:
        why = f"route {match.index}'s max-processes ({route.max_processes}) programs are running"
        log.info("%s: refused (503): %s", request.path, why)
        exchange.set_log_note(why)
        await send_simple(exchange, 503, headers=[(b"retry-after", str(BUSY_RETRY_AFTER).encode())])
        return
    try:
        started = _spawn(route, process_environment(request, route, config), ctx)
    except OSError as exc:
        log.error("%s: %s", request.path, exc)
        exchange.set_log_note(str(exc))
        await send_simple(exchange, 500)
        return
    process = started.process
    state.processes += 1
    exchange.set_log_fields(backend=f"pid {process.pid}")
    started_at = trio.current_time()
    try:
        async with trio.open_nursery() as nursery:
            if started.stderr is not None:
                nursery.start_soon(_log_stderr, started.stderr, process.pid, route.describe())
            upgraded = await exchange.upgrade(accept_headers(accept, h2=request.h2))

            async def program_ended() -> tuple[int, str]:
                with trio.move_on_after(_EXIT_WAIT):
                    status = await process.wait()
                    if status == 0:
                        return 1000, ""
                    return 1011, f"the program exited with status {status}"
                return 1000, "the program closed its output"

            codec = route_codec(route, binary=accept.binary, leftover=upgraded.leftover)
            settings = attrs.evolve(tunnel_settings(config, route, 0.0, 0.0), backend_ended=program_ended)
            try:
                outcome = await run_tunnel(
                    upgraded.stream, started.stream, codec, settings, ctx.timers, ctx.hub, ctx.budget
                )
            finally:
                status = await process.stop(route.kill_grace)
                nursery.cancel_scope.cancel()
            log_tunnel_end(exchange, outcome, codec, f"program pid {process.pid} exited {status};", started_at)
    finally:
        state.processes -= 1
        with trio.CancelScope(shield=True):
            if process.returncode is None and not process.exited():
                await process.stop(route.kill_grace)
        await close_stream(started.stream)
