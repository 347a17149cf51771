"""FastCGI 1.0 records, sans I/O.

Record layout (FastCGI specification, section 3.3)::

    version(1) type(1) requestId(2) contentLength(2) paddingLength(1) reserved(1)
    content[contentLength] padding[paddingLength]

We pad every record to a multiple of 8 bytes, as the specification
recommends (lighttpd sends no padding; both are valid, and the decoder
accepts any padding).  Like lighttpd, the I/O layer uses request id 1 and no
``FCGI_KEEP_CONN``.

Invalid input raises :class:`ValueError`; the I/O layer answers 502 before the
response head, or ends the tunnel after it.

Never imports trio; performs no I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import Final, final

import attrs

from wstrio._sansio.cgi.environ import encode_environ

__all__ = [
    "ABORT_REQUEST",
    "AUTHORIZER",
    "BEGIN_REQUEST",
    "CANT_MPX_CONN",
    "DATA",
    "END_REQUEST",
    "FCGI_HEADER_LEN",
    "FCGI_KEEP_CONN",
    "FCGI_MAX_CONTENT",
    "FCGI_NULL_REQUEST_ID",
    "FCGI_VERSION_1",
    "FILTER",
    "GET_VALUES",
    "GET_VALUES_RESULT",
    "OVERLOADED",
    "PARAMS",
    "REQUEST_COMPLETE",
    "RESPONDER",
    "STDERR",
    "STDIN",
    "STDOUT",
    "UNKNOWN_ROLE",
    "UNKNOWN_TYPE",
    "Record",
    "RecordDecoder",
    "decode_name_value_pairs",
    "encode_begin_request",
    "encode_end_request",
    "encode_name_value_pairs",
    "encode_params",
    "encode_record",
    "encode_stream",
    "parse_begin_request",
    "parse_end_request",
]

FCGI_VERSION_1: Final = 1
FCGI_HEADER_LEN: Final = 8
FCGI_MAX_CONTENT: Final = 0xFFFF
FCGI_NULL_REQUEST_ID: Final = 0

# Record types.
BEGIN_REQUEST: Final = 1
ABORT_REQUEST: Final = 2
END_REQUEST: Final = 3
PARAMS: Final = 4
STDIN: Final = 5
STDOUT: Final = 6
STDERR: Final = 7
DATA: Final = 8
GET_VALUES: Final = 9
GET_VALUES_RESULT: Final = 10
UNKNOWN_TYPE: Final = 11

# Roles (FCGI_BeginRequestBody.role).
RESPONDER: Final = 1
AUTHORIZER: Final = 2
FILTER: Final = 3

# FCGI_BeginRequestBody.flags.
FCGI_KEEP_CONN: Final = 1

# FCGI_EndRequestBody.protocolStatus.
REQUEST_COMPLETE: Final = 0
CANT_MPX_CONN: Final = 1
OVERLOADED: Final = 2
UNKNOWN_ROLE: Final = 3

_HEADER = struct.Struct(">BBHHBx")
_BEGIN_BODY = struct.Struct(">HB5x")
_END_BODY = struct.Struct(">IB3x")
_MAX_NV_LENGTH = 0x7FFFFFFF


@final
@attrs.frozen
class Record:
    """One FastCGI record, without its padding."""

    type: int
    """The record type (:data:`STDOUT`, :data:`END_REQUEST`, ...)."""
    request_id: int
    """The request id (0 for management records)."""
    content: bytes
    """The record content."""


def encode_record(type: int, request_id: int, content: bytes = b"") -> bytes:
    """Encode one record, padded to a multiple of 8 bytes.

    Args:
        type: record type, 0-255.
        request_id: request id, 0-65535.
        content: at most 65535 bytes.

    Returns:
        The header, content and padding.

    Raises:
        ValueError: a field is out of range or the content is too long.
    """
    if not 0 <= type <= 0xFF:
        msg = f"FastCGI record type {type} is out of range"
        raise ValueError(msg)
    if not 0 <= request_id <= 0xFFFF:
        msg = f"FastCGI request id {request_id} is out of range"
        raise ValueError(msg)
    if len(content) > FCGI_MAX_CONTENT:
        msg = f"FastCGI record content of {len(content)} bytes exceeds {FCGI_MAX_CONTENT}"
        raise ValueError(msg)
    padding = -len(content) % 8
    return _HEADER.pack(FCGI_VERSION_1, type, request_id, len(content), padding) + content + bytes(padding)


def encode_stream(type: int, request_id: int, data: bytes) -> bytes:
    """Encode ``data`` as stream records (PARAMS, STDIN, STDOUT, ...).

    ``data`` is split into records of at most 65535 bytes.  Empty ``data``
    gives the single empty record that ends a stream; non-empty ``data`` does
    *not* end the stream (an upgraded STDIN is never ended, see lighttpd).

    Args:
        type: record type.
        request_id: request id.
        data: the stream bytes.

    Returns:
        The encoded records.

    Raises:
        ValueError: ``type`` or ``request_id`` is out of range.
    """
    if not data:
        return encode_record(type, request_id, b"")
    view = memoryview(data)
    return b"".join(
        encode_record(type, request_id, bytes(view[start : start + FCGI_MAX_CONTENT]))
        for start in range(0, len(data), FCGI_MAX_CONTENT)
    )


def _encode_length(length: int) -> bytes:
    if length <= 0x7F:
        return bytes((length,))
    if length > _MAX_NV_LENGTH:
        msg = f"FastCGI name or value of {length} bytes is too long"
        raise ValueError(msg)
    return (length | 0x80000000).to_bytes(4, "big")


def encode_name_value_pairs(pairs: Mapping[str, str] | Iterable[tuple[bytes, bytes]]) -> bytes:
    """Encode name-value pairs (PARAMS, GET_VALUES, GET_VALUES_RESULT content).

    Each length is one byte up to 127, otherwise four bytes with the high bit
    set.

    Args:
        pairs: a string mapping (encoded as in
            :func:`wstrio._sansio.cgi.environ.encode_environ`) or byte pairs (sent as
            they are).

    Returns:
        The concatenated pairs (not yet split into records).

    Raises:
        ValueError: a name or value is longer than 2**31 - 1 bytes, or a
            mapping entry cannot be encoded.
    """
    items = encode_environ(pairs) if isinstance(pairs, Mapping) else pairs
    out = bytearray()
    for name, value in items:
        out += _encode_length(len(name))
        out += _encode_length(len(value))
        out += name
        out += value
    return bytes(out)


def decode_name_value_pairs(data: bytes) -> list[tuple[bytes, bytes]]:
    """Decode name-value pairs from a complete PARAMS (or GET_VALUES) stream.

    Args:
        data: the stream content, all records joined.

    Returns:
        ``(name, value)`` byte pairs, in order.

    Raises:
        ValueError: the data is truncated.
    """
    pairs: list[tuple[bytes, bytes]] = []
    pos = 0
    end = len(data)

    def length() -> int:
        nonlocal pos
        if pos >= end:
            msg = "FastCGI name-value pair truncated in a length"
            raise ValueError(msg)
        if data[pos] < 0x80:
            pos += 1
            return data[pos - 1]
        if pos + 4 > end:
            msg = "FastCGI name-value pair truncated in a 4-byte length"
            raise ValueError(msg)
        pos += 4
        return int.from_bytes(data[pos - 4 : pos], "big") & _MAX_NV_LENGTH

    while pos < end:
        name_len = length()
        value_len = length()
        if pos + name_len + value_len > end:
            msg = "FastCGI name-value pair truncated in its name or value"
            raise ValueError(msg)
        name = data[pos : pos + name_len]
        pos += name_len
        pairs.append((name, data[pos : pos + value_len]))
        pos += value_len
    return pairs


def encode_begin_request(request_id: int, role: int = RESPONDER, keep_conn: bool = False) -> bytes:
    """Encode an ``FCGI_BEGIN_REQUEST`` record.

    Args:
        request_id: request id (lighttpd always uses 1).
        role: :data:`RESPONDER`, :data:`AUTHORIZER` or :data:`FILTER`.
        keep_conn: set ``FCGI_KEEP_CONN`` (lighttpd never does).

    Returns:
        The record.

    Raises:
        ValueError: ``role`` or ``request_id`` is out of range.
    """
    if not 0 <= role <= 0xFFFF:
        msg = f"FastCGI role {role} is out of range"
        raise ValueError(msg)
    flags = FCGI_KEEP_CONN if keep_conn else 0
    return encode_record(BEGIN_REQUEST, request_id, _BEGIN_BODY.pack(role, flags))


def parse_begin_request(content: bytes) -> tuple[int, int]:
    """Decode an ``FCGI_BEGIN_REQUEST`` body.

    Args:
        content: the record content.

    Returns:
        ``(role, flags)``.

    Raises:
        ValueError: the content is not 8 bytes long.
    """
    if len(content) != _BEGIN_BODY.size:
        msg = f"FCGI_BEGIN_REQUEST body must be 8 bytes, not {len(content)}"
        raise ValueError(msg)
    role, flags = _BEGIN_BODY.unpack(content)
    return role, flags


def encode_params(request_id: int, environ: Mapping[str, str]) -> bytes:
    """Encode the environment as ``FCGI_PARAMS`` records plus the empty end record.

    Args:
        request_id: request id.
        environ: the CGI environment.

    Returns:
        The records.

    Raises:
        ValueError: an entry cannot be encoded.
    """
    data = encode_name_value_pairs(environ)
    if not data:
        return encode_record(PARAMS, request_id, b"")
    return encode_stream(PARAMS, request_id, data) + encode_record(PARAMS, request_id, b"")


def encode_end_request(request_id: int, app_status: int = 0, protocol_status: int = REQUEST_COMPLETE) -> bytes:
    """Encode an ``FCGI_END_REQUEST`` record (for test and example servers).

    Args:
        request_id: request id.
        app_status: the application's exit status, 0 to 2**32 - 1.
        protocol_status: :data:`REQUEST_COMPLETE`, :data:`CANT_MPX_CONN`, ...

    Returns:
        The record.

    Raises:
        ValueError: a status is out of range.
    """
    if not 0 <= app_status <= 0xFFFFFFFF:
        msg = f"FastCGI app status {app_status} is out of range"
        raise ValueError(msg)
    if not 0 <= protocol_status <= 0xFF:
        msg = f"FastCGI protocol status {protocol_status} is out of range"
        raise ValueError(msg)
    return encode_record(END_REQUEST, request_id, _END_BODY.pack(app_status, protocol_status))


def parse_end_request(content: bytes) -> tuple[int, int]:
    """Decode an ``FCGI_END_REQUEST`` body.

    Args:
        content: the record content.

    Returns:
        ``(app_status, protocol_status)``.

    Raises:
        ValueError: the content is not 8 bytes long.
    """
    if len(content) != _END_BODY.size:
        msg = f"FCGI_END_REQUEST body must be 8 bytes, not {len(content)}"
        raise ValueError(msg)
    app_status, protocol_status = _END_BODY.unpack(content)
    return app_status, protocol_status


@final
class RecordDecoder:
    """Incremental decoder of a FastCGI record stream.

    Records may arrive split across any number of :meth:`feed` calls;
    padding is skipped.  After a :class:`ValueError` the stream is
    unusable and every later call raises again.
    """

    def __init__(self) -> None:
        """Create a decoder with an empty buffer."""
        self._buf = bytearray()
        self._error: str | None = None

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete record held back (non-zero at EOF means truncation)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Record]:
        """Add bytes; return the records they complete, in order.

        Args:
            data: the next bytes from the backend (may be empty).

        Returns:
            The complete records (possibly none).

        Raises:
            ValueError: a record header has a version other than 1.
        """
        if self._error is not None:
            raise ValueError(self._error)
        self._buf += data
        records: list[Record] = []
        pos = 0
        buf = self._buf
        while len(buf) - pos >= FCGI_HEADER_LEN:
            version, rtype, request_id, content_len, padding = _HEADER.unpack_from(buf, pos)
            if version != FCGI_VERSION_1:
                # Not FastCGI (e.g. an HTTP or SCGI server on the socket).
                self._error = f"FastCGI record with version {version}, expected {FCGI_VERSION_1}"
                raise ValueError(self._error)
            end = pos + FCGI_HEADER_LEN + content_len + padding
            if len(buf) < end:
                break
            start = pos + FCGI_HEADER_LEN
            records.append(Record(rtype, request_id, bytes(buf[start : start + content_len])))
            pos = end
        del buf[:pos]
        return records
