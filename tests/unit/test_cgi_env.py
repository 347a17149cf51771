"""Unit tests for the CGI environment and script-path helpers (wstrio._sansio.cgi.environ)."""

from __future__ import annotations

import os

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wstrio._sansio.cgi.environ import (
    build_cgi_environ,
    encode_environ,
    environ_decode,
    find_script,
    split_script_path,
)
from wstrio._sansio.http.request import Request

WS_HEADERS = [
    (b"Host", b"example.com:8080"),
    (b"Upgrade", b"websocket"),
    (b"Connection", b"keep-alive, Upgrade"),
    (b"Origin", b"http://example.com:8080"),
    (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
    (b"Sec-WebSocket-Version", b"13"),
]


def ws_request(
    target: bytes = b"/ws/ws_echo.py?x=1",
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    scheme: str = "http",
) -> Request:
    headers = WS_HEADERS if headers is None else headers
    # from_h1 refuses control bytes and a missing, repeated or invalid Host
    # (issue 12); the environment must be safe whatever a Request holds.
    checked = [
        (k, v) for k, v in headers if k.lower() != b"host" and not any(c < 9 or 9 < c < 32 or c == 127 for c in v)
    ]
    request = Request.from_h1(
        b"GET",
        target,
        [(b"Host", b"h"), *checked],
        b"1.1",
        scheme=scheme,
        client=("192.0.2.7", 50123),
        server=("192.0.2.1", 8080),
    )
    return attrs.evolve(request, headers=tuple((k.lower(), v) for k, v in headers))


def environ(request: Request, **kwargs: object) -> dict[str, str]:
    options: dict[str, object] = {
        "script_name": "/ws/ws_echo.py",
        "path_info": "",
        "script_filename": "/srv/www/ws/ws_echo.py",
        "document_root": "/srv/www",
        "server_software": "wstrio/test",
        "content_length": None,
    }
    options.update(kwargs)
    return build_cgi_environ(request, **options)  # type: ignore[arg-type]


def h2_websocket(headers: tuple[tuple[bytes, bytes], ...]) -> Request:
    return Request(
        method="GET",
        target=b"/ws/ws_echo.py",
        path="/ws/ws_echo.py",
        query="",
        headers=headers,
        http_version="2",
        scheme="https",
        client=("2001:db8::7", 443),
        server=("2001:db8::1", 8443),
        websocket=True,
        upgrade=b"websocket",
    )


# --- the variables ws_echo.py and lighttpd's CGI see -------------------------


def test_websocket_request_has_what_ws_echo_needs() -> None:
    env = environ(ws_request())
    # ws_echo.py raises KeyError without these, and checks HTTP_UPGRADE's value.
    assert env["HTTP_UPGRADE"] == "websocket"
    assert env["HTTP_ORIGIN"] == "http://example.com:8080"
    assert env["REQUEST_SCHEME"] == "http"
    assert env["HTTP_HOST"] == "example.com:8080"
    assert env["SCRIPT_NAME"] == "/ws/ws_echo.py"
    assert env["HTTP_SEC_WEBSOCKET_KEY"] == "dGhlIHNhbXBsZSBub25jZQ=="
    assert env["HTTP_SEC_WEBSOCKET_VERSION"] == "13"
    assert env["HTTP_CONNECTION"] == "keep-alive, Upgrade"


def test_websocket_request_full_environment() -> None:
    env = environ(ws_request())
    expected = {
        "CONTENT_LENGTH": "0",
        "QUERY_STRING": "x=1",
        "REQUEST_URI": "/ws/ws_echo.py?x=1",
        "REDIRECT_STATUS": "200",
        "SCRIPT_NAME": "/ws/ws_echo.py",
        "SCRIPT_FILENAME": "/srv/www/ws/ws_echo.py",
        "DOCUMENT_ROOT": "/srv/www",
        "REQUEST_METHOD": "GET",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_SOFTWARE": "wstrio/test",
        "GATEWAY_INTERFACE": "CGI/1.1",
        "REQUEST_SCHEME": "http",
        "SERVER_PORT": "8080",
        "SERVER_ADDR": "192.0.2.1",
        "SERVER_NAME": "example.com",
        "REMOTE_ADDR": "192.0.2.7",
        "REMOTE_PORT": "50123",
    }
    for key, value in expected.items():
        assert env[key] == value, key
    # CONTENT_LENGTH first (SCGI needs it); no PATH, no path info, no HTTPS.
    assert next(iter(env)) == "CONTENT_LENGTH"
    for absent in ("PATH", "PATH_INFO", "PATH_TRANSLATED", "HTTPS", "CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
        assert absent not in env
    # Only the computed variables plus one HTTP_* per header.
    assert set(env) == set(expected) | {
        "HTTP_HOST",
        "HTTP_UPGRADE",
        "HTTP_CONNECTION",
        "HTTP_ORIGIN",
        "HTTP_SEC_WEBSOCKET_KEY",
        "HTTP_SEC_WEBSOCKET_VERSION",
    }


def test_https_sets_https_on() -> None:
    env = environ(ws_request(scheme="https"))
    assert env["HTTPS"] == "on"
    assert env["REQUEST_SCHEME"] == "https"


def test_http_1_0_server_protocol_and_server_name_fallback() -> None:
    request = Request.from_h1(b"GET", b"/a", [], b"1.0", client=("192.0.2.7", 1), server=("192.0.2.1", 80))
    env = environ(request, script_name="/a")
    assert env["SERVER_PROTOCOL"] == "HTTP/1.0"
    # No Host header and no configured name: SERVER_NAME is the server address.
    assert env["SERVER_NAME"] == "192.0.2.1"
    assert env["QUERY_STRING"] == ""


@pytest.mark.parametrize(
    ("host", "configured", "expected"),
    [
        (b"example.com", None, "example.com"),
        (b"example.com:8080", None, "example.com"),
        (b"[2001:db8::1]:8443", None, "[2001:db8::1]"),
        (b"[2001:db8::1]", None, "[2001:db8::1]"),
        (b"example.com:8080", "configured.example:81", "configured.example"),
    ],
)
def test_server_name(host: bytes, configured: str | None, expected: str) -> None:
    env = environ(ws_request(headers=[(b"Host", host)]), server_name=configured)
    assert env["SERVER_NAME"] == expected


def test_content_length_and_type_come_from_the_request() -> None:
    request = Request.from_h1(
        b"POST",
        b"/cgi/form.py",
        [(b"Host", b"h"), (b"Content-Type", b"text/plain"), (b"Content-Length", b"5")],
        b"1.1",
    )
    env = environ(request, content_length=5)
    assert env["CONTENT_LENGTH"] == "5"
    assert env["CONTENT_TYPE"] == "text/plain"
    assert env["REQUEST_METHOD"] == "POST"
    assert "HTTP_CONTENT_TYPE" not in env
    assert "HTTP_CONTENT_LENGTH" not in env


def test_negative_content_length_is_an_error() -> None:
    with pytest.raises(ValueError, match="negative"):
        environ(ws_request(), content_length=-1)


def test_path_info_and_path_translated() -> None:
    env = environ(ws_request(target=b"/cgi/x.py/a/b"), script_name="/cgi/x.py", path_info="/a/b")
    assert env["PATH_INFO"] == "/a/b"
    assert env["PATH_TRANSLATED"] == "/srv/www/a/b"


def test_path_info_without_document_root() -> None:
    env = environ(ws_request(), path_info="/a", document_root=None, script_filename=None)
    assert env["PATH_INFO"] == "/a"
    for absent in ("PATH_TRANSLATED", "DOCUMENT_ROOT", "SCRIPT_FILENAME"):
        assert absent not in env


def test_unix_socket_connection() -> None:
    request = Request.from_h1(b"GET", b"/", [(b"Host", b"h")], b"1.1", client=None, server=None)
    env = environ(request)
    assert env["REMOTE_ADDR"] == ""
    assert env["REMOTE_PORT"] == "0"
    assert env["SERVER_ADDR"] == ""
    assert env["SERVER_PORT"] == "0"
    assert env["SERVER_NAME"] == "h"


# --- header policy --------------------------------------------------------------


def test_httpoxy_proxy_header_is_never_passed() -> None:
    env = environ(ws_request(headers=[*WS_HEADERS, (b"Proxy", b"http://evil.example:3128")]))
    assert "HTTP_PROXY" not in env
    assert "http://evil.example:3128" not in env.values()


@pytest.mark.parametrize(
    "name",
    [b"Content_Type", b"X_Forwarded_For", b"Remote_Addr", b"Sec_WebSocket_Key", b"X.Dot", b"X Space", b"X@at"],
)
def test_header_names_outside_the_safe_alphabet_are_dropped(name: bytes) -> None:
    env = environ(ws_request(headers=[*WS_HEADERS, (name, b"spoofed")]))
    assert "spoofed" not in env.values()


def test_underscore_header_cannot_overwrite_a_real_header() -> None:
    headers = [*WS_HEADERS, (b"Sec_WebSocket_Key", b"spoofed"), (b"Content_Type", b"spoofed")]
    request = Request.from_h1(b"POST", b"/x", [*headers, (b"Content-Type", b"text/plain")], b"1.1")
    env = environ(request, content_length=0)
    assert env["HTTP_SEC_WEBSOCKET_KEY"] == "dGhlIHNhbXBsZSBub25jZQ=="
    assert env["CONTENT_TYPE"] == "text/plain"


def test_header_cannot_overwrite_computed_variables() -> None:
    # Names that would map onto non-HTTP_ variables can only come through as
    # HTTP_*; the gateway's own values win.
    headers = [(b"Host", b"h"), (b"Content-Length", b"999"), (b"Remote-Addr", b"10.0.0.1")]
    env = environ(ws_request(headers=headers), content_length=0)
    assert env["CONTENT_LENGTH"] == "0"
    assert env["REMOTE_ADDR"] == "192.0.2.7"
    assert env["HTTP_REMOTE_ADDR"] == "10.0.0.1"


def test_repeated_headers_are_joined() -> None:
    headers = [
        (b"Host", b"h"),
        (b"Accept", b"text/html"),
        (b"Cookie", b"a=1"),
        (b"Accept", b"text/plain"),
        (b"Cookie", b"b=2"),
    ]
    env = environ(ws_request(headers=headers))
    assert env["HTTP_ACCEPT"] == "text/html, text/plain"
    assert env["HTTP_COOKIE"] == "a=1; b=2"


def test_empty_values_and_values_with_control_bytes_are_dropped() -> None:
    headers = [(b"Host", b"h"), (b"X-Empty", b""), (b"X-Nul", b"a\0b"), (b"X-Lf", b"a\nb"), (b"X-Ok", b"ok")]
    env = environ(ws_request(headers=headers))
    assert "HTTP_X_EMPTY" not in env
    assert "HTTP_X_NUL" not in env
    assert "HTTP_X_LF" not in env
    assert env["HTTP_X_OK"] == "ok"


def test_non_utf8_bytes_survive_the_environment() -> None:
    headers = [(b"Host", b"h"), (b"X-Latin", b"caf\xe9")]
    env = environ(ws_request(target=b"/ws?q=%E9&r=\xe9", headers=headers))
    # os.fsencode is how subprocess turns the environment back into bytes.
    assert os.fsencode(env["HTTP_X_LATIN"]) == b"caf\xe9"
    assert os.fsencode(env["QUERY_STRING"]) == b"q=%E9&r=\xe9"
    assert os.fsencode(env["REQUEST_URI"]) == b"/ws?q=%E9&r=\xe9"
    assert dict(encode_environ(env))[b"HTTP_X_LATIN"] == b"caf\xe9"


def test_upgrade_not_allowed_drops_upgrade_but_keeps_connection() -> None:
    env = environ(ws_request(), allow_upgrade=False)
    assert "HTTP_UPGRADE" not in env
    assert env["HTTP_CONNECTION"] == "keep-alive, Upgrade"


def test_extra_variables_come_last_and_win() -> None:
    env = environ(ws_request(), extra={"REMOTE_USER": "alice", "SERVER_NAME": "override"})
    assert env["REMOTE_USER"] == "alice"
    assert env["SERVER_NAME"] == "override"
    assert list(env)[-1] == "REMOTE_USER"


@pytest.mark.parametrize(("name", "value"), [("BAD-NAME", "v"), ("", "v"), ("1X", "v"), ("OK", "a\0b")])
def test_invalid_extra_variables_are_rejected(name: str, value: str) -> None:
    with pytest.raises(ValueError, match="extra environment variable"):
        environ(ws_request(), extra={name: value})


# --- HTTP/2 extended CONNECT ---------------------------------------------------


def test_h2_websocket_is_presented_as_h1_upgrade() -> None:
    request = h2_websocket(
        (
            (b"host", b"example.com"),
            (b"origin", b"https://example.com"),
            (b"sec-websocket-version", b"13"),
            (b"sec-websocket-key", b"MDAwMDAwMDAwMDAwMDAwMA=="),
        )
    )
    env = environ(request)
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["HTTP_UPGRADE"] == "websocket"
    assert env["HTTP_CONNECTION"] == "upgrade"
    assert env["HTTP_SEC_WEBSOCKET_KEY"] == "MDAwMDAwMDAwMDAwMDAwMA=="
    assert env["HTTPS"] == "on"
    assert env["REMOTE_ADDR"] == "2001:db8::7"
    assert env["SERVER_PORT"] == "8443"


def test_h2_websocket_method_connect_is_still_get() -> None:
    request = attrs.evolve(h2_websocket(((b"host", b"example.com"),)), method="CONNECT")
    assert environ(request)["REQUEST_METHOD"] == "GET"


def test_h2_websocket_without_upgrade_permission_gets_no_upgrade_variables() -> None:
    env = environ(h2_websocket(((b"host", b"example.com"),)), allow_upgrade=False)
    assert "HTTP_UPGRADE" not in env
    assert "HTTP_CONNECTION" not in env


def test_plain_h2_request_protocol() -> None:
    request = Request(method="GET", target=b"/", path="/", query="", headers=(), http_version="2")
    env = environ(request)
    assert env["SERVER_PROTOCOL"] == "HTTP/2.0"
    assert "HTTP_UPGRADE" not in env


# --- properties -------------------------------------------------------------------

header_names = st.from_regex(rb"\A[A-Za-z0-9_.-]{1,20}\Z")
header_values = st.binary(max_size=30)


@given(st.lists(st.tuples(header_names, header_values), max_size=12))
def test_every_variable_is_safe_whatever_the_headers(headers: list[tuple[bytes, bytes]]) -> None:
    request = ws_request(headers=[(b"Host", b"h"), *headers])
    env = environ(request, content_length=3)
    # The computed variables cannot be touched by headers.
    assert env["CONTENT_LENGTH"] == "3"
    assert env["REMOTE_ADDR"] == "192.0.2.7"
    assert "HTTP_PROXY" not in env
    for name, value in env.items():
        assert name.isascii()
        assert "\0" not in value
        assert "\0" not in name
        assert "=" not in name
    # Every passed header has a name of [A-Za-z0-9-] and a variable of its own.
    for raw_name, raw_value in headers:
        lowered = raw_name.lower()
        variable = "HTTP_" + lowered.decode().upper().replace("-", "_")
        if b"_" in raw_name or b"." in raw_name or lowered in (b"proxy", b"content-length", b"content-type", b"host"):
            continue
        if raw_value and not set(raw_value) & {0, 10, 13}:
            assert variable in env
    # And nothing fails on the way to SCGI/FastCGI or execve.
    assert encode_environ(env)


@given(st.binary(max_size=40))
def test_environ_decode_round_trips(data: bytes) -> None:
    assert os.fsencode(environ_decode(data)) == data


def test_encode_environ_rejects_bad_entries() -> None:
    with pytest.raises(ValueError, match="empty"):
        encode_environ({"": "x"})
    with pytest.raises(ValueError, match="'=' or NUL"):
        encode_environ({"A=B": "x"})
    with pytest.raises(ValueError, match="NUL"):
        encode_environ({"A": "x\0"})
    with pytest.raises(ValueError, match="surrogate"):
        encode_environ({"A": "\ud800"})


# --- script path splitting -----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "prefix", "expected"),
    [
        ("/ws/x/y", "/ws/", ("/ws/x", "/y")),
        ("/ws/x", "/ws/", ("/ws/x", "")),
        ("/ws/", "/ws/", ("/ws/", "")),
        ("/app.fcgi/a/b", "/app.fcgi", ("/app.fcgi", "/a/b")),
        ("/app.fcgi", "/app.fcgi", ("/app.fcgi", "")),
        # A byte prefix, as in lighttpd: /ws matches /wsx.
        ("/wsx/y", "/ws", ("/wsx", "/y")),
        ("/a/b/c", "/", ("/a", "/b/c")),
        # Extension keys never split.
        ("/a/b.php", ".php", ("/a/b.php", "")),
    ],
)
def test_split_script_path(path: str, prefix: str, expected: tuple[str, str]) -> None:
    assert split_script_path(path, prefix) == expected


def test_split_script_path_fix_root_scriptname() -> None:
    assert split_script_path("/a/b", "/", fix_root_scriptname=True) == ("", "/a/b")
    # Only the "/" prefix is affected.
    assert split_script_path("/ws/x/y", "/ws/", fix_root_scriptname=True) == ("/ws/x", "/y")


def test_split_script_path_rejects_foreign_path() -> None:
    with pytest.raises(ValueError, match="does not start with"):
        split_script_path("/other", "/ws/")


@given(st.lists(st.text(alphabet="abc.", min_size=1, max_size=4), min_size=1, max_size=5))
def test_split_script_path_reassembles(segments: list[str]) -> None:
    path = "/" + "/".join(segments)
    script, info = split_script_path(path, "/")
    assert script + info == path
    assert "/" not in script[1:]
    assert info == "" or info.startswith("/")


def test_find_script_walks_from_the_left() -> None:
    asked: list[str] = []
    files = {"/cgi-bin/echo.py"}

    def is_file(candidate: str) -> bool:
        asked.append(candidate)
        return candidate in files

    assert find_script("/cgi-bin/echo.py/a/b", is_file) == ("/cgi-bin/echo.py", "/a/b")
    assert asked == ["/cgi-bin", "/cgi-bin/echo.py"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/cgi-bin/echo.py", ("/cgi-bin/echo.py", "")),
        ("/cgi-bin/echo.py/", ("/cgi-bin/echo.py", "/")),
        ("/cgi-bin//echo.py/x", ("/cgi-bin//echo.py", "/x")),
        ("/cgi-bin/missing.py/x", None),
        ("/", None),
        ("", None),
    ],
)
def test_find_script(path: str, expected: tuple[str, str] | None) -> None:
    files = {"/cgi-bin/echo.py", "/cgi-bin//echo.py"}
    assert find_script(path, files.__contains__) == expected


def test_find_script_never_asks_about_a_trailing_slash() -> None:
    asked: list[str] = []

    def is_file(candidate: str) -> bool:
        asked.append(candidate)
        return False

    assert find_script("/a//b/", is_file) is None
    assert asked == ["/a", "/a//b"]
