"""Hop-by-hop header rules shared by every gateway (proxy, CGI, SCGI, FastCGI).

A field that describes one connection (RFC 9110 section 7.6.1) is never
passed from one side of a gateway to the other: not from the client to a
backend (:func:`~wstrio._sansio.http.proxy.backend_request`), not from a
backend's answer to the client (:func:`filter_response_headers`, and the
101 rules in :mod:`wstrio._sansio.upgrade`).

Header names are lower-case everywhere (h11 and h2 hand them over that way).

Never imports trio.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = [
    "DROPPED_RESPONSE",
    "HOP_BY_HOP",
    "Headers",
    "connection_options",
    "filter_response_headers",
    "remove_hop_by_hop",
]

Headers = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"transfer-encoding",
        b"upgrade",
        # Trailers are not forwarded (the exchange has no way to carry
        # them), so announcing them would be a lie.
        b"trailer",
    }
)
"""Header fields that describe one connection, never forwarded (RFC 9110 section 7.6.1).

Fields named in ``Connection`` are removed as well."""

# The exchange writes its own Date and Server (as nginx does by default).
DROPPED_RESPONSE = frozenset({b"date", b"server"})
"""Response fields a backend's answer never passes on."""


def connection_options(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """The lower-cased options of every ``Connection`` field in ``headers``."""
    options: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            options.update(part.strip().lower() for part in value.split(b",") if part.strip())
    return frozenset(options)


def remove_hop_by_hop(headers: Iterable[tuple[bytes, bytes]], *, keep: frozenset[bytes] = frozenset()) -> Headers:
    """``headers`` without the hop-by-hop fields and the fields ``Connection`` names.

    Args:
        headers: lower-cased ``(name, value)`` pairs, in order.
        keep: names to keep even though they are hop-by-hop (``upgrade``
            for a 101 passed through).

    Returns:
        the remaining fields, in their original order.
    """
    headers = list(headers)
    drop = (HOP_BY_HOP | connection_options(headers)) - keep
    return [(name, value) for name, value in headers if name not in drop]


def filter_response_headers(headers: Sequence[tuple[bytes, bytes]]) -> Headers:
    """The backend's response fields as the client gets them.

    Hop-by-hop fields and those ``Connection`` names are removed, so are
    ``Date`` and ``Server`` (the exchange writes its own) and, when the
    backend sent ``Transfer-Encoding``, ``Content-Length`` (it does not
    describe the decoded body; RFC 9112 section 6.3).  The exchange
    chooses the framing towards the client.
    """
    chunked = any(name == b"transfer-encoding" for name, _ in headers)
    out = remove_hop_by_hop(headers)
    return [
        (name, value)
        for name, value in out
        if name not in DROPPED_RESPONSE and not (chunked and name == b"content-length")
    ]
