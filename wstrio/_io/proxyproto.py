"""Reading a PROXY protocol header off a socket without taking a byte more.

What follows the header belongs to HTTP or to a TLS handshake (which reads
the socket itself), so the header is read exactly: 8 bytes tell the
version; a version-2 header then says its length; a version-1 line is
looked for with a peek (``MSG_PEEK``: nothing is taken) and then read up to
its CRLF, byte by byte only if it arrives in pieces.
"""

from __future__ import annotations

import socket

import trio

from wstrio._sansio.proxyproto import (
    V1_MAX,
    V1_PREFIX,
    V2_FIXED,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyProtocolError,
    parse_v1,
    parse_v2,
    v2_length,
)

__all__ = ["read_proxy_header"]


async def _exactly(sock: trio.socket.SocketType, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = await sock.recv(n - len(out))
        if not chunk:
            msg = "the connection ended inside its PROXY header"
            raise ProxyProtocolError(msg)
        out += chunk
    return bytes(out)


async def read_proxy_header(sock: trio.socket.SocketType) -> ProxyHeader:
    """Read and parse the PROXY header at the start of ``sock``'s stream.

    Raises:
        ProxyProtocolError: there is none, or it is malformed (close the connection).
        OSError: the socket failed.
    """
    start = await _exactly(sock, 8)
    if start == V2_SIGNATURE[:8]:
        fixed = start + await _exactly(sock, V2_FIXED - 8)
        total = v2_length(fixed)
        return parse_v2(fixed + await _exactly(sock, total - V2_FIXED))
    if not start.startswith(V1_PREFIX):
        msg = f"the connection does not start with a PROXY header ({start!r})"
        raise ProxyProtocolError(msg)
    line = bytearray(start)
    peeked = await sock.recv(V1_MAX - len(line), socket.MSG_PEEK)
    end = peeked.find(b"\n")
    if end >= 0:
        line += await _exactly(sock, end + 1)
    else:
        # In pieces (rare): take what is there, then a byte at a time.
        line += await _exactly(sock, len(peeked))
        while not line.endswith(b"\n"):
            if len(line) >= V1_MAX:
                msg = f"a PROXY v1 line longer than {V1_MAX} bytes"
                raise ProxyProtocolError(msg)
            line += await _exactly(sock, 1)
    return parse_v1(bytes(line))
