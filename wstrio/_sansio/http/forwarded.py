"""Who the client is behind trusted proxies: ``X-Forwarded-For`` and ``Forwarded`` (RFC 7239).

Believed only from a peer in ``forwarded-trust``: anyone can send these
headers.  Each proxy appends the address it got the request from, so the
list is read from the right: the first address that is not itself a
trusted proxy is the client (a client that sends its own header only adds
entries on the left, which are never reached).  ``Forwarded`` is used when
present, else ``X-Forwarded-For``.  An entry that is not an address
(``unknown``, an obfuscated ``_name``) stops the walk at the proxy that
added it.  The port is not known: the client's port becomes 0.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

import attrs

from wstrio._sansio.http.request import Request
from wstrio._sansio.limits import Network, allowed

__all__ = ["behind_trusted_proxies", "forwarded_client"]


def _address(text: str) -> str | None:
    text = text.strip().strip('"')
    if text.startswith("["):  # Forwarded: "[2001:db8::1]:4711"
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # "192.0.2.43:47011"
        text = text.partition(":")[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _hops(headers: Iterable[tuple[bytes, bytes]]) -> list[str | None]:
    forwarded: list[str | None] = []
    xff: list[str | None] = []
    for name, value in headers:
        if name == b"forwarded":
            for element in value.decode("latin-1").split(","):
                for pair in element.split(";"):
                    key, _, val = pair.strip().partition("=")
                    if key.lower() == "for":
                        forwarded.append(_address(val))
        elif name == b"x-forwarded-for":
            xff.extend(_address(item) for item in value.decode("latin-1").split(",") if item.strip())
    return forwarded or xff


def forwarded_client(
    client: tuple[str, int] | None, headers: Iterable[tuple[bytes, bytes]], trusted: Sequence[Network]
) -> tuple[str, int] | None:
    """The client behind ``client`` if ``client`` is a trusted proxy that said so; else ``client``."""
    if client is None or not trusted or not allowed(client[0], trusted, ()):
        return client
    current = client
    for hop in reversed(_hops(headers)):
        if hop is None:
            return current
        current = (hop, 0)
        if not allowed(hop, trusted, ()):
            return current
    return current


def behind_trusted_proxies(request: Request, trusted: Sequence[Network]) -> Request:
    """``request`` with the client a trusted proxy named (its :attr:`~Request.peer` then the proxy); else as it is."""
    if not trusted:
        return request
    client = forwarded_client(request.client, request.headers, trusted)
    if client == request.client:
        return request
    return attrs.evolve(request, client=client, peer=request.client)
