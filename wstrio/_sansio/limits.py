"""Per-client limits: connections per address, a request rate, access rules.

Never imports trio; the caller passes the time in.

* :func:`client_key` turns a client address into what the limits count:
  an IPv4 address as it is (an IPv4-mapped IPv6 address, ``::ffff:a.b.c.d``,
  counts as its IPv4 address), an IPv6 address by its ``/64`` (one
  subscriber usually holds a whole /64, and could otherwise take a fresh
  address for every connection), ``None`` for a unix-socket client.
* :class:`ConnectionCounter`: how many connections (or requests in
  progress) each key has open; :meth:`~ConnectionCounter.acquire` refuses
  one over the limit.
* :class:`RateLimiter`: a token bucket per key, as nginx ``limit_req``:
  ``burst`` requests may come at once, then ``rate`` per second;
  :meth:`~RateLimiter.take` says how long to wait (``Retry-After``) when
  the bucket is empty.  The table is bounded: buckets that are full again
  are forgotten (they behave exactly like a new one), and past
  :data:`MAX_TRACKED` keys the fullest are dropped first.
* :func:`allowed`: a route's ``allow``/``deny`` CIDR lists.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence
from typing import Final, final

BUSY_RETRY_AFTER = 5
"""``Retry-After`` seconds for a refusal by a count (connections per address, tunnels, programs):
a slot frees when one ends."""

__all__ = ["MAX_TRACKED", "ClientKey", "ConnectionCounter", "RateLimiter", "allowed", "client_address", "client_key"]

ClientKey = ipaddress.IPv4Address | ipaddress.IPv6Network
"""What per-client limits count: an IPv4 address, or an IPv6 /64."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_TRACKED: Final = 100_000
"""Most keys a :class:`RateLimiter` tracks at once (a flood of distinct addresses cannot grow it further)."""


def client_address(host: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's address (``None``: a unix socket, or not an IP address); IPv4-mapped IPv6 becomes IPv4."""
    if host is None:
        return None
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_key(host: str | None) -> ClientKey | None:
    """What the per-client limits count for a client at ``host`` (see the module docstring)."""
    address = client_address(host)
    if address is None or isinstance(address, ipaddress.IPv4Address):
        return address
    return ipaddress.IPv6Network((int(address) >> 64 << 64, 64))


def allowed(host: str | None, allow: Sequence[Network], deny: Sequence[Network]) -> bool:
    """Whether a client at ``host`` may use a route with these ``allow``/``deny`` lists.

    ``deny`` wins; a non-empty ``allow`` admits only its members.  An
    IPv4-mapped IPv6 client matches IPv4 networks.  A unix-socket client
    (no address) is in no list: refused when ``allow`` is non-empty.
    """
    if not allow and not deny:
        return True
    address = client_address(host)
    if address is None:
        return not allow
    if any(address in network for network in deny if network.version == address.version):
        return False
    if not allow:
        return True
    return any(address in network for network in allow if network.version == address.version)


@final
class ConnectionCounter:
    """Open connections (or requests in progress) per client key, against one limit.

    Args:
        limit: the most one key may hold at once; 0 = no limit (nothing is counted).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[ClientKey, int] = {}

    def acquire(self, key: ClientKey | None) -> bool:
        """Count one more for ``key``; False (nothing counted) when that would pass the limit.

        A ``None`` key (a unix-socket client) is never limited nor counted.
        """
        if not self.limit or key is None:
            return True
        held = self._open.get(key, 0)
        if held >= self.limit:
            return False
        self._open[key] = held + 1
        return True

    def release(self, key: ClientKey | None) -> None:
        """Count one fewer for ``key`` (after a successful :meth:`acquire`)."""
        if not self.limit or key is None:
            return
        held = self._open.get(key, 0) - 1
        if held > 0:
            self._open[key] = held
        else:
            self._open.pop(key, None)

    def held(self, key: ClientKey) -> int:
        """How many ``key`` holds now."""
        return self._open.get(key, 0)

    def __len__(self) -> int:
        return len(self._open)


@final
class RateLimiter:
    """A token bucket per client key (nginx ``limit_req``).

    Args:
        rate: tokens per second each bucket refills with; 0 = no limit.
        burst: the bucket's size (requests that may come at once).
        max_tracked: the most keys tracked (see :data:`MAX_TRACKED`).
    """

    def __init__(self, rate: float, burst: int, *, max_tracked: int = MAX_TRACKED) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.max_tracked = max_tracked
        # key -> (tokens, when); insertion order is refreshed on every use,
        # so the first entries are the longest unused.
        self._buckets: dict[ClientKey, tuple[float, float]] = {}

    def take(self, key: ClientKey | None, now: float) -> int | None:
        """Take a token for a request from ``key`` at ``now``.

        Returns:
            ``None``: allowed.  Else the whole seconds (at least 1) until a
            token is there: the ``Retry-After`` to send with the 429.
        """
        if not self.rate or key is None:
            return None
        tokens, when = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - when) * self.rate)
        if tokens >= 1.0:
            tokens -= 1.0
            self._remember(key, tokens, now)
            return None
        self._remember(key, tokens, now)
        return max(1, math.ceil((1.0 - tokens) / self.rate))

    def _remember(self, key: ClientKey, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_tracked:
            self._forget(now)

    def _forget(self, now: float) -> None:
        """Drop buckets that are full again (as good as new), then the longest unused down to 90 %.

        Dropping a tenth at once keeps the cost per request constant on
        average under a flood of distinct addresses.
        """
        stale = [k for k, (tokens, when) in self._buckets.items() if tokens + (now - when) * self.rate >= self.burst]
        for key in stale:
            del self._buckets[key]
        keep = self.max_tracked * 9 // 10
        while len(self._buckets) > keep:
            del self._buckets[next(iter(self._buckets))]

    def __len__(self) -> int:
        return len(self._buckets)
