"""The PROXY protocol header parser and the X-Forwarded-For / Forwarded walk (sans-I/O)."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from wstrio._sansio.http.forwarded import forwarded_client
from wstrio._sansio.proxyproto import V2_SIGNATURE, ProxyHeader, ProxyProtocolError, parse_v1, parse_v2, v2_length


def v2(command: int, family: int, body: bytes) -> bytes:
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


def test_v1_tcp4_and_tcp6() -> None:
    assert parse_v1(b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\n") == ProxyHeader(
        ("203.0.113.7", 56324), ("192.0.2.1", 443), 1
    )
    header = parse_v1(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n")
    assert header.source == ("2001:db8::1", 1)
    assert header.destination == ("2001:db8::2", 65535)


def test_v1_unknown_describes_no_client() -> None:
    assert parse_v1(b"PROXY UNKNOWN\r\n").source is None
    assert parse_v1(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n").source is None


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP4 203.0.113.7 192.0.2.1 56324\r\n",  # a field missing
        b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 99999\r\n",  # port out of range
        b"PROXY TCP4 203.0.113.7 192.0.2.1 056324 443\r\n",  # leading zero
        b"PROXY TCP4 2001:db8::1 192.0.2.1 1 2\r\n",  # family and address disagree
        b"PROXY UDP4 203.0.113.7 192.0.2.1 1 2\r\n",
        b"PROXY TCP4 203.0.113.7 192.0.2.1 1 2\n",  # bare LF
        b"PROXY TCP4 " + b"1" * 100 + b"\r\n",  # too long
    ],
)
def test_v1_malformed(line: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse_v1(line)


def test_v2_tcp4_tcp6_with_tlvs() -> None:
    body4 = ipaddress.IPv4Address("203.0.113.7").packed + ipaddress.IPv4Address("192.0.2.1").packed
    header = v2(1, 0x11, body4 + struct.pack("!HH", 56324, 443) + b"\x04\x00\x01x")  # a TLV after
    assert v2_length(header[:16]) == len(header)
    assert parse_v2(header) == ProxyHeader(("203.0.113.7", 56324), ("192.0.2.1", 443), 2)
    body6 = ipaddress.IPv6Address("2001:db8::1").packed + ipaddress.IPv6Address("2001:db8::2").packed
    assert parse_v2(v2(1, 0x21, body6 + struct.pack("!HH", 1, 2))).source == ("2001:db8::1", 1)


def test_v2_local_unspec_and_unix_describe_no_client() -> None:
    assert parse_v2(v2(0, 0x11, bytes(12))).source is None  # LOCAL: the proxy's health check
    assert parse_v2(v2(1, 0x00, b"")).source is None
    assert parse_v2(v2(1, 0x31, bytes(216))).source is None


@pytest.mark.parametrize(
    "header",
    [
        v2(1, 0x11, bytes(11)),  # addresses cut short
        v2(2, 0x11, bytes(12)),  # unknown command
        v2(1, 0x12, bytes(12)),  # UDP
        V2_SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12),  # version 1 in a v2 header
    ],
)
def test_v2_malformed(header: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse_v2(header)


TRUSTED = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.0.0.0/8"))


@pytest.mark.parametrize(
    ("peer", "headers", "client"),
    [
        # From a trusted proxy: the rightmost address that is not a proxy.
        (("127.0.0.1", 5000), [(b"x-forwarded-for", b"198.51.100.1, 10.1.2.3")], ("198.51.100.1", 0)),
        # What the client wrote itself stands on the left and is never reached.
        (("127.0.0.1", 5000), [(b"x-forwarded-for", b"1.1.1.1, 198.51.100.1")], ("198.51.100.1", 0)),
        # Several headers are one list.
        (("127.0.0.1", 5000), [(b"x-forwarded-for", b"1.1.1.1"), (b"x-forwarded-for", b"10.0.0.9")], ("1.1.1.1", 0)),
        # Forwarded (RFC 7239) wins over X-Forwarded-For, with ports and brackets.
        (
            ("127.0.0.1", 5000),
            [(b"x-forwarded-for", b"9.9.9.9"), (b"forwarded", b'for="[2001:db8::7]:4711";proto=https, for=10.0.0.2')],
            ("2001:db8::7", 0),
        ),
        # An entry that is no address stops the walk at the proxy that wrote it.
        (("127.0.0.1", 5000), [(b"x-forwarded-for", b"198.51.100.1, unknown")], ("127.0.0.1", 5000)),
        # From a peer that is not trusted: the headers are ignored.
        (("192.0.2.9", 5000), [(b"x-forwarded-for", b"198.51.100.1")], ("192.0.2.9", 5000)),
        # No header: the peer.
        (("127.0.0.1", 5000), [], ("127.0.0.1", 5000)),
        # Only trusted hops: the leftmost.
        (("127.0.0.1", 5000), [(b"x-forwarded-for", b"10.0.0.1, 10.0.0.2")], ("10.0.0.1", 0)),
    ],
)
def test_forwarded_client(peer: tuple[str, int], headers: list[tuple[bytes, bytes]], client: tuple[str, int]) -> None:
    assert forwarded_client(peer, headers, TRUSTED) == client


def test_forwarded_client_without_trust_is_the_peer() -> None:
    assert forwarded_client(("127.0.0.1", 1), [(b"x-forwarded-for", b"1.1.1.1")], ()) == ("127.0.0.1", 1)
    assert forwarded_client(None, [(b"x-forwarded-for", b"1.1.1.1")], TRUSTED) is None
