"""The request value every handler sees, whatever the HTTP version.

An HTTP/1.1 request (h11) and an HTTP/2 stream (h2) are both turned into one
:class:`Request`.  A WebSocket request is ``websocket=True`` either way: an
HTTP/1.1 ``GET`` with ``Upgrade: websocket`` and ``Connection: upgrade``, or an
HTTP/2 extended CONNECT with ``:protocol websocket`` (RFC 8441).

Never imports trio.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import NoReturn, final
from urllib.parse import unquote_to_bytes

import attrs

from wstrio._errors import BadRequest

__all__ = [
    "H2_CONNECTION_HEADERS",
    "Request",
    "check_field_value",
    "check_h1_framing",
    "check_host",
    "has_token",
    "header_list_size",
    "normalize_target",
    "split_absolute_form",
]

Headers = tuple[tuple[bytes, bytes], ...]

H2_CONNECTION_HEADERS = frozenset([b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade"])
"""Connection-specific header fields, which HTTP/2 forbids (RFC 9113 section 8.2.2)."""

_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_H2_REQUEST_PSEUDO = frozenset([b":method", b":scheme", b":authority", b":path", b":protocol"])
# RFC 3986 section 3.2.2: reg-name = *( unreserved / pct-encoded / sub-delims ).
_REG_NAME = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=%")
_HEXDIG = frozenset(b"0123456789ABCDEFabcdef")
# IPvFuture = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )
_IPVFUTURE_TAIL = (_REG_NAME - {ord("%")}) | {ord(":")}
# RFC 3986 section 3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
_SCHEME_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-.")
# Control bytes a field value may not hold (RFC 9110 section 5.5): all but HTAB.
_CTL = frozenset([*range(0x09), *range(0x0A, 0x20), 0x7F])


def _bad_host(value: bytes, why: str) -> NoReturn:
    msg = f"invalid Host {value[:80]!r}: {why}"
    raise BadRequest(msg, 400)


def check_host(value: bytes) -> None:
    """Refuse a ``Host`` (or ``:authority``) that is not ``uri-host [":" port]``.

    RFC 9112 section 3.2 and RFC 3986 section 3.2.2: a reg-name (letters,
    digits, ``-._~``, sub-delims, valid ``%XX``; an IPv4 address is one), an
    ``[IPv6]`` or ``[vX.future]`` literal, then an optional port of digits.
    No userinfo, path, whitespace or control bytes.  An empty value is valid
    (a URI without an authority).

    Raises:
        BadRequest: 400.
    """
    if value.startswith(b"["):
        literal, sep, rest = value[1:].partition(b"]")
        if not sep:
            _bad_host(value, "no ']' after the IP literal")
        if literal[:1] in (b"v", b"V"):
            version, dot, tail = literal[1:].partition(b".")
            if not (version and dot and tail) or not set(version) <= _HEXDIG or not set(tail) <= _IPVFUTURE_TAIL:
                _bad_host(value, "not an IPvFuture literal")
        else:
            try:
                ipaddress.IPv6Address(literal.decode("ascii"))
            except (UnicodeDecodeError, ValueError):
                _bad_host(value, "not an IPv6 address")
    else:
        colon = value.find(b":")
        name = value if colon < 0 else value[:colon]
        rest = b"" if colon < 0 else value[colon:]
        if not set(name) <= _REG_NAME:
            _bad_host(value, "a character that no host name has")
        for i in range(len(name)):
            if name[i] == 0x25 and not (len(name[i + 1 : i + 3]) == 2 and set(name[i + 1 : i + 3]) <= _HEXDIG):
                _bad_host(value, "'%' not followed by two hex digits")
    if rest and (rest[:1] != b":" or (not rest[1:].isdigit() and rest != b":")):
        _bad_host(value, "the port is not a number")


def check_field_value(name: bytes, value: bytes) -> None:
    """Refuse a header value with a control byte other than HTAB (RFC 9110 section 5.5).

    Such a value is never passed on to a backend, a CGI program or a log.

    Raises:
        BadRequest: 400.
    """
    if not _CTL.isdisjoint(value):
        msg = f"header {name[:80]!r} has a control byte in its value"
        raise BadRequest(msg, 400)


def header_list_size(headers: Iterable[tuple[bytes, bytes]]) -> int:
    """The size of a header list as HTTP/2 counts it: name + value + 32 per field (RFC 9113 6.5.2)."""
    return sum(len(name) + len(value) + 32 for name, value in headers)


def _reject_malformed(message: str) -> NoReturn:
    msg = f"malformed HTTP/2 request: {message}"
    raise BadRequest(msg, 400)


def _check_h2_field(name: bytes, value: bytes) -> None:
    # RFC 9113 8.2.1: lower-case names of visible ASCII without ':'; values
    # without NUL, CR or LF and without surrounding whitespace.
    if not name:
        _reject_malformed("empty header name")
    for c in name:
        if c <= 0x20 or 0x41 <= c <= 0x5A or c >= 0x7F or c == 0x3A:
            _reject_malformed(f"invalid header name {name[:80]!r} (names are lower-case tokens)")
    if b"\0" in value or b"\r" in value or b"\n" in value:
        _reject_malformed(f"header {name!r} has a NUL, CR or LF in its value")
    check_field_value(name, value)
    if value[:1] in (b" ", b"\t") or value[-1:] in (b" ", b"\t"):
        _reject_malformed(f"header {name!r} has whitespace around its value")


def check_h1_framing(headers: Iterable[tuple[bytes, bytes]], http_version: bytes) -> None:
    """Refuse an HTTP/1.x request whose body framing is ambiguous (RFC 9112 section 6.1).

    ``headers`` as received (names in any case).  Both ``Transfer-Encoding`` and
    ``Content-Length`` is the classic smuggling request: one hop reads the
    chunked body, another the length, and the bytes in between become a
    second request.  HTTP/1.0 has no transfer codings, so a
    ``Transfer-Encoding`` there is faulty framing too.  Both are refused
    rather than read one way and closed (RFC 9112 allows either); the
    caller closes the connection after the 400, so nothing that follows on
    it is read as a request.  (h11 itself refuses differing
    ``Content-Length`` values and transfer codings other than ``chunked``.)

    Raises:
        BadRequest: 400.
    """
    names = {name.lower() for name, _ in headers}
    if b"transfer-encoding" not in names:
        return
    if b"content-length" in names:
        msg = "request has both Transfer-Encoding and Content-Length"
        raise BadRequest(msg, 400)
    if http_version != b"1.1":
        msg = f"HTTP/{http_version.decode('latin-1')} request with Transfer-Encoding"
        raise BadRequest(msg, 400)


def has_token(value: bytes | None, token: bytes) -> bool:
    """True if the comma-separated header ``value`` contains ``token`` (case-insensitive).

    As lighttpd's ``http_header_str_contains_token``: ``;`` also ends a token.
    """
    if not value:
        return False
    token = token.lower()
    for part in value.split(b","):
        if part.split(b";", 1)[0].strip().lower() == token:
            return True
    return False


def normalize_target(target: bytes) -> tuple[str, str]:
    """Split a request-target into a decoded, normalised path and the raw query.

    ``.`` and ``..`` segments are resolved (after percent-decoding, so
    ``%2e%2e`` is ``..``); a ``..`` that would climb above ``/`` is a 400, as
    are NUL bytes, invalid UTF-8 and targets that are not in origin form.

    Returns:
        ``(path, query)``; ``path`` always starts with ``/``.

    Raises:
        BadRequest: 400 for a target that cannot be served.
    """
    raw_path, _, query = target.partition(b"?")
    raw_path = raw_path.partition(b"#")[0]
    if not raw_path.startswith(b"/"):
        if target == b"*":
            msg = "the asterisk target is only for OPTIONS"
        else:
            msg = f"request-target must start with '/', not {target[:80]!r}"
        raise BadRequest(msg, 400)
    decoded = unquote_to_bytes(raw_path)
    if b"\0" in decoded:
        msg = "request path contains a NUL byte"
        raise BadRequest(msg, 400)
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        msg = "request path is not valid UTF-8"
        raise BadRequest(msg, 400) from None
    parts: list[str] = []
    segments = text.split("/")
    for seg in segments[1:-1]:
        if seg in ("", "."):
            continue
        if seg == "..":
            if not parts:
                msg = "request path climbs above the root"
                raise BadRequest(msg, 400)
            parts.pop()
            continue
        parts.append(seg)
    last = segments[-1] if len(segments) > 1 else ""
    trailing = last in ("", ".", "..")
    if last == "..":
        if not parts:
            msg = "request path climbs above the root"
            raise BadRequest(msg, 400)
        parts.pop()
    elif last not in ("", "."):
        parts.append(last)
    path = "/" + "/".join(parts)
    if trailing and parts:
        path += "/"
    try:
        query_text = query.decode("ascii")
    except UnicodeDecodeError:
        query_text = query.decode("latin-1")
    return path, query_text


def split_absolute_form(target: bytes) -> tuple[bytes, bytes] | None:
    """Split an absolute-form request-target into its authority and origin form.

    RFC 9112 section 3.2.2: a server MUST accept ``http://host:port/path?q``
    (what a client sends to a proxy).  The authority then stands for the
    ``Host`` header, and the rest is the target as origin form (an empty path
    is ``/``).

    Returns:
        ``(authority, origin_form)``, or ``None`` for a target that is not in
        absolute form (origin form, ``*``, or something else that
        :func:`normalize_target` refuses).

    Raises:
        BadRequest: 400 for a scheme other than ``http`` or ``https``, an
            empty authority, or userinfo (``user@host``, which RFC 9110
            section 4.2.4 says to treat as an error).
    """
    if target.startswith(b"/"):
        return None
    scheme, sep, rest = target.partition(b"://")
    if not sep or not scheme or not all(c in _SCHEME_CHARS for c in scheme):
        return None
    if scheme.lower() not in (b"http", b"https"):
        msg = f"absolute-form target with scheme {scheme[:20]!r}; only http and https are served"
        raise BadRequest(msg, 400)
    end = len(rest)
    for delimiter in b"/?#":
        at = rest.find(bytes([delimiter]))
        if at != -1:
            end = min(end, at)
    authority, tail = rest[:end], rest[end:]
    if not authority:
        msg = f"absolute-form target without a host: {target[:80]!r}"
        raise BadRequest(msg, 400)
    if b"@" in authority:
        msg = f"absolute-form target with userinfo: {target[:80]!r}"
        raise BadRequest(msg, 400)
    if not tail.startswith(b"/"):
        tail = b"/" + tail
    return authority, tail


def _path_and_query(method: bytes, target: bytes) -> tuple[str, str]:
    # ``OPTIONS *`` asks about the server, not a resource (RFC 9110 section
    # 9.3.7): its path is ``*``, which no route matches; the HTTP layers answer it.
    if target == b"*" and method == b"OPTIONS":
        return "*", ""
    return normalize_target(target)


@final
@attrs.frozen
class Request:
    """One request (or WebSocket handshake), independent of the HTTP version."""

    method: str
    """``GET``, ``POST``, ...

    An HTTP/2 extended CONNECT WebSocket (``:method CONNECT``, ``:protocol
    websocket``) is presented as ``GET``, like the HTTP/1.1 handshake it stands
    for: handlers check :attr:`websocket` and :attr:`h2`, and a gateway that
    passes it to an HTTP/1.1 backend sends ``GET`` (as lighttpd does for
    mod_proxy and CGI).  Only the access log shows the wire method."""
    target: bytes
    """The raw request-target (path and query, not decoded), in origin form.

    An absolute-form target (``GET http://host/path HTTP/1.1``, RFC 9112
    section 3.2.2) is reduced to its path and query here, and its authority
    replaces the ``Host`` header, as the RFC says; ``OPTIONS *`` keeps ``*``."""
    path: str
    """The percent-decoded, normalised URL path, without the query (``*`` for ``OPTIONS *``)."""
    query: str
    """The raw query string, without the ``?``."""
    headers: Headers
    """Header fields in order, names lower-cased.  HTTP/2 pseudo-headers are removed;
    ``:authority`` becomes ``host``."""
    http_version: str = "1.1"
    """``"1.0"``, ``"1.1"`` or ``"2"``."""
    scheme: str = "http"
    """``"http"`` or ``"https"``."""
    client: tuple[str, int] | None = None
    """Remote address and port (``None`` on a unix socket)."""
    server: tuple[str, int] | None = None
    """Local address and port (``None`` on a unix socket)."""
    websocket: bool = False
    """A WebSocket handshake: h1 ``Upgrade: websocket`` or h2 ``:protocol websocket``."""
    upgrade: bytes | None = None
    """The ``Upgrade`` header (h1) or ``:protocol`` (h2), if any."""
    peer: tuple[str, int] | None = None
    """The connection's own peer when :attr:`client` was learned from a trusted proxy's
    ``X-Forwarded-For``/``Forwarded`` (``forwarded-trust``); ``None`` otherwise (then the peer is the client)."""

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower-case), or ``None``."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_values(self, name: bytes) -> list[bytes]:
        """Every value of header ``name`` (lower-case), in order."""
        return [value for key, value in self.headers if key == name]

    @property
    def host(self) -> str:
        """The ``Host`` header (or ``:authority``), or ``""``."""
        value = self.header(b"host")
        return value.decode("latin-1") if value is not None else ""

    @property
    def h2(self) -> bool:
        """True for a request on an HTTP/2 stream."""
        return self.http_version == "2"

    @classmethod
    def from_h1(
        cls,
        method: bytes,
        target: bytes,
        headers: Iterable[tuple[bytes, bytes]],
        http_version: bytes,
        *,
        scheme: str = "http",
        client: tuple[str, int] | None = None,
        server: tuple[str, int] | None = None,
    ) -> Request:
        """Build a request from h11's parsed request line and headers.

        The body framing is not checked here (the HTTP/1.1 layer calls
        :func:`check_h1_framing` first).

        Every header value is checked (:func:`check_field_value`), and the
        ``Host``: exactly one on HTTP/1.1, at most one on HTTP/1.0, each
        valid (:func:`check_host`).  h11 has already refused NUL, CR and LF
        in values and joined any obs-fold into one space (RFC 9112 section
        5.2 allows that).

        An absolute-form target's authority replaces the ``Host`` header
        (RFC 9112 section 3.2.2; it is checked as a ``Host`` is), and the
        target becomes origin form: see :attr:`target`.

        Raises:
            BadRequest: 400 for an unusable target or header.
        """
        absolute = split_absolute_form(target)
        if absolute is not None:
            authority, target = absolute
        path, query = _path_and_query(method, target)
        hdrs = tuple((k.lower(), v) for k, v in headers)
        hosts = []
        for k, v in hdrs:
            check_field_value(k, v)
            if k == b"host":
                hosts.append(v)
        if len(hosts) > 1:
            msg = "more than one Host header"
            raise BadRequest(msg, 400)
        if absolute is not None:
            check_host(authority)
            hdrs = ((b"host", authority), *(h for h in hdrs if h[0] != b"host"))
        elif hosts:
            check_host(hosts[0])
        elif http_version == b"1.1":
            msg = "HTTP/1.1 request without a Host header"
            raise BadRequest(msg, 400)
        upgrade = None
        connection = b",".join(v for k, v in hdrs if k == b"connection")
        for k, v in hdrs:
            if k == b"upgrade":
                upgrade = v
                break
        websocket = (
            method == b"GET"
            and http_version == b"1.1"
            and has_token(upgrade, b"websocket")
            and has_token(connection, b"upgrade")
        )
        return cls(
            method=method.decode("ascii"),
            target=target,
            path=path,
            query=query,
            headers=hdrs,
            http_version=http_version.decode("ascii"),
            scheme=scheme,
            client=client,
            server=server,
            websocket=websocket,
            upgrade=upgrade,
        )

    @classmethod
    def from_h2(
        cls,
        headers: Iterable[tuple[bytes, bytes]],
        *,
        scheme: str = "https",
        client: tuple[str, int] | None = None,
        server: tuple[str, int] | None = None,
        max_header_list_size: int | None = None,
        max_headers: int | None = None,
    ) -> Request:
        """Build a request from the header block of an HTTP/2 stream.

        h2 is run without its own header validation (it would turn one bad
        request into an error of the whole connection, killing every other
        WebSocket on it), so every rule of RFC 9113 section 8 and RFC 8441 is
        checked here, with lighttpd's answers (reference section 9):

        * pseudo-headers first, each at most once, only the request ones;
          names lower-case; no connection-specific fields (an ``upgrade``
          header is a 400, as in lighttpd); ``te`` only ``trailers``: else 400;
        * ``:method`` always; ``:scheme`` and ``:path`` for everything but a
          plain CONNECT (so also for extended CONNECT): else 400;
        * ``:protocol`` only with CONNECT: else 400 (lighttpd ignores it; RFC
          8441 section 4 makes such a request malformed);
        * extended CONNECT with a ``:protocol`` other than ``websocket``: 405;
          a plain CONNECT (a proxy tunnel to ``:authority``): 405;
        * header list above ``max_header_list_size`` (counted as SETTINGS
          does) or more than ``max_headers`` fields: 431.

        ``:authority`` becomes the ``host`` header (it wins over a ``host``
        field, RFC 9113 8.3.1).  An extended CONNECT WebSocket is presented
        with method ``GET`` and ``websocket=True``; ``upgrade`` holds the
        ``:protocol`` value.  ``scheme`` is the connection's (``https`` on TLS),
        not the client's ``:scheme``.

        Raises:
            BadRequest: with the status to answer (400, 405 or 431).
        """
        pseudo: dict[bytes, bytes] = {}
        regular: list[tuple[bytes, bytes]] = []
        size = 0
        for name, value in headers:
            size += len(name) + len(value) + 32
            if name.startswith(b":"):
                if regular:
                    _reject_malformed(f"pseudo-header {name!r} after a regular header")
                if name not in _H2_REQUEST_PSEUDO:
                    _reject_malformed(f"unknown or response pseudo-header {name[:80]!r}")
                if name in pseudo:
                    _reject_malformed(f"pseudo-header {name!r} given twice")
                pseudo[name] = value
                continue
            _check_h2_field(name, value)
            if name in H2_CONNECTION_HEADERS:
                msg = f"connection-specific header {name!r} is not allowed in HTTP/2"
                raise BadRequest(msg, 400)
            if name == b"te" and value.lower() != b"trailers":
                _reject_malformed(f"te must be 'trailers', not {value[:80]!r}")
            regular.append((name, value))
        if max_header_list_size is not None and size > max_header_list_size:
            msg = f"header list of {size} bytes is larger than {max_header_list_size}"
            raise BadRequest(msg, 431)
        if max_headers is not None and len(regular) > max_headers:
            msg = f"{len(regular)} header fields, more than {max_headers}"
            raise BadRequest(msg, 431)
        method = pseudo.get(b":method")
        if not method:
            _reject_malformed("no :method")
        protocol = pseudo.get(b":protocol")
        websocket = False
        if method == b"CONNECT":
            if protocol is None:
                msg = "CONNECT to a host is not supported (only extended CONNECT with :protocol websocket)"
                raise BadRequest(msg, 405)
            if b":scheme" not in pseudo or b":path" not in pseudo:
                _reject_malformed("extended CONNECT without :scheme or :path")
            if protocol.lower() != b"websocket":
                msg = f"extended CONNECT for :protocol {protocol[:80]!r}; only 'websocket' is supported"
                raise BadRequest(msg, 405)
            websocket = True
        elif protocol is not None:
            _reject_malformed(f":protocol with method {method[:20]!r} (only CONNECT takes it)")
        elif b":scheme" not in pseudo or b":path" not in pseudo:
            _reject_malformed("no :scheme or :path")
        target = pseudo[b":path"]
        path, query = _path_and_query(method, target)
        authority = pseudo.get(b":authority")
        hosts = [v for k, v in regular if k == b"host"]
        if authority is None and len(hosts) > 1:
            _reject_malformed("more than one host header")
        for value in [authority] if authority is not None else hosts:
            check_host(value)
        if authority is not None:
            hdrs = ((b"host", authority), *(h for h in regular if h[0] != b"host"))
        else:
            hdrs = tuple(regular)
        if not all(c in _TCHAR for c in method):
            _reject_malformed(f":method {method[:20]!r} is not a token")
        method_text = "GET" if websocket else method.decode("ascii")
        return cls(
            method=method_text,
            target=target,
            path=path,
            query=query,
            headers=hdrs,
            http_version="2",
            scheme=scheme,
            client=client,
            server=server,
            websocket=websocket,
            upgrade=protocol,
        )
