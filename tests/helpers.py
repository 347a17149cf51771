"""Shared helpers for wstrio's own tests.

* :func:`start_server` starts wstrio in a test's nursery from a config mapping
  (listening on 127.0.0.1 port 0 unless told otherwise).
* :func:`serve_echo_tcp` / :func:`serve_echo_unix` run a Trio echo backend.
* :func:`ws_client` runs a *blocking* function using the ``websockets`` sync
  client in a worker thread, so the independent client cannot share (or
  hide bugs in) our event loop.
"""

from __future__ import annotations

import functools
import inspect
import os
import re
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs
import h11
import trio
import trio.testing
from websockets.sync.client import ClientConnection, connect, unix_connect

import wstrio

T = TypeVar("T")


def make_config(data: Mapping[str, Any], base_dir: Path | None = None) -> wstrio.ServerConfig:
    """A config from a mapping; ``server.listen`` defaults to ``127.0.0.1:0``."""
    data = dict(data)
    server = dict(data.get("server", {}))
    server.setdefault("listen", ["127.0.0.1:0"])
    data["server"] = server
    return wstrio.config_from_mapping(data, base_dir=base_dir)


async def start_server(
    nursery: trio.Nursery,
    data: Mapping[str, Any] | wstrio.ServerConfig,
    base_dir: Path | None = None,
    **kwargs: Any,
) -> wstrio.Server:
    """Start wstrio in ``nursery``; returns the running :class:`wstrio.Server`."""
    config = data if isinstance(data, wstrio.ServerConfig) else make_config(data, base_dir)
    server: wstrio.Server = await nursery.start(functools.partial(wstrio.serve, config, **kwargs))
    return server


async def _echo(stream: trio.abc.Stream) -> None:
    async with stream:
        try:
            while data := await stream.receive_some(65536):
                await stream.send_all(data)
        except trio.BrokenResourceError:
            pass


async def serve_echo_tcp(nursery: trio.Nursery) -> int:
    """A TCP echo server on 127.0.0.1; returns its port."""
    listeners = await nursery.start(functools.partial(trio.serve_tcp, _echo, 0, host="127.0.0.1"))
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def serve_echo_unix(nursery: trio.Nursery, path: Path) -> Path:
    """A unix-socket echo server at ``path``."""
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen(128)
    listener = trio.SocketListener(sock)
    await nursery.start(trio.serve_listeners, _echo, [listener])
    return path


def echo_route(port: int, path: str = "/ws/", **extra: Any) -> dict[str, Any]:
    """A wstunnel route to a TCP backend on 127.0.0.1:``port``."""
    return {"path": path, "handler": "wstunnel", "backend": [{"host": "127.0.0.1", "port": port}], **extra}


async def ws_client(fn: Callable[..., T], *args: Any) -> T:
    """Run blocking ``fn(*args)`` (using ``websockets.sync.client``) in a thread."""
    return await trio.to_thread.run_sync(functools.partial(fn, *args), abandon_on_cancel=True)


# ---------------------------------------------------------------------------
# Integration tier: the websockets client, raw sockets and WebSocket frames,
# test backends, processes and the command line.
# ---------------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
"""The repository's ``examples/`` folder."""

NO_SKIP = bool(os.environ.get("WSTRIO_TEST_NO_SKIP"))
"""Set ``WSTRIO_TEST_NO_SKIP=1`` (CI does) to make a missing Chromium or perl fail the tests that need them."""


def missing_tool(path_or_name: str) -> bool:
    """True if a test needing this program should skip (never under ``WSTRIO_TEST_NO_SKIP``)."""
    import shutil

    found = os.path.exists(path_or_name) if os.sep in path_or_name else shutil.which(path_or_name) is not None
    return not found and not NO_SKIP


def loopback_clock() -> trio.testing.MockClock:
    """Trio's virtual clock, jumping only after 20 ms of real idleness.

    With pytest-trio's threshold of 0 the clock jumps whenever no task is
    runnable, even while the kernel still has loopback bytes in flight: on a
    loaded machine (softirqs deferred to ksoftirqd) a burst of such jumps made
    ``max-write-idle`` expire in the middle of a 13 MB stream (a CI failure of
    ``tests/faults/test_tunnel_faults.py``).  A real-time threshold keeps the
    virtual clock still while data moves.  Modules whose tests move data over
    real sockets on the virtual clock override ``autojump_clock`` with it.
    """
    return trio.testing.MockClock(autojump_threshold=0.02)


RAW_TIMEOUT = 10.0
"""Seconds one raw-client read may wait before the test fails (no test waits this long when passing)."""

_CONNECT_HAS_PROXY = "proxy" in inspect.signature(connect).parameters


def ws_connect(url: str, *, unix_path: Path | None = None, **kwargs: Any) -> ClientConnection:
    """``websockets.sync.client.connect`` with test defaults; use it as a context manager.

    No proxy (whatever the environment says), no size limit on received
    messages, no flow-control limit on the receive queue (a test may send
    16 MiB before it reads the echo), 10 s open and close timeouts.  With
    ``unix_path`` it connects over that unix socket (``url`` gives Host and path).
    Call it only in a function run by :func:`ws_client`.
    """
    kwargs.setdefault("open_timeout", 10)
    kwargs.setdefault("close_timeout", 10)
    kwargs.setdefault("max_size", None)
    kwargs.setdefault("max_queue", None)
    ws: ClientConnection
    if unix_path is not None:
        ws = unix_connect(str(unix_path), url, **kwargs)
    else:
        if _CONNECT_HAS_PROXY:
            kwargs.setdefault("proxy", None)
        ws = connect(url, **kwargs)
    return ws


def ws_receive_bytes(ws: ClientConnection, total: int, timeout: float = 10.0) -> list[str | bytes]:
    """Receive messages until their payloads (text as UTF-8) add up to ``total`` bytes."""
    messages: list[str | bytes] = []
    got = 0
    while got < total:
        message = ws.recv(timeout=timeout)
        messages.append(message)
        got += len(message.encode() if isinstance(message, str) else message)
    return messages


def ws_lines(url: str, lines: Sequence[str]) -> list[str]:
    """Send each line and wait for its echo (text); returns the echoes."""
    out = []
    with ws_connect(url) as ws:
        for line in lines:
            ws.send(line)
            out.append("".join(map(str, ws_receive_bytes(ws, len(line.encode())))))
    return out


def ws_backend_pid(url: str) -> int:
    """Ask a :data:`PID_ECHO_BACKEND` process, through the tunnel at ``url``, for its pid."""
    with ws_connect(url) as ws:
        ws.send("pid\n")
        text = ""
        while not text.endswith("\n"):
            text += str(ws.recv(timeout=10))
    return int(text)


OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

WS_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
"""The RFC 6455 sample key; its accept token is :data:`WS_ACCEPT`."""
WS_ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bytes = b"\x37\xfa\x21\x3d") -> bytes:
    """One masked frame as a client sends it."""
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        header = bytes((first, 0x80 | n))
    elif n < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


def client_close_frame(code: int, reason: str = "") -> bytes:
    """A masked CLOSE frame with ``code`` and ``reason``."""
    return client_frame(OP_CLOSE, struct.pack("!H", code) + reason.encode())


def handshake_request(
    path: str = "/ws/",
    *,
    host: str | None = "localhost",
    key: bytes | None = WS_KEY,
    version: bytes | None = b"13",
    headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    """A WebSocket handshake request; ``None`` leaves a header out."""
    lines = [f"GET {path} HTTP/1.1".encode()]
    if host is not None:
        lines.append(b"Host: " + host.encode())
    lines += [b"Upgrade: websocket", b"Connection: Upgrade"]
    if key is not None:
        lines.append(b"Sec-WebSocket-Key: " + key)
    if version is not None:
        lines.append(b"Sec-WebSocket-Version: " + version)
    lines += [f"{k}: {v}".encode() for k, v in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


@attrs.frozen
class RawResponse:
    """An HTTP response read by :class:`RawClient` (header names lower-cased)."""

    status: int
    reason: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes = b""

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower-case), or ``None``."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


@attrs.frozen
class Frame:
    """A WebSocket frame read by :class:`RawClient`."""

    fin: bool
    opcode: int
    payload: bytes
    masked: bool = False

    @property
    def close_code(self) -> int | None:
        """The code of a CLOSE frame (``None`` for an empty CLOSE or another opcode)."""
        if self.opcode != OP_CLOSE or len(self.payload) < 2:
            return None
        code: int = struct.unpack("!H", self.payload[:2])[0]
        return code


class RawClient:
    """A byte-level client, for requests no well-behaved client would send.

    Every read fails the test (:class:`trio.TooSlowError`) after
    :data:`RAW_TIMEOUT` seconds, so a server that never answers cannot hang
    the suite.
    """

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = bytearray()
        self.eof = False
        self.timeout = RAW_TIMEOUT
        """Seconds one read may wait (longer for tests whose server pauses on purpose)."""

    @classmethod
    async def tcp(cls, port: int, host: str = "127.0.0.1") -> RawClient:
        """Connect to ``host:port``."""
        return cls(await trio.open_tcp_stream(host, port))

    @classmethod
    async def unix(cls, path: Path) -> RawClient:
        """Connect to the unix socket ``path``."""
        return cls(await trio.open_unix_socket(str(path)))

    async def send(self, data: bytes) -> None:
        """Send ``data`` in one write."""
        await self.stream.send_all(data)

    async def send_eof(self) -> None:
        """Half-close: no more bytes from us."""
        assert isinstance(self.stream, trio.abc.HalfCloseableStream)
        await self.stream.send_eof()

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)

    async def _fill(self) -> bool:
        """Read more into the buffer; False at EOF (a reset counts as EOF)."""
        if self.eof:
            return False
        with trio.fail_after(self.timeout):
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                data = b""
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    async def receive_within(self, seconds: float) -> bytes | None:
        """Whatever arrives within ``seconds`` (b"" at EOF), or ``None`` if nothing did.

        For checks that something does *not* happen; assert on the outcome only.
        """
        if self.buffer:
            data = bytes(self.buffer)
            self.buffer.clear()
            return data
        with trio.move_on_after(seconds):
            if await self._fill():
                data = bytes(self.buffer)
                self.buffer.clear()
                return data
            return b""
        return None

    async def read_exactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes; AssertionError at EOF before that."""
        while len(self.buffer) < n:
            if not await self._fill():
                msg = f"EOF after {len(self.buffer)} of {n} bytes"
                raise AssertionError(msg)
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    async def read_until(self, delimiter: bytes) -> bytes:
        """Bytes up to and including ``delimiter``; AssertionError at EOF before it."""
        while (i := self.buffer.find(delimiter)) < 0:
            if not await self._fill():
                msg = f"EOF before {delimiter!r}; got {bytes(self.buffer)[:200]!r}"
                raise AssertionError(msg)
        end = i + len(delimiter)
        data = bytes(self.buffer[:end])
        del self.buffer[:end]
        return data

    async def read_to_eof(self) -> bytes:
        """Everything until the server closes the connection."""
        while await self._fill():
            pass
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    async def read_head(self) -> RawResponse:
        """A status line and headers (no body)."""
        head = await self.read_until(b"\r\n\r\n")
        status_line, *lines = head[:-4].split(b"\r\n")
        _version, status, reason = [*status_line.split(b" ", 2), b""][:3]
        headers = []
        for line in lines:
            name, _, value = line.partition(b":")
            headers.append((name.strip().lower(), value.strip()))
        return RawResponse(int(status), reason, tuple(headers))

    async def read_response(self, method: str = "GET") -> RawResponse:
        """A whole response; the body is read by Content-Length, chunked (decoded), or to EOF."""
        head = await self.read_head()
        if method == "HEAD" or head.status in (204, 304) or 100 <= head.status < 200:
            return head
        length = head.header(b"content-length")
        if (head.header(b"transfer-encoding") or b"").lower() == b"chunked":
            body = b""
            while True:
                size_line = await self.read_until(b"\r\n")
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    while await self.read_until(b"\r\n") != b"\r\n":
                        pass  # trailers
                    break
                body += await self.read_exactly(size)
                assert await self.read_exactly(2) == b"\r\n", "chunk without its CRLF"
        elif length is not None:
            body = await self.read_exactly(int(length))
        else:
            body = await self.read_to_eof()
        return attrs.evolve(head, body=body)

    async def request(self, data: bytes, method: str = "GET") -> RawResponse:
        """Send ``data`` and read one response."""
        await self.send(data)
        return await self.read_response(method)

    async def read_frame(self) -> Frame:
        """One WebSocket frame."""
        b0, b1 = await self.read_exactly(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self.read_exactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self.read_exactly(8))
        mask = await self.read_exactly(4) if b1 & 0x80 else b""
        payload = await self.read_exactly(n)
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return Frame(bool(b0 & 0x80), b0 & 0x0F, payload, bool(mask))

    async def read_frames_until_close(self, *, reply: bool = True) -> list[Frame]:
        """Frames up to and including the CLOSE (AssertionError at EOF before it).

        With ``reply`` the CLOSE is answered, as RFC 6455 asks (so the server
        need not wait for it); a server that already closed is no error.
        """
        frames = []
        while True:
            frame = await self.read_frame()
            frames.append(frame)
            if frame.opcode == OP_CLOSE:
                if reply:
                    try:
                        await self.send(client_frame(OP_CLOSE, frame.payload[:2]))
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
                return frames

    async def ws_handshake(self, path: str = "/ws/", **kwargs: Any) -> RawResponse:
        """Send a handshake (see :func:`handshake_request`) and read the response head."""
        await self.send(handshake_request(path, **kwargs))
        return await self.read_head()


class RawClients:
    """Opens :class:`RawClient` connections and closes them all at the end (the ``raw`` fixture)."""

    def __init__(self) -> None:
        self.opened: list[RawClient] = []

    async def tcp(self, port: int, host: str = "127.0.0.1") -> RawClient:
        client = await RawClient.tcp(port, host)
        self.opened.append(client)
        return client

    async def unix(self, path: Path) -> RawClient:
        client = await RawClient.unix(path)
        self.opened.append(client)
        return client

    async def aclose(self) -> None:
        for client in self.opened:
            await client.aclose()


def frames_payload(frames: Sequence[Frame], opcode: int | None = None) -> bytes:
    """The concatenated payloads of the data frames (optionally of one opcode)."""
    kinds = (OP_TEXT, OP_BINARY, OP_CONTINUATION) if opcode is None else (opcode,)
    return b"".join(f.payload for f in frames if f.opcode in kinds)


async def serve_tcp_backend(nursery: trio.Nursery, handler: Callable[[trio.SocketStream], Awaitable[None]]) -> int:
    """Run ``handler`` for every connection to a TCP server on 127.0.0.1; returns its port.

    ``handler`` owns nothing: the stream is closed after it returns.
    """

    async def run(stream: trio.SocketStream) -> None:
        async with stream:
            await handler(stream)

    listeners = await nursery.start(functools.partial(trio.serve_tcp, run, 0, host="127.0.0.1"))
    port: int = listeners[0].socket.getsockname()[1]
    return port


def unused_tcp_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def has_ipv6_loopback() -> bool:
    """True if ``[::1]`` can be bound here."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def pid_alive(pid: int) -> bool:
    """True if process ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


PROCESS_TIMEOUT = 30.0
"""Seconds a process may take to start listening, to exit, or to die."""


async def wait_pid_gone(pid: int) -> None:
    """Wait until process ``pid`` has exited (any process, not only our children).

    Raises:
        trio.TooSlowError: it is still running after :data:`PROCESS_TIMEOUT` seconds.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        with trio.fail_after(PROCESS_TIMEOUT):
            while pid_alive(pid):
                await trio.lowlevel.wait_readable(fd)
    finally:
        trio.lowlevel.notify_closing(fd)
        os.close(fd)


PID_ECHO_BACKEND = """\
# A spawned line-echo backend for wstrio's tests (bin-path; listening socket on fd 0).
# "pid\\n" answers the process id; "exit\\n" makes the process exit with status 3.
# With WSTRIO_TEST_NOTIFY set, it sends its pid to that unix socket on start.
import os
import socket
import threading


def serve(conn):
    with conn, conn.makefile("rb", buffering=0) as reader:
        for line in iter(reader.readline, b""):
            if line == b"exit\\n":
                os._exit(3)
            if line == b"pid\\n":
                line = b"%d\\n" % os.getpid()
            conn.sendall(line)


listener = socket.socket(fileno=0)
notify = os.environ.get("WSTRIO_TEST_NOTIFY")
if notify:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(notify)
        sock.sendall(b"%d\\n" % os.getpid())
while True:
    conn, _ = listener.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


# A bin-path backend that answers every chunk with "<pid>:<chunk>", so a test
# can see which process of a pool served it.
PID_TAGGING_BACKEND = """\
import os, socket, threading
listener = socket.socket(fileno=0)
def serve(conn):
    with conn:
        while data := conn.recv(65536):
            conn.sendall(str(os.getpid()).encode() + b":" + data)
while True:
    conn, _ = listener.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


def write_python_backend(path: Path, source: str = PID_ECHO_BACKEND) -> Path:
    """Write ``source`` as an executable script run by this Python; returns ``path``."""
    path.write_text(f"#!{sys.executable}\n{source}")
    path.chmod(0o755)
    return path


async def notify_socket(nursery: trio.Nursery, path: Path) -> trio.MemoryReceiveChannel[int]:
    """Listen on unix socket ``path``; every pid a backend sends there arrives on the channel."""
    send, receive = trio.open_memory_channel[int](100)
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen(16)

    async def handle(stream: trio.SocketStream) -> None:
        data = b""
        async with stream:
            while chunk := await stream.receive_some(64):
                data += chunk
        await send.send(int(data))

    await nursery.start(trio.serve_listeners, handle, [trio.SocketListener(sock)])
    return receive


def prepare_examples(dest: Path) -> Path:
    """A copy of ``examples/`` in ``dest``, ready for ``wstrio check``; returns the copy.

    The TLS examples ask the user to make a certificate first (their
    README); the copy gets a throwaway one from ``trustme`` where one is missing.
    """
    import shutil
    import tomllib

    import trustme

    copy = dest / "examples"
    shutil.copytree(EXAMPLES, copy, ignore=shutil.ignore_patterns("*.sock", "*.sock-*", "__pycache__"))
    ca: trustme.CA | None = None
    for config in copy.rglob("*.toml"):
        tls = tomllib.loads(config.read_text()).get("server", {}).get("tls")
        if not isinstance(tls, dict):
            continue
        cert = config.parent / tls.get("certificate", "cert.pem")
        key = config.parent / tls.get("private-key", "key.pem")
        if cert.exists() and key.exists():
            continue
        ca = ca or trustme.CA()
        issued = ca.issue_cert("localhost", "127.0.0.1", "::1")
        issued.cert_chain_pems[0].write_to_path(str(cert))
        issued.private_key_pem.write_to_path(str(key))
    return copy


def toml_string(value: str | Path) -> str:
    """``value`` as a TOML basic string."""
    text = str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_LISTENING = re.compile(r"listening on https?://127\.0\.0\.1:(\d+)")


@attrs.define(eq=False)
class CliServer:
    """``python -m wstrio serve CONFIG`` running as a child process."""

    process: trio.Process
    port: int
    stderr: list[str]
    """Log lines read so far (more arrive while it runs)."""
    exited: trio.Event

    async def stop(self, sig: int | None = signal.SIGTERM) -> int:
        """Send ``sig`` (``None``: none, it was sent already) and wait for the exit status.

        Waits at most :data:`PROCESS_TIMEOUT` seconds.  Beware: a second
        SIGTERM/SIGINT during the graceful shutdown ends wstrio at once.
        """
        if sig is not None and self.process.returncode is None:
            self.process.send_signal(sig)
        with trio.fail_after(PROCESS_TIMEOUT):
            await self.exited.wait()
            return await self.process.wait()


async def start_cli_server(
    nursery: trio.Nursery, config: Path, *args: str, wrapper: Sequence[str] = (), **popen: Any
) -> CliServer:
    """Start ``python -m wstrio serve config`` and wait for its "listening on" line.

    The port is parsed from that log line (use ``127.0.0.1:0`` in the config).
    The process is killed when ``nursery`` is cancelled.  ``wrapper`` goes in
    front of the command (``sh -c '... exec "$@"' sh``, say).

    Raises:
        AssertionError: it exited before listening (with its stderr).
    """
    cwd = Path(popen.pop("cwd", config.parent))
    return await start_cli(nursery, "serve", str(config), *args, wrapper=wrapper, cwd=cwd, **popen)


async def start_cli(
    nursery: trio.Nursery, *argv: str, wrapper: Sequence[str] = (), cwd: Path | None = None, **popen: Any
) -> CliServer:
    """Start ``python -m wstrio ARGV...`` and wait for its "listening on" line (see :func:`start_cli_server`)."""
    process = await trio.lowlevel.open_process(
        [*wrapper, sys.executable, "-m", "wstrio", *argv],
        stderr=subprocess.PIPE,
        **{"stdin": subprocess.DEVNULL, "cwd": str(cwd or Path.cwd()), **popen},
    )
    lines: list[str] = []
    listening = trio.Event()
    exited = trio.Event()
    found: list[int] = []

    async def read_stderr() -> None:
        assert process.stderr is not None
        pending = b""
        eof = False
        try:
            while chunk := await process.stderr.receive_some(65536):
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for raw in complete:
                    line = raw.decode(errors="replace")
                    lines.append(line)
                    if not found and (m := _LISTENING.search(line)):
                        found.append(int(m.group(1)))
                        listening.set()
            eof = True
        finally:
            with trio.CancelScope(shield=True):
                if process.returncode is None and not eof:
                    process.terminate()  # the test ended with the server still running
                with trio.move_on_after(PROCESS_TIMEOUT):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            exited.set()
            listening.set()

    nursery.start_soon(read_stderr)
    with trio.fail_after(PROCESS_TIMEOUT):
        await listening.wait()
    if not found:
        text = "\n".join(lines)
        msg = f"wstrio exited with status {process.returncode} before listening:\n{text}"
        raise AssertionError(msg)
    return CliServer(process, found[0], lines, exited)


async def read_head(stream: trio.abc.Stream) -> bytes:
    """An HTTP head read from ``stream`` (for test backends that never send bytes behind it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        assert chunk, "closed before the end of the head"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert rest == b"", "this test backend never sends bytes behind its head"
    return head


async def serve_recording_backend(nursery: trio.Nursery, record: Callable[[h11.Request], object]) -> int:
    """An HTTP/1.1 backend on a loopback port that answers 200 ``ok`` and passes each request head to ``record``."""

    async def app(stream: trio.SocketStream) -> None:
        h = h11.Connection(h11.SERVER)
        try:
            method = b"GET"
            while True:
                event = h.next_event()
                if event is h11.NEED_DATA:
                    h.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Request):
                    method = event.method
                    record(event)
                elif isinstance(event, h11.EndOfMessage):
                    response = h11.Response(status_code=200, headers=[(b"content-length", b"2")])
                    out = h.send(response)
                    if method != b"HEAD":
                        out += h.send(h11.Data(data=b"ok"))
                    await stream.send_all(out + h.send(h11.EndOfMessage()))
                    h.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return
        except (h11.ProtocolError, trio.BrokenResourceError):
            return

    return await serve_tcp_backend(nursery, app)


class ProxyLineBackend:
    """A wstunnel backend that reads wstrio's PROXY v1 line (``send-proxy-protocol = "v1"``), says whom it
    serves (``"NAME serves ADDR:PORT"``, or ``"serves ADDR:PORT"`` without a name), then echoes."""

    def __init__(self, name: str = "") -> None:
        self.name = name

    async def __call__(self, stream: trio.SocketStream) -> None:
        line = b""
        while not line.endswith(b"\r\n"):
            byte = await stream.receive_some(1)
            if not byte:
                return
            line += byte
        _proxy, _family, source, _dest, sport, _dport = line.decode().split()
        hello = f"serves {source}:{sport}"
        try:
            await stream.send_all((f"{self.name} {hello}" if self.name else hello).encode())
            while data := await stream.receive_some(65536):
                await stream.send_all(data)
        except trio.BrokenResourceError:
            pass
