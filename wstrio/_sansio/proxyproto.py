"""The PROXY protocol, versions 1 and 2 (HAProxy's spec), as a load balancer sends it.

A connection from a load balancer (HAProxy ``send-proxy``/``send-proxy-v2``,
AWS NLB, nginx ``proxy_protocol``) starts with a header that says who the
client really is; then the client's own bytes follow (HTTP, or a TLS
ClientHello).  This module parses a header whose bytes were read exactly
(:mod:`wstrio._io.proxyproto` reads them without taking a byte more):

* version 1: one text line, at most 107 bytes with its CRLF:
  ``PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\\r\\n`` (or ``TCP6``, or
  ``PROXY UNKNOWN ...`` for a connection the proxy cannot describe);
* version 2: a 12-byte signature, version and command, family, a 16-bit
  length, then the addresses (and TLVs, which are skipped).  ``LOCAL``
  (the proxy's own health check) and the unspecified or unix families
  describe no client: the connection's own address stays.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import final

import attrs

__all__ = ["V1_MAX", "V1_PREFIX", "V2_SIGNATURE", "ProxyHeader", "ProxyProtocolError", "parse_v1", "parse_v2"]

V1_PREFIX = b"PROXY "
V1_MAX = 107
"""The longest version-1 line, CRLF included."""
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16
"""Signature, version/command, family and length: the part of a version-2 header that says its length."""


class ProxyProtocolError(ValueError):
    """The connection does not start with a valid PROXY protocol header."""


@final
@attrs.frozen
class ProxyHeader:
    """What the header said."""

    source: tuple[str, int] | None
    """The client's address and port; ``None``: the header describes none (LOCAL, UNKNOWN)."""
    destination: tuple[str, int] | None
    """The address the client connected to (at the proxy)."""
    version: int


def _port(text: bytes) -> int:
    if not text.isdigit() or len(text) > 5 or (len(text) > 1 and text.startswith(b"0")):
        msg = f"bad port {text!r}"
        raise ProxyProtocolError(msg)
    port = int(text)
    if port > 65535:
        msg = f"bad port {text!r}"
        raise ProxyProtocolError(msg)
    return port


def parse_v1(line: bytes) -> ProxyHeader:
    """A version-1 line, CRLF included (``line`` is exactly the header)."""
    if not line.startswith(V1_PREFIX) or not line.endswith(b"\r\n") or len(line) > V1_MAX:
        msg = "not a PROXY v1 line"
        raise ProxyProtocolError(msg)
    parts = line[:-2].split(b" ")
    if len(parts) >= 2 and parts[1] == b"UNKNOWN":
        return ProxyHeader(None, None, 1)
    if len(parts) != 6 or parts[1] not in (b"TCP4", b"TCP6"):
        msg = f"a PROXY v1 line needs 'PROXY TCP4|TCP6 src dst sport dport', not {line[:-2]!r}"
        raise ProxyProtocolError(msg)
    family = ipaddress.IPv4Address if parts[1] == b"TCP4" else ipaddress.IPv6Address
    try:
        source = str(family(parts[2].decode("ascii")))
        destination = str(family(parts[3].decode("ascii")))
    except (ValueError, UnicodeDecodeError):
        msg = f"bad address in {line[:-2]!r}"
        raise ProxyProtocolError(msg) from None
    return ProxyHeader((source, _port(parts[4])), (destination, _port(parts[5])), 1)


def v2_length(fixed: bytes) -> int:
    """The whole length of a version-2 header from its first :data:`V2_FIXED` bytes."""
    if len(fixed) < V2_FIXED or not fixed.startswith(V2_SIGNATURE):
        msg = "not a PROXY v2 header"
        raise ProxyProtocolError(msg)
    if fixed[12] >> 4 != 2:
        msg = f"PROXY v2 header of version {fixed[12] >> 4}"
        raise ProxyProtocolError(msg)
    length: int = struct.unpack_from("!H", fixed, 14)[0]
    return V2_FIXED + length


_TCP_FAMILIES: dict[int, tuple[type[ipaddress.IPv4Address] | type[ipaddress.IPv6Address], int, str]] = {
    0x11: (ipaddress.IPv4Address, 4, "TCP4"),
    0x21: (ipaddress.IPv6Address, 16, "TCP6"),
}
"""Version-2 family byte -> (address class, address size, name), for TCP over IPv4 and IPv6."""


def parse_v2(header: bytes) -> ProxyHeader:
    """A version-2 header (``header`` is exactly the header, addresses and TLVs included)."""
    if len(header) != v2_length(header[:V2_FIXED]):
        msg = "PROXY v2 header of the wrong length"
        raise ProxyProtocolError(msg)
    command = header[12] & 0x0F
    family = header[13]
    body = header[V2_FIXED:]
    if command == 0:  # LOCAL: the proxy's own connection (a health check)
        return ProxyHeader(None, None, 2)
    if command != 1:
        msg = f"PROXY v2 command {command}"
        raise ProxyProtocolError(msg)
    if family in _TCP_FAMILIES:
        address, size, name = _TCP_FAMILIES[family]
        if len(body) < 2 * size + 4:
            msg = f"PROXY v2 {name} addresses cut short"
            raise ProxyProtocolError(msg)
        src, dst = address(body[:size]), address(body[size : 2 * size])
        sport, dport = struct.unpack_from("!HH", body, 2 * size)
        return ProxyHeader((str(src), sport), (str(dst), dport), 2)
    if family in (0x00, 0x31):  # unspecified, or a unix stream socket: no address to use
        return ProxyHeader(None, None, 2)
    msg = f"PROXY v2 family {family:#04x} is not a stream this server serves"
    raise ProxyProtocolError(msg)


def encode_header(version: int, source: tuple[str, int] | None, destination: tuple[str, int] | None) -> bytes:
    """The header a client at ``source`` connecting to ``destination`` gets in front (``send-proxy-protocol``).

    Without both addresses, or with addresses of different families (a unix
    client, say), version 1 says ``PROXY UNKNOWN`` and version 2 sends a
    ``PROXY`` command with the unspecified family: the backend then knows it
    was told nothing.
    """
    src = dst = None
    if source is not None and destination is not None:
        try:
            src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
        except ValueError:
            src = dst = None
        if src is not None and dst is not None and src.version != dst.version:
            # An IPv4 client on an IPv6 socket shows as ::ffff:a.b.c.d; otherwise say nothing.
            src4 = getattr(src, "ipv4_mapped", None) or src
            dst4 = getattr(dst, "ipv4_mapped", None) or dst
            src, dst = (src4, dst4) if src4.version == dst4.version else (None, None)
    if version == 1:
        if src is None or dst is None or source is None or destination is None:
            return b"PROXY UNKNOWN\r\n"
        family = "TCP4" if src.version == 4 else "TCP6"
        return f"PROXY {family} {src} {dst} {source[1]} {destination[1]}\r\n".encode("ascii")
    if src is None or dst is None or source is None or destination is None:
        return V2_SIGNATURE + b"\x21\x00\x00\x00"
    body = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1])
    family_byte = 0x11 if src.version == 4 else 0x21
    return V2_SIGNATURE + bytes([0x21, family_byte]) + struct.pack("!H", len(body)) + body
