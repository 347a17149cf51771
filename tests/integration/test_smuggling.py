"""Request smuggling, as a table: what a backend behind a proxy route receives, byte for byte (issue 12).

Each row is a request a smuggler might send (the classic CL.TE and TE.CL
pairs, duplicated or listed Content-Lengths, invalid chunk sizes,
Transfer-Encoding lists and spellings, obs-fold, bare LF and CR), the
statuses the client gets, and exactly what each backend connection
received.  A request wstrio refuses never reaches the backend (or reaches
it only as a head whose body never completes, then the connection
closes); one it accepts arrives normalised, framed one way, and whole.
``docs/security.md`` cites this table.
"""

from __future__ import annotations

import re

import attrs
import h11
import pytest
import trio
import trio.testing

from tests.helpers import serve_tcp_backend, start_server

FORWARDED = b"x-forwarded-for: 127.0.0.1\r\nx-forwarded-host: x\r\nx-forwarded-proto: http\r\nconnection: close\r\n\r\n"


def forwarded(request_line: bytes, *headers: bytes) -> bytes:
    """The head wstrio sends a backend: the request line, ``host: x``, ``headers``, its own."""
    return request_line + b"\r\nhost: x\r\n" + b"".join(h + b"\r\n" for h in headers) + FORWARDED


@attrs.frozen
class Row:
    name: str
    request: bytes
    statuses: list[int]
    backend: list[bytes]
    """What each backend connection received, in order (empty: the backend saw nothing)."""


CHUNKED_HEAD = forwarded(b"POST /proxy/a HTTP/1.1", b"transfer-encoding: chunked")
TABLE = [
    Row(
        "CL.TE: Content-Length and chunked",
        b"POST /proxy/a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        b"GET /proxy/SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n",
        [400],
        [],
    ),
    Row(
        "TE.CL: chunked and Content-Length",
        b"POST /proxy/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"
        b"5c\r\nGET /proxy/SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n0\r\n\r\n",
        [400],
        [],
    ),
    Row(
        "two equal Content-Lengths (one length: RFC 9110 section 8.6)",
        b"POST /proxy/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        [200],
        [forwarded(b"POST /proxy/a HTTP/1.1", b"content-length: 5") + b"hello"],
    ),
    Row(
        "a Content-Length list of equal values",
        b"POST /proxy/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello",
        [200],
        [forwarded(b"POST /proxy/a HTTP/1.1", b"content-length: 5") + b"hello"],
    ),
    Row(
        "two different Content-Lengths",
        b"POST /proxy/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        [400],
        [],
    ),
    Row("a signed Content-Length", b"POST /proxy/a HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello", [400], []),
    Row("a negative Content-Length", b"POST /proxy/a HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\nhi", [400], []),
    Row(
        "a body that is a request, framed by Content-Length",
        b"POST /proxy/a HTTP/1.1\r\nHost: x\r\nContent-Length: 32\r\n\r\nGET /proxy/SMUGGLED HTTP/1.1\r\n\r\n",
        [200],
        [forwarded(b"POST /proxy/a HTTP/1.1", b"content-length: 32") + b"GET /proxy/SMUGGLED HTTP/1.1\r\n\r\n"],
    ),
    Row(
        "a well-formed chunked body, with an extension",
        b"POST /proxy/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\n\r\n",
        [200],
        [CHUNKED_HEAD + b"5\r\nhello\r\n0\r\n\r\n"],
    ),
    Row(
        "a chunk size that is not hex",
        b"POST /proxy/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        [400],
        [CHUNKED_HEAD],
    ),
    Row(
        "a chunk size with 0x",
        b"POST /proxy/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
        [400],
        [CHUNKED_HEAD],
    ),
    Row(
        # Read as one chunk of 2**64 + 5 bytes: what follows is its data,
        # passed on in a chunk of wstrio's own framing; it never completes.
        "a chunk size beyond 64 bits is data, re-framed",
        b"POST /proxy/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"10000000000000005\r\nhello\r\n0\r\n\r\n",
        [400],
        [CHUNKED_HEAD + b"c\r\nhello\r\n0\r\n\r\n\r\n"],
    ),
    Row(
        "chunk lines ended by bare LF",
        b"POST /proxy/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n",
        [400],
        [CHUNKED_HEAD],
    ),
    Row(
        "Transfer-Encoding: gzip, chunked (a coding wstrio does not implement)",
        b"POST /proxy/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        [501],
        [],
    ),
    Row(
        "Transfer-Encoding: chunked, identity",
        b"POST /proxy/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        [501],
        [],
    ),
    Row(
        "Transfer-Encoding twice",
        b"POST /proxy/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n",
        [501],
        [],
    ),
    Row(
        "Transfer-Encoding: xchunked",
        b"POST /proxy/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        [501],
        [],
    ),
    Row(
        "a space before the colon",
        b"POST /proxy/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        [400],
        [],
    ),
    Row(
        "a vertical tab before the value",
        b"POST /proxy/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\x0bchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        [400],
        [],
    ),
    Row(
        "HTTP/1.0 with Transfer-Encoding",
        b"POST /proxy/a HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        [400],
        [],
    ),
    Row(
        "obs-fold is unfolded into one value",
        b"GET /proxy/a HTTP/1.1\r\nHost: x\r\nX-A: one\r\n two\r\n\r\n",
        [200],
        [forwarded(b"GET /proxy/a HTTP/1.1", b"x-a: one two")],
    ),
    Row(
        "a Transfer-Encoding hidden in obs-fold stays a value",
        b"POST /proxy/a HTTP/1.1\r\nHost: x\r\nX-A: b\r\n Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello",
        [200],
        [forwarded(b"POST /proxy/a HTTP/1.1", b"x-a: b Transfer-Encoding: chunked", b"content-length: 5") + b"hello"],
    ),
    Row(
        "bare LF line ends (accepted, forwarded with CRLF)",
        b"GET /proxy/a HTTP/1.1\nHost: x\n\n",
        [200],
        [forwarded(b"GET /proxy/a HTTP/1.1")],
    ),
    Row("a bare CR", b"GET /proxy/a HTTP/1.1\rHost: x\r\n\r\n", [400], []),
    Row("a NUL in a value", b"GET /proxy/a HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", [400], []),
    Row(
        "two pipelined requests stay two",
        b"GET /proxy/1 HTTP/1.1\r\nHost: x\r\n\r\nGET /proxy/2 HTTP/1.1\r\nHost: x\r\n\r\n",
        [200, 200],
        [forwarded(b"GET /proxy/1 HTTP/1.1"), forwarded(b"GET /proxy/2 HTTP/1.1")],
    ),
]


@attrs.define
class RawBackend:
    """An HTTP backend that keeps every byte each connection received, and answers 200 ``ok``."""

    received: list[bytearray] = attrs.Factory(list)
    closed: int = 0
    changed: trio.Event = attrs.Factory(trio.Event)

    async def handle(self, stream: trio.SocketStream) -> None:
        raw = bytearray()
        self.received.append(raw)
        h = h11.Connection(h11.SERVER)
        try:
            while True:
                event = h.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    raw += data
                    h.receive_data(data)
                elif isinstance(event, h11.EndOfMessage):
                    response = h11.Response(status_code=200, headers=[(b"content-length", b"2")])
                    await stream.send_all(h.send(response) + h.send(h11.Data(data=b"ok")) + h.send(h11.EndOfMessage()))
                    h.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    break
        except (h11.ProtocolError, trio.BrokenResourceError):
            pass
        finally:
            self.closed += 1
            self.changed.set()
            self.changed = trio.Event()

    async def wait_closed(self, count: int) -> None:
        with trio.fail_after(10):
            while self.closed < count:
                await self.changed.wait()


async def exchange(port: int, data: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    received = bytearray()
    async with stream:
        await stream.send_all(data)
        await stream.send_eof()
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                received += chunk
    return bytes(received)


@pytest.mark.parametrize("row", TABLE, ids=[row.name for row in TABLE])
async def test_what_the_backend_receives(nursery: trio.Nursery, row: Row) -> None:
    backend = RawBackend()
    port = await serve_tcp_backend(nursery, backend.handle)
    route = {"path": "/proxy/", "handler": "proxy", "backend": [{"host": "127.0.0.1", "port": port}]}
    server = await start_server(nursery, {"server": {"listen": ["127.0.0.1:0"]}, "route": [route]})
    answer = await exchange(server.port, row.request)
    assert [int(s) for s in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)] == row.statuses, answer
    await backend.wait_closed(len(row.backend))
    await trio.testing.wait_all_tasks_blocked(cushion=0.05)
    assert [bytes(raw) for raw in backend.received] == row.backend
