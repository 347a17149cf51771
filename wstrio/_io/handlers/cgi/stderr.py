"""A program's error output as log lines (a CGI script's stderr, FastCGI's ``FCGI_STDERR``)."""

from __future__ import annotations

import logging
from typing import final

__all__ = ["StderrLog"]

backend_log = logging.getLogger("wstrio.backend")

_STDERR_LINE_LIMIT = 4096
"""Longer lines are cut into pieces of this size."""


@final
class StderrLog:
    """Turns a program's error output into log lines on ``wstrio.backend``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._pending = bytearray()

    def feed(self, data: bytes) -> None:
        """Log every complete line in ``data`` (long lines are cut)."""
        self._pending += data
        while (newline := self._pending.find(b"\n")) >= 0 or len(self._pending) > _STDERR_LINE_LIMIT:
            end = newline if newline >= 0 else _STDERR_LINE_LIMIT
            self._emit(bytes(self._pending[:end]))
            del self._pending[: end + 1 if newline >= 0 else end]

    def flush(self) -> None:
        """Log a last line without its newline."""
        if self._pending:
            self._emit(bytes(self._pending))
            self._pending.clear()

    def _emit(self, line: bytes) -> None:
        text = line.rstrip(b"\r").decode("utf-8", "replace")
        if text:
            backend_log.warning("%s: %s", self.name, text)
