"""CGI/1.1 (RFC 3875) response-head parsing, sans I/O.

Shared by the CGI, SCGI and FastCGI handlers: all three read back the same
kind of response head (``Status:``/``Location:`` fields, or an NPH status
line) through :class:`CgiResponseParser`, which gives a
:class:`CgiResponseHead`.  What goes *to* the script (the environment) is in
:mod:`wstrio._sansio.cgi.environ`.

Never imports trio; performs no I/O.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import final

import attrs

from wstrio._errors import BackendError

__all__ = ["DEFAULT_HEAD_LIMIT", "CgiResponseHead", "CgiResponseParser"]

DEFAULT_HEAD_LIMIT = 64 * 1024
"""Default size limit, in bytes, of a CGI response head (blank line included)."""

# RFC 9110 token characters.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# Control characters other than HTAB are not allowed in a field value.
_BAD_FIELD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_STATUS_VALUE = re.compile(rb"([0-9]{3})(?:[ \t]+(.*))?\Z", re.DOTALL)
_NPH_LINE = re.compile(rb"HTTP/1\.[01][ \t]+([0-9]{3})(?:[ \t]+(.*))?\Z", re.DOTALL)


def _reject(message: str) -> BackendError:
    return BackendError(f"invalid CGI response: {message}", 502)


def _default_reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def _parse_status(value: bytes, what: str) -> tuple[int, bytes]:
    match = (_NPH_LINE if what == "status line" else _STATUS_VALUE).match(value)
    if match is None:
        msg = f"malformed {what} {value[:80]!r}"
        raise _reject(msg)
    status = int(match.group(1))
    if not 100 <= status <= 599:
        msg = f"{what} has status {status} outside 100-599"
        raise _reject(msg)
    reason = (match.group(2) or b"").strip(b" \t")
    if _BAD_FIELD_VALUE.search(reason):
        msg = f"{what} reason contains control characters"
        raise _reject(msg)
    return status, reason or _default_reason(status)


@final
@attrs.frozen
class CgiResponseHead:
    """The parsed head of a CGI, SCGI or FastCGI response."""

    status: int
    """The status: from ``Status:``, an NPH status line, ``302`` for a bare
    ``Location:``, else ``200``."""
    reason: bytes
    """The reason phrase given, or the standard one for ``status``."""
    headers: tuple[tuple[bytes, bytes], ...]
    """Response header fields in order, names lower-cased, ``Status`` removed.
    Fields with an invalid name or value are skipped (as lighttpd does)."""
    local_redirect: str | None = None
    """For a local redirect (RFC 3875 6.2.2: a ``Location`` starting with a
    single ``/`` as the only field, with no ``Status`` or NPH line), the
    location, decoded as Latin-1 so that ``.encode("latin-1")`` gives the raw
    target back.  ``status`` is then 302, which is what to send if local
    redirects are disabled."""
    rest: bytes = b""
    """Body bytes that arrived after the blank line."""

    @property
    def is_upgrade(self) -> bool:
        """True when the backend switched protocols: status 101 and an ``Upgrade`` field."""
        return self.status == 101 and self.header(b"upgrade") is not None

    def header(self, name: bytes) -> bytes | None:
        """The first value of field ``name`` (lower-case), or ``None``."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


def _build_head(lines: list[bytes], rest: bytes) -> CgiResponseHead:
    """Interpret the lines of one response head (terminators already removed)."""
    status: int | None = None
    reason = b""
    seen_status_field = False
    headers: list[tuple[bytes, bytes]] = []
    first = 0
    if lines[0].startswith(b"HTTP/"):
        # NPH: a complete HTTP status line instead of a Status field.
        status, reason = _parse_status(lines[0], "status line")
        first = 1
    for line in lines[first:]:
        if line[:1] in (b" ", b"\t"):
            msg = "obsolete line folding in the header section"
            raise _reject(msg)
        name, colon, value = line.partition(b":")
        if not colon:
            msg = f"header line without a colon: {line[:80]!r}"
            raise _reject(msg)
        value = value.strip(b" \t")
        lname = name.lower()
        if lname == b"status":
            if seen_status_field:
                msg = "more than one Status field"
                raise _reject(msg)
            seen_status_field = True
            # The Status field wins over an NPH line, and, unlike lighttpd, its
            # position does not matter: the whole head is read before the 101
            # is judged, so "Upgrade:" may come before "Status: 101".
            status, reason = _parse_status(value, "Status field")
            continue
        if not _TOKEN.match(name) or _BAD_FIELD_VALUE.search(value):
            continue
        headers.append((lname, value))

    local_redirect = None
    if status is None:
        location = next((v for k, v in headers if k == b"location"), None)
        if location is None:
            # No Status, no Location: RFC 3875 wants a Content-Type, but a
            # missing one is not worth a 502; the response is a plain 200.
            status = 200
        else:
            status = 302
            if location.startswith(b"/") and not location.startswith(b"//") and len(headers) == 1:
                # "//host/..." is a network-path reference, i.e. a client
                # redirect to another host, never a local one.
                local_redirect = location.decode("latin-1")
        reason = _default_reason(status)
    return CgiResponseHead(
        status=status,
        reason=reason,
        headers=tuple(headers),
        local_redirect=local_redirect,
        rest=rest,
    )


@final
class CgiResponseParser:
    """Incremental parser of a CGI-style response head.

    Feed it the backend's output until it returns a :class:`CgiResponseHead`.
    Lines may end in ``\\n`` or ``\\r\\n``; the head ends at the first empty
    line.  Interim ``1xx`` heads (any 1xx but 101, from ``Status:`` or an NPH
    line) are discarded and the next head is parsed.

    Example::

        parser = CgiResponseParser()
        head = parser.feed(b"Status: 101\\nUpgrade: websocket\\n\\n")
        assert head is not None and head.is_upgrade
    """

    def __init__(self, limit: int = DEFAULT_HEAD_LIMIT) -> None:
        """Create a parser.

        Args:
            limit: largest head accepted, in bytes, including the blank line.
        """
        if limit < 2:
            msg = f"limit must be at least 2 bytes, not {limit}"
            raise ValueError(msg)
        self._limit = limit
        self._buf = bytearray()
        self._pos = 0  # start of the next unparsed line in _buf
        self._head_start = 0  # start of the current head in _buf
        self._lines: list[bytes] = []
        self._done = False

    def feed(self, data: bytes) -> CgiResponseHead | None:
        """Add backend output; return the head once its blank line has arrived.

        Args:
            data: the next bytes from the backend (may be empty).

        Returns:
            The head, or ``None`` while it is incomplete.

        Raises:
            BackendError: 502 for a malformed or oversized head.
            RuntimeError: the head was already returned.
        """
        if self._done:
            msg = "the CGI response head was already parsed"
            raise RuntimeError(msg)
        self._buf += data
        while True:
            newline = self._buf.find(b"\n", self._pos)
            if newline < 0:
                if len(self._buf) - self._head_start >= self._limit:
                    msg = f"header section larger than {self._limit} bytes"
                    raise _reject(msg)
                return None
            line = bytes(self._buf[self._pos : newline])
            self._pos = newline + 1
            if self._pos - self._head_start > self._limit:
                msg = f"header section larger than {self._limit} bytes"
                raise _reject(msg)
            if line.endswith(b"\r"):
                line = line[:-1]
            if line:
                self._lines.append(line)
                continue
            if not self._lines:
                msg = "no header fields before the blank line"
                raise _reject(msg)
            head = _build_head(self._lines, bytes(self._buf[self._pos :]))
            self._lines = []
            if 100 <= head.status < 200 and head.status != 101:
                # An interim response: drop it and parse the final head from
                # what follows.
                del self._buf[: self._pos]
                self._pos = self._head_start = 0
                continue
            self._done = True
            self._buf = bytearray()
            return head
