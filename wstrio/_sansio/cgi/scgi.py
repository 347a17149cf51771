"""SCGI request headers (the netstring of the SCGI protocol), sans I/O.

An SCGI request is ``<len>:<name>\\0<value>\\0...,`` followed by the raw body.
The SCGI specification (python.ca/scgi/protocol.txt) requires
``CONTENT_LENGTH`` as the first header and a header ``SCGI`` with value
``1``; its example puts ``SCGI`` second, and so do we.  lighttpd sends
``SCGI=1`` last, which servers accept as well, so :func:`decode_request_headers`
accepts it anywhere.

Strings are encoded as UTF-8 with ``surrogateescape`` (see
:mod:`wstrio._sansio.cgi.environ`), so the bytes of the original request survive.

Never imports trio; performs no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wstrio._sansio.cgi.environ import encode_environ

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["DEFAULT_MAX_HEADER_SIZE", "decode_request_headers", "encode_request_headers"]

DEFAULT_MAX_HEADER_SIZE = 64 * 1024
"""Default limit of :func:`decode_request_headers` on the netstring's content length."""


def encode_request_headers(environ: Mapping[str, str]) -> bytes:
    """Encode ``environ`` as an SCGI header netstring.

    ``CONTENT_LENGTH`` comes first and ``SCGI=1`` second, then every other
    variable in ``environ``'s order (an ``SCGI`` entry in ``environ`` is
    ignored: the value is always ``1``).

    Args:
        environ: the CGI environment; it must contain ``CONTENT_LENGTH``.

    Returns:
        The netstring, ready to be followed by the request body.

    Raises:
        ValueError: ``CONTENT_LENGTH`` is missing or not a decimal number, or a
            name or value cannot be encoded (see
            :func:`wstrio._sansio.cgi.environ.encode_environ`).
    """
    content_length = environ.get("CONTENT_LENGTH")
    if content_length is None:
        msg = "SCGI requires CONTENT_LENGTH in the environment"
        raise ValueError(msg)
    if not (content_length.isascii() and content_length.isdigit()):
        msg = f"SCGI CONTENT_LENGTH must be a decimal number, not {content_length!r}"
        raise ValueError(msg)
    ordered: dict[str, str] = {"CONTENT_LENGTH": content_length, "SCGI": "1"}
    for name, value in environ.items():
        if name not in ordered:
            ordered[name] = value
    body = b"".join(name + b"\0" + value + b"\0" for name, value in encode_environ(ordered))
    return b"%d:%s," % (len(body), body)


def decode_request_headers(
    data: bytes | bytearray | memoryview,
    *,
    max_size: int = DEFAULT_MAX_HEADER_SIZE,
) -> tuple[dict[str, str], int] | None:
    """Decode an SCGI header netstring from the start of ``data``.

    Args:
        data: bytes received so far (may hold body bytes after the netstring).
        max_size: the largest netstring content accepted.

    Returns:
        ``(environ, consumed)``, where ``consumed`` is the netstring's length
        (the body starts at ``data[consumed:]``); or ``None`` if ``data`` holds
        only part of the netstring so far.

    Raises:
        ValueError: the netstring or its content is malformed, exceeds
            ``max_size``, does not start with ``CONTENT_LENGTH``, lacks
            ``SCGI=1`` or repeats a name.
    """
    view = bytes(data[: len(str(max_size)) + 1])
    colon = view.find(b":")
    digits = view if colon < 0 else view[:colon]
    if not digits.isdigit() and digits:
        msg = f"SCGI netstring length is not a decimal number: {digits[:20]!r}"
        raise ValueError(msg)
    if colon < 0:
        if len(digits) > len(str(max_size)):
            msg = f"SCGI header netstring is larger than {max_size} bytes"
            raise ValueError(msg)
        return None
    if not digits:
        msg = "SCGI netstring has no length before ':'"
        raise ValueError(msg)
    if len(digits) > 1 and digits.startswith(b"0"):
        msg = f"SCGI netstring length has a leading zero: {digits!r}"
        raise ValueError(msg)
    size = int(digits)
    if size > max_size:
        msg = f"SCGI header netstring is larger than {max_size} bytes ({size})"
        raise ValueError(msg)
    start = colon + 1
    end = start + size
    if len(data) <= end:
        return None
    if data[end : end + 1] != b",":
        msg = "SCGI netstring does not end with ','"
        raise ValueError(msg)
    return _decode_pairs(bytes(data[start:end])), end + 1


def _decode_pairs(content: bytes) -> dict[str, str]:
    if not content.endswith(b"\0"):
        msg = "SCGI headers must end with a NUL byte"
        raise ValueError(msg)
    fields = content[:-1].split(b"\0")
    if len(fields) % 2:
        msg = "SCGI headers hold a name without a value"
        raise ValueError(msg)
    environ: dict[str, str] = {}
    for i in range(0, len(fields), 2):
        raw_name, raw_value = fields[i], fields[i + 1]
        if not raw_name:
            msg = "SCGI header with an empty name"
            raise ValueError(msg)
        name = raw_name.decode("utf-8", "surrogateescape")
        if name in environ:
            msg = f"SCGI header {name} appears twice"
            raise ValueError(msg)
        environ[name] = raw_value.decode("utf-8", "surrogateescape")
    if next(iter(environ)) != "CONTENT_LENGTH":
        msg = "SCGI headers must start with CONTENT_LENGTH"
        raise ValueError(msg)
    if not (environ["CONTENT_LENGTH"].isascii() and environ["CONTENT_LENGTH"].isdigit()):
        msg = f"SCGI CONTENT_LENGTH is not a decimal number: {environ['CONTENT_LENGTH']!r}"
        raise ValueError(msg)
    if environ.get("SCGI") != "1":
        msg = "SCGI headers lack SCGI=1"
        raise ValueError(msg)
    return environ
