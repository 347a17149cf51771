"""The front door against slow clients: ``max-request-head-time`` (issue 12, defect 3).

``max-read-idle`` bounds each read, so a client sending one byte at a time
could hold a connection for ever (slowloris).  The whole request head (each
keep-alive request anew) and the TLS handshake now have a deadline from
their first byte.  The whole server runs on memory streams under the
autojump clock: the "seconds" below are virtual, nothing sleeps for real.
"""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path
from typing import Any

import hpack
import pytest
import trio
import trio.testing
import trustme
from hyperframe.frame import ContinuationFrame, GoAwayFrame, HeadersFrame, SettingsFrame

import wstrio
from tests.helpers import make_config
from wstrio._io.backends.connect import SocketConnector
from wstrio._io.context import ServerContext
from wstrio._io.http.h2.connection import PREFACE, serve_h2
from wstrio._io.http.tls import ReloadableContext, TlsListener
from wstrio.testing import MemoryListener

HEAD = b"GET /index.html HTTP/1.1\r\nHost: x\r\nUser-Agent: slowloris\r\n\r\n"


async def memory_server(nursery: trio.Nursery, **server: Any) -> MemoryListener:
    """The whole server on a memory listener, with no document root.

    Every request gets 404 then, answered without a worker thread: a thread
    would let the autojump clock jump while it runs.
    """
    config = make_config({"server": server})
    listener = MemoryListener()
    await nursery.start(lambda task_status: wstrio.serve_listeners(config, [listener], task_status=task_status))
    return listener


async def trickle(stream: trio.abc.Stream, data: bytes, sent: list[int], interval: float = 0.1) -> None:
    """Send ``data`` one byte every ``interval`` seconds, counting into ``sent``, until the server hangs up."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        for i in range(len(data)):
            await stream.send_all(data[i : i + 1])
            sent[0] += 1
            await trio.sleep(interval)


async def read_response(stream: trio.abc.Stream) -> bytes:
    """Bytes up to the end of one response with a Content-Length (or to EOF)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length")
    )
    while len(body) < length:
        chunk = await stream.receive_some(65536)
        assert chunk, "EOF inside the body"
        body += chunk
    return head + b"\r\n\r\n" + body


async def read_to_eof(stream: trio.abc.Stream) -> bytes:
    data = b""
    with contextlib.suppress(trio.BrokenResourceError):
        while chunk := await stream.receive_some(65536):
            data += chunk
    return data


async def test_trickled_head_gets_408_at_the_deadline(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    listener = await memory_server(nursery, **{"max-request-head-time": 1, "max-read-idle": 5})
    client = await listener.connect()
    sent = [0]
    start = trio.current_time()
    nursery.start_soon(trickle, client, HEAD, sent)
    answer = await read_to_eof(client)
    elapsed = trio.current_time() - start
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"connection: close" in answer.lower()
    assert 1 <= elapsed < 1.5
    assert sent[0] < len(HEAD)  # closed before the head was complete


async def test_head_sent_at_once_is_served(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    listener = await memory_server(nursery, **{"max-request-head-time": 1})
    client = await listener.connect()
    await client.send_all(HEAD)
    answer = await read_response(client)
    assert answer.startswith(b"HTTP/1.1 404 "), answer


async def test_each_keep_alive_request_has_its_own_deadline(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    listener = await memory_server(
        nursery, **{"max-request-head-time": 1, "max-read-idle": 5, "max-keep-alive-idle": 5}
    )
    client = await listener.connect()
    await client.send_all(HEAD)
    assert (await read_response(client)).startswith(b"HTTP/1.1 404 ")
    # Idle between requests is max-keep-alive-idle's business: the clock
    # starts with the next request's first byte.
    await trio.sleep(3)
    await client.send_all(HEAD)
    assert (await read_response(client)).startswith(b"HTTP/1.1 404 ")
    # A head in two parts, well within the deadline, is fine.
    await client.send_all(HEAD[:10])
    await trio.sleep(0.5)
    await client.send_all(HEAD[10:])
    assert (await read_response(client)).startswith(b"HTTP/1.1 404 ")
    sent = [0]
    start = trio.current_time()
    nursery.start_soon(trickle, client, HEAD, sent)
    answer = await read_to_eof(client)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert 1 <= trio.current_time() - start < 1.5
    assert sent[0] < len(HEAD)


async def test_silence_before_the_first_byte_is_max_read_idle(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    listener = await memory_server(nursery, **{"max-request-head-time": 1, "max-read-idle": 5})
    client = await listener.connect()
    start = trio.current_time()
    await read_to_eof(client)
    assert 5 <= trio.current_time() - start < 6


async def test_zero_means_no_limit(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    listener = await memory_server(nursery, **{"max-request-head-time": 0, "max-read-idle": 5})
    client = await listener.connect()
    sent = [0]
    await trickle(client, HEAD, sent, interval=0.5)  # 30 s for the head, every read within max-read-idle
    assert sent[0] == len(HEAD)
    assert (await read_response(client)).startswith(b"HTTP/1.1 404 ")


class TrickleStream(trio.abc.Stream):
    """Sends what it is given one byte every 0.1 s (a slow TLS client)."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        for i in range(len(data)):
            await self.inner.send_all(bytes(data[i : i + 1]))
            await trio.sleep(0.1)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_slow_tls_handshake_is_closed_at_the_deadline(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    (tmp_path / "cert.pem").write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(tmp_path / "key.pem")
    tls = {"certificate": str(tmp_path / "cert.pem"), "private-key": str(tmp_path / "key.pem")}
    config = make_config({"server": {"tls": tls, "max-request-head-time": 1, "max-read-idle": 5}})
    memory = MemoryListener()
    listener = TlsListener(memory, ReloadableContext.from_config(config))
    await nursery.start(lambda task_status: wstrio.serve_listeners(config, [listener], task_status=task_status))
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)

    # A handshake at normal speed works ...
    fast = trio.SSLStream(await memory.connect(), ctx, server_hostname="localhost")
    await fast.do_handshake()
    await fast.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (await read_to_eof(fast)).startswith(b"HTTP/1.1 404 ")

    # ... one byte per 0.1 s is cut after max-request-head-time, quietly.
    slow = trio.SSLStream(TrickleStream(await memory.connect()), ctx, server_hostname="localhost")
    start = trio.current_time()
    with pytest.raises(trio.BrokenResourceError):
        await slow.do_handshake()
    assert 1 <= trio.current_time() - start < 1.5


def test_config_key() -> None:
    assert wstrio.ServerConfig().max_request_head_time == 30
    assert make_config({"server": {"max-request-head-time": 2.5}}).max_request_head_time == 2.5
    with pytest.raises(wstrio.ConfigError, match=r"server\.max-request-head-time"):
        make_config({"server": {"max-request-head-time": -1}})
    with pytest.raises(wstrio.ConfigError, match=r"server\.max-request-head-time"):
        wstrio.ServerConfig(max_request_head_time=-1)


# -- HTTP/2: a HEADERS frame whose CONTINUATION frames trickle in -----------------


async def h2_raw_server(nursery: trio.Nursery, **server: Any) -> tuple[trio.abc.Stream, trio.Event]:
    """serve_h2 on a memory stream; returns the client end and an event set when serve_h2 returns."""
    config = make_config({"server": server})
    context = ServerContext(config, SocketConnector())
    client_end, server_end = trio.testing.memory_stream_pair()
    done = trio.Event()

    async def run() -> None:
        await serve_h2(server_end, config, context.dispatch, scheme="http")
        await server_end.aclose()
        done.set()

    nursery.start_soon(run)
    return client_end, done


def h2_request_frames(block: bytes) -> list[bytes]:
    """A HEADERS frame with the first byte of ``block``, then one CONTINUATION frame per byte."""
    headers = HeadersFrame(1, block[:1])
    headers.flags.add("END_STREAM")
    frames = [headers.serialize()]
    for i in range(1, len(block)):
        continuation = ContinuationFrame(1, block[i : i + 1])
        if i == len(block) - 1:
            continuation.flags.add("END_HEADERS")
        frames.append(continuation.serialize())
    return frames


H2_BLOCK = hpack.Encoder().encode(
    [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "/slowloris"), ("user-agent", "slow" * 10)]
)


async def test_h2_trickled_header_block_is_cut_at_the_deadline(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    client, done = await h2_raw_server(nursery, **{"max-request-head-time": 1, "max-read-idle": 5})
    await client.send_all(PREFACE + SettingsFrame(0).serialize())
    frames = h2_request_frames(H2_BLOCK)
    assert len(frames) > 20
    start = trio.current_time()
    sent = 0
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        for frame in frames:
            if done.is_set():
                break
            await client.send_all(frame)
            sent += 1
            await trio.sleep(0.1)
    assert done.is_set()
    assert 1 <= trio.current_time() - start < 1.5
    assert sent < len(frames)
    answer = await read_to_eof(client)
    # A GOAWAY (type 7, no flags, stream 0) went out; stream 1 got no HEADERS.
    assert bytes([GoAwayFrame.type, 0]) + bytes(4) in answer
    assert b"\x01\x04\x00\x00\x00\x01" not in answer
    assert b"\x01\x05\x00\x00\x00\x01" not in answer


async def test_h2_header_block_in_time_is_served(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    client, done = await h2_raw_server(nursery, **{"max-request-head-time": 1, "max-read-idle": 5})
    await client.send_all(PREFACE + SettingsFrame(0).serialize())
    frames = h2_request_frames(H2_BLOCK)
    await client.send_all(b"".join(frames[:5]))
    await trio.sleep(0.5)
    await client.send_all(b"".join(frames[5:]))
    data = b""
    while True:  # until the 404's HEADERS frame on stream 1
        chunk = await client.receive_some(65536)
        assert chunk
        data += chunk
        # type HEADERS, flags END_HEADERS (and END_STREAM or not), stream 1
        if b"\x01\x04\x00\x00\x00\x01" in data or b"\x01\x05\x00\x00\x00\x01" in data:
            break
    assert not done.is_set()
