"""CGI/1.1 (RFC 3875) request environment and script location, sans I/O.

Shared by the CGI, SCGI and FastCGI handlers: all three hand the backend the
same environment (lighttpd's ``http_cgi_headers``).  They read back the same
kind of response head too, parsed by :mod:`wstrio._sansio.cgi.response`.

Strings in an environment are *filesystem-decoded*: bytes from the wire are
decoded as UTF-8 with ``surrogateescape``, which is what :mod:`os` and
:mod:`subprocess` use to turn ``str`` back into bytes for ``execve``.  So a
header value that is not UTF-8 reaches a CGI byte for byte, and
:func:`encode_environ` (used for SCGI and FastCGI) restores the same bytes.

Never imports trio; performs no I/O.
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from wstrio._sansio.http.request import Request

__all__ = [
    "build_cgi_environ",
    "encode_environ",
    "environ_decode",
    "find_script",
    "split_script_path",
]

_ENCODING = "utf-8"
_ERRORS = "surrogateescape"

_EMPTY: Mapping[str, str] = MappingProxyType({})

# A request header may become an HTTP_* variable only if its name is made of
# these characters.  '-' maps to '_', so the mapping is injective and no
# header can pose as another one (``X_Foo`` vs ``X-Foo``) or as a variable the
# gateway sets itself; lighttpd maps every non-alphanumeric byte to '_' and so
# lets such names collide.
_CGI_HEADER_NAME = re.compile(rb"[A-Za-z0-9-]+\Z")
# Names accepted in ``extra``: a plain shell-style identifier.
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Bytes that cannot be carried in an environment value (NUL ends a C string)
# or that would let a value smuggle a new header line into a CGI's view.
_BAD_VALUE_BYTES = re.compile(rb"[\x00\r\n]")


def environ_decode(data: bytes) -> str:
    """Decode wire bytes into an environment string (UTF-8, ``surrogateescape``).

    Args:
        data: raw bytes from a request line or header.

    Returns:
        A string that :func:`os.fsencode` (and :func:`encode_environ`) turn back
        into exactly ``data``.
    """
    return data.decode(_ENCODING, _ERRORS)


def _environ_encode(text: str) -> bytes:
    return text.encode(_ENCODING, _ERRORS)


def encode_environ(environ: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    """Encode an environment for the wire (SCGI, FastCGI), keeping its order.

    Args:
        environ: variable names and values, as built by :func:`build_cgi_environ`.

    Returns:
        ``(name, value)`` byte pairs, in the mapping's order.

    Raises:
        ValueError: a name is empty or contains ``=`` or NUL, a value contains
            NUL, or a string cannot be encoded (a surrogate that is not a
            ``surrogateescape`` byte).
    """
    pairs: list[tuple[bytes, bytes]] = []
    for name, value in environ.items():
        if not name:
            msg = "environment variable name is empty"
            raise ValueError(msg)
        if "=" in name or "\0" in name:
            msg = f"environment variable name {name!r} contains '=' or NUL"
            raise ValueError(msg)
        if "\0" in value:
            msg = f"environment variable {name} contains a NUL byte"
            raise ValueError(msg)
        pairs.append((_environ_encode(name), _environ_encode(value)))
    return pairs


def _cgi_header_name(name: bytes) -> str:
    return "HTTP_" + name.decode("ascii").upper().replace("-", "_")


def _strip_port(authority: str) -> str:
    # As lighttpd: "[v6]:port" keeps the brackets, "host:port" loses the port.
    if authority.startswith("["):
        end = authority.find("]:")
        return authority[: end + 1] if end >= 0 else authority
    return authority.partition(":")[0]


def _server_protocol(request: Request) -> str:
    if request.h2:
        # An extended CONNECT WebSocket is presented as an HTTP/1.1 upgrade so
        # that an unmodified CGI (ws_echo.py) can answer it; other HTTP/2
        # requests get lighttpd's name for the version.
        return "HTTP/1.1" if request.websocket else "HTTP/2.0"
    return f"HTTP/{request.http_version}"


def build_cgi_environ(
    request: Request,
    *,
    script_name: str,
    path_info: str,
    script_filename: str | None,
    document_root: str | None,
    server_software: str,
    server_name: str | None = None,
    content_length: int | None,
    extra: Mapping[str, str] = _EMPTY,
    allow_upgrade: bool = True,
) -> dict[str, str]:
    """Build the CGI/1.1 environment for ``request`` as lighttpd does.

    The variables, in order: ``CONTENT_LENGTH`` (always first, as SCGI needs),
    ``CONTENT_TYPE`` (if the request has one), ``QUERY_STRING``,
    ``REQUEST_URI`` (the raw target), ``REDIRECT_STATUS=200``, ``SCRIPT_NAME``,
    ``PATH_INFO`` and ``PATH_TRANSLATED`` (only with path info),
    ``SCRIPT_FILENAME``, ``DOCUMENT_ROOT``, ``REQUEST_METHOD``,
    ``SERVER_PROTOCOL``, ``SERVER_SOFTWARE``, ``GATEWAY_INTERFACE=CGI/1.1``,
    ``REQUEST_SCHEME``, ``HTTPS=on`` (https only), ``SERVER_PORT``,
    ``SERVER_ADDR``, ``SERVER_NAME``, ``REMOTE_ADDR``, ``REMOTE_PORT``, one
    ``HTTP_*`` per request header, then ``extra``.  No ``PATH`` is added.

    Request headers:

    * repeated fields are joined with ``", "`` (``Cookie`` with ``"; "``);
    * fields with an empty value are left out, as lighttpd does;
    * ``Proxy`` is never passed (httpoxy: no ``HTTP_PROXY``);
    * names with any character outside ``[A-Za-z0-9-]`` (an underscore, a
      dot, ...) are dropped, so no header can pose as another variable;
    * values containing NUL, CR or LF are dropped (an environment cannot hold
      NUL, and h2 is laxer than h1 here);
    * ``Content-Type`` becomes ``CONTENT_TYPE`` and ``Content-Length`` is not
      passed at all: ``CONTENT_LENGTH`` comes from ``content_length``.

    An HTTP/2 extended CONNECT WebSocket is presented as an HTTP/1.1 upgrade:
    ``REQUEST_METHOD=GET``, ``SERVER_PROTOCOL=HTTP/1.1``,
    ``HTTP_UPGRADE=websocket`` and ``HTTP_CONNECTION=upgrade``.  The caller
    must put a ``sec-websocket-key`` into ``request.headers`` if it wants the
    CGI to see ``HTTP_SEC_WEBSOCKET_KEY`` (HTTP/2 clients send none).

    A connection on a unix socket (``request.client``/``request.server`` is
    ``None``) gives ``REMOTE_ADDR=""``, ``REMOTE_PORT="0"``,
    ``SERVER_ADDR=""`` and ``SERVER_PORT="0"``, as lighttpd does: the
    variables stay present (RFC 3875 says they MUST be), nothing pretends to
    be a loopback peer, and the ports still parse as integers.

    Args:
        request: the request (or WebSocket handshake).
        script_name: ``SCRIPT_NAME`` (URL path of the script).
        path_info: ``PATH_INFO``; ``""`` for none.
        script_filename: ``SCRIPT_FILENAME``; ``None`` leaves it out.
        document_root: ``DOCUMENT_ROOT``, also the base of
            ``PATH_TRANSLATED``; ``None`` leaves both out.
        server_software: ``SERVER_SOFTWARE``.
        server_name: the configured server name; ``None`` uses the ``Host``
            header, then ``SERVER_ADDR``.  A ``:port`` suffix is removed.
        content_length: the request body length.  ``None`` (a body of unknown
            length, e.g. an upgraded stream that lasts until EOF) gives
            ``"0"``, which is what a WebSocket GET must show; pass the real
            length whenever it is known.
        extra: further variables (the request environment: configured
            variables, ``REMOTE_USER``...), added last; they override the
            computed ones, since they come from configuration, not the client.
        allow_upgrade: ``False`` when the upgrade policy refuses the upgrade:
            the ``Upgrade`` header is then not passed (``Connection`` is left
            as sent, as lighttpd does) and an HTTP/2 WebSocket gets no
            synthesized upgrade variables.

    Returns:
        The environment, in the order above.

    Raises:
        ValueError: a negative ``content_length``, or an ``extra`` name that is
            not an identifier or a value with NUL.
    """
    if content_length is not None and content_length < 0:
        msg = f"content_length must not be negative, not {content_length}"
        raise ValueError(msg)

    env: dict[str, str] = {}
    env["CONTENT_LENGTH"] = str(content_length or 0)
    content_type = request.header_values(b"content-type")
    if content_type:
        env["CONTENT_TYPE"] = environ_decode(b", ".join(content_type))
    # request.query is ASCII or Latin-1-decoded raw bytes, so this recovers
    # the bytes the client sent.
    env["QUERY_STRING"] = environ_decode(request.query.encode("latin-1"))
    env["REQUEST_URI"] = environ_decode(request.target)
    # PHP built with --force-redirect refuses to run without it.
    env["REDIRECT_STATUS"] = "200"
    env["SCRIPT_NAME"] = script_name
    if path_info:
        env["PATH_INFO"] = path_info
        if document_root is not None:
            env["PATH_TRANSLATED"] = document_root.rstrip("/") + "/" + path_info.lstrip("/")
    if script_filename is not None:
        env["SCRIPT_FILENAME"] = script_filename
    if document_root is not None:
        env["DOCUMENT_ROOT"] = document_root

    h2_websocket = request.h2 and request.websocket
    env["REQUEST_METHOD"] = "GET" if h2_websocket else request.method
    env["SERVER_PROTOCOL"] = _server_protocol(request)
    env["SERVER_SOFTWARE"] = server_software
    env["GATEWAY_INTERFACE"] = "CGI/1.1"
    env["REQUEST_SCHEME"] = request.scheme
    if request.scheme == "https":
        env["HTTPS"] = "on"

    server_addr, server_port = request.server if request.server is not None else ("", 0)
    env["SERVER_PORT"] = str(server_port)
    env["SERVER_ADDR"] = server_addr
    name = server_name if server_name is not None else request.host
    env["SERVER_NAME"] = _strip_port(name) if name else server_addr
    remote_addr, remote_port = request.client if request.client is not None else ("", 0)
    env["REMOTE_ADDR"] = remote_addr
    env["REMOTE_PORT"] = str(remote_port)

    env.update(_header_variables(request, allow_upgrade=allow_upgrade))
    if h2_websocket and allow_upgrade:
        env["HTTP_UPGRADE"] = "websocket"
        env["HTTP_CONNECTION"] = "upgrade"

    for key, value in extra.items():
        if not _ENV_NAME.match(key):
            msg = f"extra environment variable name {key!r} is not an identifier"
            raise ValueError(msg)
        if "\0" in value:
            msg = f"extra environment variable {key} contains a NUL byte"
            raise ValueError(msg)
        env[key] = value
    return env


def _header_variables(request: Request, *, allow_upgrade: bool) -> dict[str, str]:
    """The ``HTTP_*`` variables of ``request``'s headers (see :func:`build_cgi_environ`)."""
    grouped: dict[bytes, list[bytes]] = {}
    for key, value in request.headers:
        name = key.lower()
        if name in (b"content-type", b"content-length", b"proxy"):
            # CONTENT_* are set from the request itself; "Proxy" would become
            # HTTP_PROXY, which many programs take as their outgoing proxy.
            continue
        if name == b"upgrade" and not allow_upgrade:
            continue
        if not _CGI_HEADER_NAME.match(name) or _BAD_VALUE_BYTES.search(value):
            continue
        grouped.setdefault(name, []).append(value)
    variables: dict[str, str] = {}
    for name, values in grouped.items():
        joined = (b"; " if name == b"cookie" else b", ").join(v for v in values if v)
        if joined:
            variables[_cgi_header_name(name)] = environ_decode(joined)
    return variables


def split_script_path(path: str, prefix: str, *, fix_root_scriptname: bool = False) -> tuple[str, str]:
    """Split ``path`` into ``SCRIPT_NAME`` and ``PATH_INFO`` for a prefix route.

    lighttpd's rule for prefix keys with ``check-local`` disabled: the script
    ends at the next ``/`` after the prefix, so prefix ``/ws/`` and path
    ``/ws/x/y`` give ``("/ws/x", "/y")``, and prefix ``/app.fcgi`` with path
    ``/app.fcgi/a/b`` gives ``("/app.fcgi", "/a/b")``.  A path with no further
    ``/`` is all script.  A prefix not starting with ``/`` (an extension key)
    never splits.

    Args:
        path: the decoded, normalised URL path.
        prefix: the route's key; ``path`` must start with it.
        fix_root_scriptname: lighttpd's ``fix-root-scriptname``: with prefix
            ``/`` the whole path becomes ``PATH_INFO`` and ``SCRIPT_NAME`` is
            empty.

    Returns:
        ``(script_name, path_info)``; ``script_name + path_info == path``.

    Raises:
        ValueError: ``path`` does not start with a ``/`` prefix.
    """
    if not prefix.startswith("/"):
        return path, ""
    if not path.startswith(prefix):
        msg = f"path {path!r} does not start with the route prefix {prefix!r}"
        raise ValueError(msg)
    if fix_root_scriptname and prefix == "/":
        return "", path
    slash = path.find("/", len(prefix))
    if slash < 0:
        return path, ""
    return path[:slash], path[slash:]


def find_script(path: str, is_file: Callable[[str], bool]) -> tuple[str, str] | None:
    """Find the script a CGI URL names, walking path segments from the left.

    ``/cgi-bin/echo.py/a/b`` asks ``is_file`` about ``/cgi-bin``, then
    ``/cgi-bin/echo.py``; if that is a file the result is
    ``("/cgi-bin/echo.py", "/a/b")``.  Walking from the left gives the same
    answer as lighttpd's stat-and-strip from the right (a file has no
    children), and never takes a directory for the script.

    Args:
        path: the decoded, normalised URL path.
        is_file: tells whether a URL-path prefix (always starting with ``/``,
            never ending with one) is a regular file.  The I/O layer maps it
            under the document root.

    Returns:
        ``(script_name, path_info)``, or ``None`` when no prefix is a file.
    """
    end = 0
    while end < len(path):
        slash = path.find("/", end + 1)
        end = len(path) if slash < 0 else slash
        candidate = path[:end]
        if candidate.endswith("/"):
            # An empty segment ("//"): nothing to stat.
            continue
        if is_file(candidate):
            return candidate, path[end:]
    return None
