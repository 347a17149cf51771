"""Access-log lines: one per request (a tunnel's when it ends), as text or JSON.

The text line is lighttpd-like and unchanged since the first release::

    127.0.0.1:50312 "GET /ws/ HTTP/1.1" 101 129 12.034s tunnel to unix:/run/echo.sock closed 1000 by client ...

The JSON line (``access-log-format = "json"``) is one object with a fixed
set of keys, for log shippers (Loki, Elasticsearch, Vector)::

    {"time": "2026-12-03T14:02:11.123Z", "client": "127.0.0.1", "client_port": 50312,
     "method": "GET", "path": "/ws/", "protocol": "HTTP/1.1", "status": 101, "bytes": 129,
     "duration": 12.034, "route": "/ws/", "backend": "unix:/run/echo.sock",
     "note": "tunnel to ... closed 1000 by client", "close_code": 1000, "closed_by": "client",
     "bytes_from_client": 5, "bytes_to_client": 7, "messages_from_client": 1, "messages_to_client": 1}

Keys always present: ``time`` (UTC, ISO 8601 with milliseconds),
``client`` and ``client_port`` (``null`` for a unix-socket client),
``method``, ``path`` (the request target as sent), ``protocol``,
``status`` (``null`` if no response was started), ``bytes`` (sent to the
client, headers and framing included), ``duration`` (seconds), ``route``
(the matched route's ``path``, ``null`` for none), ``backend`` and ``note``
(``null`` when there is none).  A WebSocket adds, when it ends:
``close_code`` (sent to the client, ``null`` if none could be), for a wstunnel
tunnel ``close_code_received`` (the client's, ``null`` if it sent no CLOSE), ``closed_by``
(``client``, ``backend``, ``idle``, ``protocol``, ``ping``, ``lifetime``,
``shutdown``, ``fault``) and the bytes each way; a wstunnel tunnel, which
sees messages, the messages each way too.
"""

from __future__ import annotations

import json
import time as _time
from collections.abc import Mapping

__all__ = ["KEYS", "access_record", "json_line", "text_line"]

KEYS = (
    "time",
    "client",
    "client_port",
    "method",
    "path",
    "protocol",
    "status",
    "bytes",
    "duration",
    "route",
    "backend",
    "note",
)
"""The keys of every JSON access-log line, in order; handlers add the tunnel's keys after them."""


def iso_time(when: float) -> str:
    """``when`` (a ``time.time()``) as ``2026-12-03T14:02:11.123Z``."""
    seconds = int(when)
    millis = int((when - seconds) * 1000)
    return _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(seconds)) + f".{millis:03d}Z"


def access_record(
    *,
    when: float,
    client: tuple[str, int] | None,
    method: str,
    target: str,
    protocol: str,
    status: int | None,
    sent: int,
    duration: float,
    note: str,
    fields: Mapping[str, object],
) -> dict[str, object]:
    """The access-log record of one request; ``fields`` are what the handler added (route, backend, tunnel)."""
    record: dict[str, object] = {
        "time": iso_time(when),
        "client": client[0] if client is not None else None,
        "client_port": client[1] if client is not None else None,
        "method": method,
        "path": target,
        "protocol": protocol,
        "status": status,
        "bytes": sent,
        "duration": round(duration, 6),
        "route": None,
        "backend": None,
        "note": note or None,
    }
    record.update(fields)
    return record


def json_line(record: Mapping[str, object]) -> str:
    """One JSON object, on one line (non-ASCII escaped, so a line is always valid UTF-8 and ASCII)."""
    return json.dumps(record, separators=(", ", ": "), default=str)


def text_line(
    peer: str, method: str, target: str, protocol: str, status: int | None, sent: int, duration: float, note: str
) -> str:
    """The text line: ``peer "METHOD target PROTOCOL" status bytes duration [note]``."""
    shown = status if status is not None else "-"
    tail = f" {note}" if note else ""
    return f'{peer} "{method} {target} {protocol}" {shown} {sent} {duration:.3f}s{tail}'
