"""Frozen configuration value objects.

These classes hold data only: no sockets, no services.  The TOML loader
(:mod:`wstrio._sansio.config.loader`) builds them and validates every key; the
same validation runs when they are built in Python through
:func:`wstrio.config_from_mapping`.  Every field documents its TOML key.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, final

import attrs

if TYPE_CHECKING:
    import trio

    from wstrio._sansio.http.request import Request

    App = Callable[[trio.abc.Stream, Request], Awaitable[None]]
else:
    App = Callable[[Any, Any], Awaitable[None]]

__all__ = [
    "Backend",
    "HandlerName",
    "ListenAddress",
    "Route",
    "ServerConfig",
    "TlsConfig",
]

HandlerName = Literal["wstunnel", "proxy", "cgi", "scgi", "fastcgi"]
BalanceName = Literal["fair", "least-connection", "round-robin", "hash", "sticky"]
FrameType = Literal["text", "binary"]


@final
@attrs.frozen
class ListenAddress:
    """One listening address: ``"host:port"``, ``"[::1]:port"`` or ``"unix:/path"``."""

    kind: Literal["tcp", "unix"]
    """``"tcp"`` or ``"unix"``."""
    host: str = ""
    """TCP host or address; ``""`` means every interface."""
    port: int = 0
    """TCP port; 0 lets the operating system choose (see :attr:`Server.addresses`)."""
    path: Path | None = None
    """Unix socket path."""
    tls: bool | None = None
    """Serve TLS here.  ``None`` (the default) means "when ``[server.tls]`` is set"."""

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@final
@attrs.frozen
class TlsConfig:
    """``[server.tls]``: certificate chain and private key (PEM)."""

    certificate: Path
    """``certificate``: PEM file with the certificate chain, leaf first."""
    private_key: Path
    """``private-key``: PEM file with the private key."""


@final
@attrs.frozen
class Backend:
    """``[[route.backend]]``: one backend host (lighttpd's ``*.server`` host options)."""

    host: str | None = None
    """``host``: IP address or name of a TCP backend."""
    port: int | None = None
    """``port``: TCP port.  For a spawned pool, process *i* listens on ``port + i``."""
    socket: Path | None = None
    """``socket``: unix socket path.  For a spawned pool, process *i* listens on ``<socket>-<i>``."""
    bin_path: tuple[str, ...] = ()
    """``bin-path``: program to spawn, split on whitespace into argv (as lighttpd does).

    Its listening socket is handed to it as standard input (fd 0)."""
    min_procs: int = 4
    """``min-procs``: processes kept running (bin-path only)."""
    max_procs: int = 4
    """``max-procs``: upper limit of processes (bin-path only)."""
    max_load_per_proc: int = 1
    """``max-load-per-proc``: spawn another process when every process has more connections than this."""
    idle_timeout: float = 60.0
    """``idle-timeout``: seconds before an idle process above ``min-procs`` is stopped."""
    disable_time: float = 1.0
    """``disable-time``: seconds a backend that failed to connect is skipped."""
    listen_backlog: int = 1024
    """``listen-backlog``: ``listen()`` backlog of spawned processes' sockets."""
    bin_environment: tuple[tuple[str, str], ...] = ()
    """``bin-environment``: extra environment variables for spawned processes."""
    bin_copy_environment: tuple[str, ...] = ()
    """``bin-copy-environment``: when non-empty, only these variables of wstrio's environment are passed."""
    kill_signal: int = signal.SIGTERM
    """``kill-signal``: signal that stops a spawned process (name such as ``"SIGINT"`` or a number)."""
    connect_timeout: float = 8.0
    """``connect-timeout``: seconds to wait for a connection."""
    read_timeout: float = 0.0
    """``read-timeout``: seconds the backend may stay silent (0 = no limit)."""
    write_timeout: float = 0.0
    """``write-timeout``: seconds a write to the backend may block (0 = no limit)."""
    check_local: bool = True
    """``check-local``: SCGI/FastCGI only; the request must name an existing file under ``document-root``."""
    label: str | None = None
    """``label``: name used in logs and statistics."""
    app: App | None = None
    """``app``: an in-process backend, ``async def app(stream, request)``.

    In TOML, ``"package.module:function"``.  The function gets a
    :class:`trio.abc.Stream` carrying the tunnel's payload bytes (exactly
    what a socket backend would get) and the handshake :class:`Request`."""

    @property
    def spawned(self) -> bool:
        """True when wstrio starts this backend itself (``bin-path`` is set)."""
        return bool(self.bin_path)

    @property
    def name(self) -> str:
        """A human-readable name: the label, the socket path, or host:port."""
        if self.label:
            return self.label
        if self.app is not None:
            return f"app:{getattr(self.app, '__qualname__', repr(self.app))}"
        if self.socket is not None:
            return f"unix:{self.socket}"
        return f"{self.host}:{self.port}"


@final
@attrs.frozen
class Route:
    """``[[route]]``: a rule that sends matching requests to a handler.

    Exactly one of ``path``, ``regex`` and ``extensions`` says which requests
    match; the first matching route in file order wins.
    """

    handler: HandlerName
    """``handler``: ``wstunnel``, ``proxy``, ``cgi``, ``scgi`` or ``fastcgi``."""
    path: str | None = None
    """``path``: URL-path prefix (a plain byte prefix, as in lighttpd: ``/ws`` also matches ``/wsx``)."""
    regex: re.Pattern[str] | None = None
    """``regex``: regular expression searched in the URL path (e.g. ``"^/websockify"``)."""
    extensions: tuple[str, ...] = ()
    """``extensions``: URL-path suffixes (lighttpd ``map-extensions``), e.g. ``[".ws"]``."""
    backends: tuple[Backend, ...] = ()
    """``[[route.backend]]``: the backend hosts."""
    balance: BalanceName = "fair"
    """``balance``: how a backend is chosen among several."""
    frame_type: FrameType = "text"
    """``frame-type``: WebSocket frame type for backend data (wstunnel)."""
    origins: tuple[str, ...] = ()
    """``origins``: allowed ``Origin`` values; empty = no check (wstunnel)."""
    ping_interval: float = 0.0
    """``ping-interval``: seconds between PINGs to the client; 0 = none (wstunnel)."""
    pong_timeout: float | None = None
    """``pong-timeout``: seconds to wait for the PONG; default = ``ping-interval``."""
    upgrade: bool = False
    """``upgrade``: pass WebSocket upgrades through (proxy, cgi, scgi, fastcgi)."""
    assign: tuple[tuple[str, str], ...] = ()
    """``assign``: file-name suffix -> interpreter for CGI (``""`` = execute directly).

    The longest matching suffix wins; the suffix ``""`` matches every file.
    Empty (the default) means ``{"" = ""}``: every file is executed directly."""
    execute_x_only: bool = False
    """``execute-x-only``: cgi: run a script through its interpreter only if it is executable (``chmod +x``)."""
    read_timeout: float = 0.0
    """``read-timeout``: cgi: seconds the script may stay silent before and while it answers (0 = no limit).

    lighttpd ``cgi.limits`` ``read-timeout``; 504 before the response head.  Not applied after a 101."""
    write_timeout: float = 0.0
    """``write-timeout``: cgi: seconds a write of the request body to the script may block (0 = no limit)."""
    local_redirect: bool = True
    """``local-redirect``: cgi, scgi, fastcgi: serve a ``Location: /path`` response (RFC 3875 6.2.2) internally."""
    environment: tuple[tuple[str, str], ...] = ()
    """``environment``: cgi, scgi, fastcgi: extra variables for the request environment (override computed ones)."""
    forwarded: bool = False
    """``forwarded``: also send an RFC 7239 ``Forwarded`` header (proxy; ``X-Forwarded-*`` are always sent)."""
    replace_http_host: bool = False
    """``replace-http-host``: send the backend's label (or host:port) as ``Host`` instead of the client's (proxy)."""

    @property
    def effective_pong_timeout(self) -> float:
        """The pong deadline in seconds (``pong-timeout``, defaulting to ``ping-interval``)."""
        return self.ping_interval if self.pong_timeout is None else self.pong_timeout

    def describe(self) -> str:
        """How the route matches, for logs: ``path=/ws/``."""
        if self.path is not None:
            return f"path={self.path}"
        if self.regex is not None:
            return f"regex={self.regex.pattern}"
        return f"extensions={','.join(self.extensions)}"


@final
@attrs.frozen
class ServerConfig:
    """The whole configuration: ``[server]`` plus the ``[[route]]`` list."""

    listen: tuple[ListenAddress, ...] = (ListenAddress("tcp", "127.0.0.1", 8080),)
    """``listen``: addresses to listen on."""
    routes: tuple[Route, ...] = ()
    """``[[route]]``: in file order; the first match wins."""
    document_root: Path | None = None
    """``document-root``: static files for requests no route takes."""
    index_files: tuple[str, ...] = ("index.html",)
    """``index-files``: tried, in order, for a request naming a directory."""
    mimetype_assign: tuple[tuple[str, str], ...] = ()
    """``mimetype-assign``: extra extension -> Content-Type entries (lighttpd ``mimetype.assign``)."""
    max_connections: int = 10000
    """``max-connections``: connections served at once; further ones wait in the listen queue."""
    max_read_idle: float = 60.0
    """``max-read-idle``: seconds a client may send nothing (lighttpd ``server.max-read-idle``)."""
    max_write_idle: float = 360.0
    """``max-write-idle``: seconds a write to a client may stall (lighttpd ``server.max-write-idle``)."""
    max_keep_alive_idle: float = 5.0
    """``max-keep-alive-idle``: seconds an idle keep-alive connection is kept."""
    max_keep_alive_requests: int = 1000
    """``max-keep-alive-requests``: requests served on one connection before it is closed."""
    max_request_field_size: int = 8192
    """``max-request-field-size``: bytes allowed for a request line plus headers (431 above)."""
    max_request_headers: int = 100
    """``max-request-headers``: header fields allowed in a request (431 above)."""
    shutdown_timeout: float = 30.0
    """``shutdown-timeout``: grace period on SIGINT/SIGTERM before connections are cut."""
    tls: TlsConfig | None = None
    """``[server.tls]``: enables https/wss."""
    http2: bool = True
    """``http2``: offer HTTP/2 (ALPN ``h2`` on TLS, prior-knowledge h2c on cleartext)."""
    h2_max_concurrent_streams: int = 100
    """``h2-max-concurrent-streams``: streams (requests, WebSockets) open at once on one HTTP/2 connection."""
    h2_initial_window_size: int = 65536
    """``h2-initial-window-size``: bytes a client may send on one HTTP/2 stream before wstrio has read them."""
    workers: int = 1
    """``workers``: worker processes (``"auto"`` = one per CPU)."""
    source: str = attrs.field(default="<ServerConfig>", eq=False)
    """Where the configuration came from, for messages (not part of equality)."""

    def __attrs_post_init__(self) -> None:
        # The same value rules as the TOML loader, for configs built in Python.
        from wstrio._errors import ConfigError
        from wstrio._sansio.config.check import check_config

        problems = check_config(self)
        if problems:
            raise ConfigError(self.source, problems)
