"""The access-log file (``access-log``), reopened on request (SIGUSR1, for logrotate).

Access lines are records of the ``wstrio.access`` logger at INFO, text or
JSON (:mod:`wstrio._sansio.accesslog`).  Without ``access-log`` they go where
that logger's records go (the CLI: stderr, with the usual time, name and
level in front; a JSON line is printed bare there, so each line stays a JSON
object).  With it, :class:`AccessLogFile` attaches a handler that appends
them to the file (a text line prefixed with its time, a JSON line bare) and
stops them propagating to the other handlers.

:meth:`AccessLogFile.reopen` closes and reopens the file by name, so after
logrotate has moved it the lines go to a new file (``postrotate``:
``kill -USR1 <pid>``; with ``workers`` the supervisor passes it on).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO, final

from wstrio._sansio.accesslog import access_record, json_line, text_line

__all__ = ["BARE", "TIMED", "AccessLogFile", "bare_lines_to", "log_access"]

BARE = logging.Formatter("%(message)s")
TIMED = logging.Formatter("%(asctime)s %(message)s")

_LOGGER = logging.getLogger("wstrio.access")


def log_access(
    *,
    json_format: bool,
    client: tuple[str, int] | None,
    method: str,
    target: str,
    protocol: str,
    status: int | None,
    sent: int,
    duration: float,
    note: str,
    fields: Mapping[str, object],
) -> None:
    """Write one request's access line (HTTP/1.1 and HTTP/2 alike), text or JSON."""
    if not _LOGGER.isEnabledFor(logging.INFO):
        return
    if json_format:
        record = access_record(
            when=time.time(),
            client=client,
            method=method,
            target=target,
            protocol=protocol,
            status=status,
            sent=sent,
            duration=duration,
            note=note,
            fields=fields,
        )
        _LOGGER.info("%s", json_line(record), extra={"access": record})
        return
    peer = f"{client[0]}:{client[1]}" if client is not None else "unix"
    _LOGGER.info("%s", text_line(peer, method, target, protocol, status, sent, duration, note))


def bare_lines_to(stream: TextIO) -> None:
    """Send access lines to ``stream`` as they are (no time, name or level in front: JSON stays JSON)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(BARE)
    _LOGGER.addHandler(handler)
    _LOGGER.propagate = False


@final
class _ReopeningHandler(logging.FileHandler):
    def reopen(self) -> None:
        self.acquire()
        try:
            if self.stream is not None:
                self.stream.close()
            self.stream = self._open()
        finally:
            self.release()


@final
class AccessLogFile:
    """The ``access-log`` file of a running server; :meth:`close` detaches it."""

    def __init__(self, path: Path, json_lines: bool) -> None:
        """Open (append) ``path`` and send the access log there.

        Raises:
            OSError: the file cannot be opened (the caller names the key).
        """
        self.path = path
        self._handler = _ReopeningHandler(path, mode="a", encoding="utf-8")
        self._handler.setFormatter(BARE if json_lines else TIMED)
        self._handler.setLevel(logging.INFO)
        self._propagate = _LOGGER.propagate
        self._level = _LOGGER.level
        _LOGGER.addHandler(self._handler)
        _LOGGER.propagate = False
        if not _LOGGER.isEnabledFor(logging.INFO):
            _LOGGER.setLevel(logging.INFO)

    def reopen(self) -> None:
        """Reopen the file by name (after logrotate moved it).

        Raises:
            OSError: it cannot be opened any more (the old file stays closed; lines are lost until a reopen works).
        """
        self._handler.reopen()

    def close(self) -> None:
        _LOGGER.removeHandler(self._handler)
        _LOGGER.propagate = self._propagate
        _LOGGER.setLevel(self._level)
        self._handler.close()
