"""Frozen configuration value objects.

These classes hold data only: no sockets, no services.  The TOML loader
(:mod:`wstrio._sansio.config.loader`) builds them and validates every key;
the value rules (:func:`check_config`, at the end of this module) run
whenever a :class:`ServerConfig` is built, by the loader, in Python or with
``attrs.evolve``.  Every field documents its TOML key.
"""

from __future__ import annotations

import ipaddress
import math
import re
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, final, get_args

import attrs

from wstrio._errors import ConfigError
from wstrio._sansio.http.static import DEFAULT_STATIC_DENY, static_deny_problem
from wstrio._sansio.websocket.framing import FRAMINGS, FramingName

if TYPE_CHECKING:
    import trio

    from wstrio._sansio.http.request import Request

    App = Callable[[trio.abc.Stream, Request], Awaitable[None]]
else:
    App = Callable[[Any, Any], Awaitable[None]]

__all__ = [
    "BACKEND_HANDLERS",
    "BALANCES",
    "GATEWAY_HANDLERS",
    "HANDLERS",
    "PROXY_TARGETS",
    "Backend",
    "HandlerName",
    "ListenAddress",
    "MetricsConfig",
    "Route",
    "ServerConfig",
    "TlsConfig",
    "check_config",
    "network_problem",
    "parse_networks",
]

HandlerName = Literal["wstunnel", "proxy", "cgi", "scgi", "fastcgi", "process"]
BalanceName = Literal["fair", "least-connection", "round-robin", "hash", "sticky"]
HANDLERS: tuple[str, ...] = get_args(HandlerName)
"""The ``handler`` names a route accepts."""
BALANCES: tuple[str, ...] = get_args(BalanceName)
"""The ``balance`` names a route accepts."""
BACKEND_HANDLERS = ("wstunnel", "proxy", "scgi", "fastcgi")
"""Handlers whose routes need at least one ``[[route.backend]]``."""
GATEWAY_HANDLERS = ("cgi", "scgi", "fastcgi")
"""The CGI family: handlers that build a CGI environment."""
FrameType = Literal["text", "binary"]
ProxyTarget = Literal["normalized", "reject", "raw"]
AccessLogFormat = Literal["text", "json"]
StderrMode = Literal["log", "client", "discard"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
DEFAULT_MAX_REQUEST_BODY_SIZE = 1 << 30
"""``max-request-body-size`` when not set: 1 GiB, as Apache's ``LimitRequestBody``."""
DEFAULT_MAX_BUFFER_MEMORY = 64 << 20
"""``max-buffer-memory`` when not set: 64 MiB (1,000 stalled tunnels' worth of 64 KiB reads)."""
PROXY_TARGETS: tuple[str, ...] = get_args(ProxyTarget)
"""The ``proxy-target`` values a proxy route accepts."""


def network_problem(value: object) -> str | None:
    """Why ``value`` is not a network for ``allow``/``deny`` (``None``: it is one)."""
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return None
    if not isinstance(value, str):
        return f"must be a CIDR network such as '10.0.0.0/8' or an address, not {value!r}"
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        try:
            loose = ipaddress.ip_network(value, strict=False)
        except ValueError:
            return f"must be a CIDR network such as '10.0.0.0/8' or an address, not {value!r} ({exc})"
        return f"{value!r} has host bits set; did you mean {str(loose)!r}?"
    return None


def parse_networks(values: object) -> tuple[Any, ...]:
    """``allow``/``deny`` items as networks; an item that is none is kept as given, for :func:`check_config`."""
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        return (values,) if values else ()
    out: list[Any] = []
    for value in values:
        if isinstance(value, str) and network_problem(value) is None:
            out.append(ipaddress.ip_network(value, strict=True))
        else:
            out.append(value)
    return tuple(out)


@final
@attrs.frozen
class ListenAddress:
    """One listening address: ``"host:port"``, ``"[::1]:port"``, ``"unix:/path"`` or ``"systemd[:name]"``."""

    kind: Literal["tcp", "unix", "systemd"]
    """``"tcp"``, ``"unix"``, or ``"systemd"`` (sockets passed by systemd socket activation)."""
    host: str = ""
    """TCP host or address; ``""`` means every interface."""
    port: int = 0
    """TCP port; 0 lets the operating system choose (see :attr:`Server.addresses`)."""
    path: Path | None = None
    """Unix socket path."""
    tls: bool | None = None
    """Serve TLS here.  ``None`` (the default) means "when ``[server.tls]`` is set"."""
    name: str | None = None
    """``systemd`` only: the sockets with this ``FileDescriptorName=`` (``None``: every socket passed)."""
    proxy_protocol: bool = False
    """``proxy-protocol``: connections start with a PROXY protocol header (v1 or v2) from a ``trusted-proxies``
    address, which says who the client is."""

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "systemd":
            return "systemd" if self.name is None else f"systemd:{self.name}"
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
class MetricsConfig:
    """``[server.metrics]``: a listener for Prometheus, apart from the public ones."""

    listen: ListenAddress
    """``listen``: where ``GET /metrics`` is answered, e.g. ``127.0.0.1:9108`` (with ``workers = N``,
    worker *n* listens on port + *n*)."""
    path: str = "/metrics"
    """``path``: the path of the exposition (everything else there is 404)."""


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
    send_proxy_protocol: str | None = None
    """``send-proxy-protocol``: ``"v1"`` or ``"v2"``: every connection to this backend starts with a PROXY
    protocol header naming the client (HAProxy's ``send-proxy``/``send-proxy-v2``); ``None``: none."""
    max_connections: int = 0
    """``max-connections``: connections to this backend at once (0 = no limit; nginx ``max_conns``).

    When every backend of the route is at its limit, a request waits in the
    route's queue (``queue-size``, ``queue-timeout``), then gets 503."""
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
    max_frame_size: int = 0
    """``max-frame-size``: bytes of payload one client frame may declare; above it CLOSE 1009 (wstunnel; 0: none)."""
    max_message_size: int = 0
    """``max-message-size``: bytes one client message may have over all its fragments; above it CLOSE 1009.

    wstunnel; 0 = no limit.  Checked against the lengths frame headers declare,
    so nothing of an oversized frame is read or passed on; frames are streamed,
    never assembled, so without a limit wstrio holds no more of a huge message
    than one read."""
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
    proxy_target: ProxyTarget = "normalized"
    """``proxy-target``: the request-target a proxy route sends on (proxy).

    ``normalized``: the path as wstrio routed it (dot-segments resolved,
    re-encoded), the query as sent; ``reject``: 400 for a target whose path
    normalisation would change, else the target as sent; ``raw``: the target
    as sent (unsafe: the backend may resolve it outside the route's prefix)."""
    allow: tuple[Network, ...] = attrs.field(default=(), converter=parse_networks)
    """``allow``: client networks (CIDR, e.g. ``"10.0.0.0/8"``, or single addresses) that may use the route.

    Empty (the default): every client.  Otherwise a client in none of them is
    answered 403.  A client on a unix socket has no address and is in none."""
    deny: tuple[Network, ...] = attrs.field(default=(), converter=parse_networks)
    """``deny``: client networks answered 403 on this route; ``deny`` wins over ``allow``."""
    max_connections_per_ip: int = 0
    """``max-connections-per-ip``: requests and tunnels one client address may have open on this route at once.

    0 (the default): no limit of the route's own (``server.max-connections-per-ip`` still
    applies).  Above it: 429 with ``Retry-After``, before any backend is contacted."""
    max_tunnels: int = 0
    """``max-tunnels``: WebSockets this route may carry at once, over HTTP/1.1 and HTTP/2 together.

    0 (the default): no limit of the route's own (``server.max-tunnels``
    still applies).  Above it: 503 with ``Retry-After`` before any backend is
    contacted.  On proxy and CGI-family routes a WebSocket handshake counts
    (the backend may still refuse to switch)."""
    max_request_body_size: int | None = None
    """``max-request-body-size``: proxy, cgi, scgi, fastcgi: bytes of request body (413 above).

    ``None`` (the default): ``server.max-request-body-size``; 0: no limit."""
    queue_size: int = 100
    """``queue-size``: requests that may wait for a backend when all are at ``max-connections`` (503 beyond)."""
    queue_timeout: float = 10.0
    """``queue-timeout``: seconds a request waits in that queue before it gets 503."""
    max_tunnel_lifetime: float | None = None
    """``max-tunnel-lifetime``: seconds a WebSocket (or upgraded relay) on this route may stay open.

    ``None`` (the default): ``server.max-tunnel-lifetime``; 0: no limit."""
    framing: FramingName | None = None
    """``framing``: wstunnel, process: how messages map to the backend's bytes: ``stream``, ``lines``,
    ``nul`` or ``length-prefixed`` (``None``: ``stream`` for wstunnel, ``lines`` for process)."""
    length_bytes: int = 4
    """``length-bytes``: the size of a ``length-prefixed`` header: 2, 4 or 8 bytes, big-endian."""
    flush_timeout: float = 0.0
    """``flush-timeout``: ``lines``/``nul``: seconds after which a partial line is sent as it is (0: never)."""
    command: tuple[str, ...] = ()
    """``command``: process: the program and its arguments, run once per WebSocket."""
    working_directory: Path | None = None
    """``working-directory``: process: where the program runs (default: the configuration file's directory)."""
    max_processes: int = 0
    """``max-processes``: process: programs running at once for this route (503 before the 101 above; 0: no limit)."""
    stderr: StderrMode = "log"
    """``stderr``: process: the program's standard error: ``log`` (wstrio's log, one line per line),
    ``client`` (to the client, as the output is) or ``discard``."""
    pty: bool = False
    """``pty``: process: run the program on a pseudo-terminal, so that its C library line-buffers its output."""
    bin_environment: tuple[tuple[str, str], ...] = ()
    """``bin-environment``: process: extra environment variables for the program."""
    bin_copy_environment: tuple[str, ...] = ()
    """``bin-copy-environment``: process: variables of wstrio's environment the program gets too."""
    kill_grace: float = 5.0
    """``kill-grace``: process: seconds between SIGTERM to the program's group and SIGKILL, when the client leaves."""

    @property
    def effective_framing(self) -> FramingName:
        """``framing``, or the handler's default."""
        if self.framing is not None:
            return self.framing
        return "lines" if self.handler == "process" else "stream"

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
    static_deny: tuple[str, ...] = DEFAULT_STATIC_DENY
    """``static-deny``: glob patterns; a static path with a matching segment is 404 (lighttpd ``url.access-deny``)."""
    max_connections: int = 10000
    """``max-connections``: connections served at once; further ones wait in the listen queue."""
    max_read_idle: float = 60.0
    """``max-read-idle``: seconds a client may send nothing (lighttpd ``server.max-read-idle``)."""
    max_write_idle: float = 360.0
    """``max-write-idle``: seconds a write to a client may stall (lighttpd ``server.max-write-idle``)."""
    max_keep_alive_idle: float = 5.0
    """``max-keep-alive-idle``: seconds an idle keep-alive connection is kept."""
    trusted_proxies: tuple[Network, ...] = attrs.field(default=(), converter=parse_networks)
    """``trusted-proxies``: the networks whose PROXY protocol headers are believed (required by a listener
    with ``proxy-protocol``; a connection from anywhere else is closed)."""
    forwarded_trust: tuple[Network, ...] = attrs.field(default=(), converter=parse_networks)
    """``forwarded-trust``: the networks whose ``X-Forwarded-For`` / ``Forwarded`` headers are believed:
    the client is the rightmost address in them that is not itself in these networks."""
    health_path: str | None = None
    """``health-path``: a path (``"/healthz"``) answered ``200 ok`` to GET and HEAD, before any route or limit,
    for load balancers' health checks; ``None``: none.  Once a graceful shutdown starts the listeners
    close, so the checks fail and the balancer sends new clients elsewhere."""
    access_log: Path | None = None
    """``access-log``: a file for the access log (appended to; reopened on SIGUSR1), instead of the
    ``wstrio.access`` logger's usual destination (stderr with the CLI)."""
    access_log_format: AccessLogFormat = "text"
    """``access-log-format``: ``"text"`` (one line as lighttpd's) or ``"json"`` (one JSON object a line)."""
    max_buffer_memory: int = DEFAULT_MAX_BUFFER_MEMORY
    """``max-buffer-memory``: bytes backpressured tunnels and relays may hold together (0 = no limit).

    Each direction of a tunnel holds at most one read (64 KiB) while its
    write waits; at this total every read asks for 4 KiB until it drains
    (:mod:`wstrio._io.streams.budget`)."""
    max_tunnel_lifetime: float = 0.0
    """``max-tunnel-lifetime``: seconds a WebSocket may stay open (0 = no limit; a route may set its own).

    At the limit a tunnel gets CLOSE 1001 (an upgraded relay is closed), so
    that long-lived connections are spread again over backends that were
    added, or re-authenticate (a token's lifetime, say)."""
    max_request_head_time: float = 30.0
    """``max-request-head-time``: seconds from a request head's first byte to its end, and for a TLS handshake.

    Like nginx ``client_header_timeout``; bounds slowloris, which ``max-read-idle`` (per read) does not."""
    max_tunnels: int | None = None
    """``max-tunnels``: WebSockets open at once, over HTTP/1.1 and HTTP/2 together (default: ``max-connections``).

    ``max-connections`` counts client connections, and one HTTP/2 connection
    carries up to ``h2-max-concurrent-streams`` WebSockets, each with its own
    backend connection; this bounds them all.  Above it: 503 with
    ``Retry-After`` (HTTP/2: on the stream) before any backend is contacted."""
    max_connections_per_ip: int = 0
    """``max-connections-per-ip``: connections one client address may have open at once (0 = no limit).

    Counted per worker process.  A connection above it gets 429 with
    ``Retry-After`` to its first request (HTTP/2: GOAWAY ENHANCE_YOUR_CALM)."""
    request_rate: float = 0.0
    """``request-rate``: requests per second one client address may make, on average (0 = no limit).

    A token bucket per address (nginx ``limit_req``): ``request-burst``
    requests may come at once, then ``request-rate`` per second.  Above it:
    429 with ``Retry-After``.  Each HTTP/2 stream is a request."""
    request_burst: int | None = None
    """``request-burst``: the bucket's size; default one second's worth (``request-rate``, at least 1)."""
    max_request_body_size: int = DEFAULT_MAX_REQUEST_BODY_SIZE
    """``max-request-body-size``: bytes of request body a proxy or CGI-family route forwards (413 above; 0 = no limit).

    A ``Content-Length`` above it is refused before any backend is contacted;
    a chunked or HTTP/2 body is counted as it streams.  A route may set its own."""
    max_keep_alive_requests: int = 1000
    """``max-keep-alive-requests``: requests served on one connection before it is closed."""
    max_request_field_size: int = 8192
    """``max-request-field-size``: bytes allowed for a request line plus headers (431 above)."""
    max_request_headers: int = 100
    """``max-request-headers``: header fields allowed in a request (431 above)."""
    shutdown_timeout: float = 30.0
    """``shutdown-timeout``: grace period on SIGINT/SIGTERM before connections are cut."""
    devconsole: bool = False
    """``devconsole``: a browser opening a ``wstunnel`` or ``process`` route's URL from a loopback
    address gets a page to connect, send and watch messages (websocketd's ``--devconsole``)."""
    drain_timeout: float = 0.0
    """``drain-timeout``: after a reload removed a spawned backend, how long its processes keep
    serving the tunnels still open to them (0 = until the last one ends); with ``workers``, also
    how long a worker of the old configuration keeps its connections."""
    tls: TlsConfig | None = None
    """``[server.tls]``: enables https/wss."""
    metrics: MetricsConfig | None = None
    """``[server.metrics]``: the Prometheus metrics listener (none by default)."""
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

    @property
    def effective_max_tunnels(self) -> int:
        """``max-tunnels``, defaulting to ``max-connections``."""
        return self.max_connections if self.max_tunnels is None else self.max_tunnels

    @property
    def effective_request_burst(self) -> int:
        """``request-burst``, defaulting to one second's worth of ``request-rate`` (at least 1)."""
        if self.request_burst is not None:
            return self.request_burst
        return max(1, math.ceil(self.request_rate))

    def tunnel_lifetime(self, route: Route | None) -> float:
        """The ``max-tunnel-lifetime`` that applies on ``route`` (0 = no limit)."""
        if route is not None and route.max_tunnel_lifetime is not None:
            return route.max_tunnel_lifetime
        return self.max_tunnel_lifetime

    def request_body_limit(self, route: Route | None) -> int:
        """The ``max-request-body-size`` that applies on ``route`` (0 = no limit)."""
        if route is not None and route.max_request_body_size is not None:
            return route.max_request_body_size
        return self.max_request_body_size

    def __attrs_post_init__(self) -> None:
        # The same value rules as the TOML loader, for configs built in Python.
        problems = check_config(self)
        if problems:
            raise ConfigError(self.source, problems)


# -- value rules -------------------------------------------------------------
# They live with the objects they check, so the dependency points one way:
# the loader builds these objects, and nothing here needs the loader.


def _seconds(problems: list[tuple[str, str]], path: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0 or math.isnan(value):
        problems.append((path, f"must be a number of seconds >= 0, not {value!r}"))


def _count(problems: list[tuple[str, str]], path: str, value: int, low: int, high: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        limit = f"from {low} to {high}" if high is not None else f"at least {low}"
        problems.append((path, f"must be an integer {limit}, not {value!r}"))


def _check_backend(problems: list[tuple[str, str]], path: str, backend: Backend, handler: str) -> None:
    kinds = [
        name
        for name, given in (
            ("app", backend.app is not None),
            ("socket", backend.socket is not None),
            ("host/port", backend.host is not None or backend.port is not None),
        )
        if given
    ]
    if len(kinds) != 1:
        what = " and ".join(kinds) if kinds else "none"
        problems.append((path, f"needs exactly one of 'socket', 'host' and 'port', or 'app', not {what}"))
    if backend.send_proxy_protocol not in (None, "v1", "v2"):
        problems.append((f"{path}.send-proxy-protocol", f"must be 'v1' or 'v2', not {backend.send_proxy_protocol!r}"))
    if backend.app is not None:
        if handler != "wstunnel":
            problems.append((f"{path}.app", "in-process apps are only for wstunnel routes"))
        if backend.bin_path:
            problems.append((f"{path}.bin-path", "an 'app' backend runs in wstrio; it takes no bin-path"))
    if backend.host is not None and backend.port is None:
        problems.append((f"{path}.port", "is required with 'host' (or use 'socket')"))
    if backend.port is not None:
        _count(problems, f"{path}.port", backend.port, 0, 65535)
    if backend.bin_path and not backend.bin_path[0]:
        problems.append((f"{path}.bin-path", "must name a program"))
    _count(problems, f"{path}.min-procs", backend.min_procs, 0, 1024)
    _count(problems, f"{path}.max-procs", backend.max_procs, 1, 1024)
    if (
        isinstance(backend.min_procs, int)
        and isinstance(backend.max_procs, int)
        and backend.min_procs > backend.max_procs
    ):
        problems.append(
            (f"{path}.min-procs", f"must not exceed max-procs ({backend.max_procs}), not {backend.min_procs}")
        )
    _count(problems, f"{path}.max-load-per-proc", backend.max_load_per_proc, 1)
    _count(problems, f"{path}.max-connections", backend.max_connections, 0)
    _count(problems, f"{path}.listen-backlog", backend.listen_backlog, 1)
    for key, value in (
        ("idle-timeout", backend.idle_timeout),
        ("disable-time", backend.disable_time),
        ("connect-timeout", backend.connect_timeout),
        ("read-timeout", backend.read_timeout),
        ("write-timeout", backend.write_timeout),
    ):
        _seconds(problems, f"{path}.{key}", value)


def _check_route(problems: list[tuple[str, str]], path: str, route: Route, config: ServerConfig) -> None:
    handler = route.handler
    if handler not in HANDLERS:
        problems.append((f"{path}.handler", f"must be one of {', '.join(map(repr, HANDLERS))}, not {handler!r}"))
        return
    matchers = [k for k, v in (("path", route.path), ("regex", route.regex), ("extensions", route.extensions)) if v]
    if not matchers:
        problems.append((path, "needs one of 'path', 'regex' or 'extensions' to say which requests it takes"))
    elif len(matchers) > 1:
        problems.append((path, f"give only one of 'path', 'regex', 'extensions', not {matchers}"))
    if route.path is not None and not route.path.startswith("/"):
        problems.append((f"{path}.path", f"must start with '/', not {route.path!r}"))
    if route.balance not in BALANCES:
        problems.append((f"{path}.balance", f"must be one of {', '.join(map(repr, BALANCES))}, not {route.balance!r}"))
    if route.frame_type not in ("text", "binary"):
        problems.append((f"{path}.frame-type", f"must be 'text' or 'binary', not {route.frame_type!r}"))
    _seconds(problems, f"{path}.ping-interval", route.ping_interval)
    _count(problems, f"{path}.max-frame-size", route.max_frame_size, 0)
    _count(problems, f"{path}.max-message-size", route.max_message_size, 0)
    if route.pong_timeout is not None:
        _seconds(problems, f"{path}.pong-timeout", route.pong_timeout)
    if handler not in ("wstunnel", "process"):
        for key, given in (
            ("frame-type", route.frame_type != "text"),
            ("origins", bool(route.origins)),
            ("ping-interval", bool(route.ping_interval)),
            ("pong-timeout", route.pong_timeout is not None),
            ("max-frame-size", bool(route.max_frame_size)),
            ("max-message-size", bool(route.max_message_size)),
            ("framing", route.framing is not None),
        ):
            if given:
                problems.append((f"{path}.{key}", f"only applies to wstunnel and process routes, not {handler!r}"))
    elif route.upgrade:
        problems.append(
            (f"{path}.upgrade", f"does not apply to {handler} routes (they always take WebSocket upgrades)")
        )
    if route.framing is not None and route.framing not in FRAMINGS:
        allowed_framings = ", ".join(map(repr, FRAMINGS))
        problems.append((f"{path}.framing", f"must be one of {allowed_framings}, not {route.framing!r}"))
    if route.length_bytes not in (2, 4, 8):
        problems.append((f"{path}.length-bytes", f"must be 2, 4 or 8, not {route.length_bytes!r}"))
    _seconds(problems, f"{path}.flush-timeout", route.flush_timeout)
    _seconds(problems, f"{path}.kill-grace", route.kill_grace)
    _count(problems, f"{path}.max-processes", route.max_processes, 0)
    if handler == "process":
        if not route.command:
            problems.append(
                (f"{path}.command", 'a process route needs the program to run, e.g. command = ["./count.sh"]')
            )
        if route.backends:
            problems.append((f"{path}.backend", "process routes run their command per WebSocket and take no backend"))
        if route.stderr not in ("log", "client", "discard"):
            problems.append((f"{path}.stderr", f"must be 'log', 'client' or 'discard', not {route.stderr!r}"))
    elif route.command:
        problems.append((f"{path}.command", f"only applies to process routes, not {handler!r}"))
    if route.assign and handler != "cgi":
        problems.append((f"{path}.assign", "only applies to cgi routes"))
    if route.proxy_target not in PROXY_TARGETS:
        allowed = ", ".join(map(repr, PROXY_TARGETS))
        problems.append((f"{path}.proxy-target", f"must be one of {allowed}, not {route.proxy_target!r}"))
    if handler != "proxy":
        for key, given in (
            ("forwarded", route.forwarded),
            ("replace-http-host", route.replace_http_host),
            ("proxy-target", route.proxy_target != "normalized"),
        ):
            if given:
                problems.append((f"{path}.{key}", f"only applies to proxy routes, not {handler!r}"))
    for key, networks in (("allow", route.allow), ("deny", route.deny)):
        for i, network in enumerate(networks):
            if (problem := network_problem(network)) is not None:
                problems.append((f"{path}.{key}[{i}]", problem))
    _count(problems, f"{path}.max-connections-per-ip", route.max_connections_per_ip, 0)
    _count(problems, f"{path}.max-tunnels", route.max_tunnels, 0)
    _count(problems, f"{path}.queue-size", route.queue_size, 0)
    _seconds(problems, f"{path}.queue-timeout", route.queue_timeout)
    if route.max_tunnel_lifetime is not None:
        _seconds(problems, f"{path}.max-tunnel-lifetime", route.max_tunnel_lifetime)
    if route.max_request_body_size is not None:
        _count(problems, f"{path}.max-request-body-size", route.max_request_body_size, 0)
        if handler == "wstunnel":
            problems.append(
                (f"{path}.max-request-body-size", "only applies to proxy, cgi, scgi and fastcgi routes, not 'wstunnel'")
            )
    if handler in BACKEND_HANDLERS and not route.backends:
        problems.append((f"{path}.backend", f"a {handler} route needs at least one [[route.backend]]"))
    if handler == "cgi":
        if route.backends:
            problems.append((f"{path}.backend", "cgi routes run scripts under document-root and take no backend"))
        if config.document_root is None:
            problems.append((path, "a cgi route needs server.document-root (scripts are found there)"))
    for i, backend in enumerate(route.backends):
        _check_backend(problems, f"{path}.backend[{i}]", backend, handler)


def check_config(config: ServerConfig) -> list[tuple[str, str]]:
    """Every problem with ``config``'s values, as ``(key path, message)`` pairs.

    :meth:`ServerConfig.__attrs_post_init__` raises them as one
    :class:`~wstrio.ConfigError`; the TOML loader checks the *file* (unknown
    keys, types) before it builds the objects, which then check their values
    here, so a configuration built in Python is held to the same rules, with
    the same key paths (``route[0].backend[1].port``).
    """
    problems: list[tuple[str, str]] = []
    if not config.listen:
        problems.append(("server.listen", 'must be a non-empty array of addresses such as "127.0.0.1:8080"'))
    for i, address in enumerate(config.listen):
        kind: str = address.kind  # checked at run time: Python callers are not type-checked
        if kind == "tcp":
            _count(problems, f"server.listen[{i}].port", address.port, 0, 65535)
        elif kind == "unix":
            if address.path is None:
                problems.append((f"server.listen[{i}]", "a unix listener needs a path"))
        elif kind != "systemd":
            problems.append((f"server.listen[{i}]", f"kind must be 'tcp', 'unix' or 'systemd', not {kind!r}"))
        if address.proxy_protocol and not config.trusted_proxies:
            problems.append(
                (f"server.listen[{i}].proxy-protocol", "needs server.trusted-proxies: the proxies whose headers count")
            )
        if address.tls and config.tls is None:
            problems.append((f"server.listen[{i}].tls", "needs [server.tls] (certificate and private-key)"))
    _count(problems, "server.max-connections", config.max_connections, 1)
    _count(problems, "server.max-keep-alive-requests", config.max_keep_alive_requests, 1)
    _count(problems, "server.max-connections-per-ip", config.max_connections_per_ip, 0)
    if config.max_tunnels is not None:
        _count(problems, "server.max-tunnels", config.max_tunnels, 1)
    _count(problems, "server.max-request-body-size", config.max_request_body_size, 0)
    rate = config.request_rate
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or rate < 0 or not math.isfinite(rate):
        problems.append(("server.request-rate", f"must be a number of requests per second >= 0, not {rate!r}"))
    if config.request_burst is not None:
        _count(problems, "server.request-burst", config.request_burst, 1)
        if not rate:
            problems.append(("server.request-burst", "only applies with server.request-rate"))
    _count(problems, "server.max-request-field-size", config.max_request_field_size, 256, 1 << 20)
    _count(problems, "server.max-request-headers", config.max_request_headers, 1, 10000)
    _count(problems, "server.workers", config.workers, 1, 256)
    _count(problems, "server.max-buffer-memory", config.max_buffer_memory, 0)
    if config.health_path is not None and (
        not isinstance(config.health_path, str) or not config.health_path.startswith("/")
    ):
        problems.append(("server.health-path", f"must be a path starting with '/', not {config.health_path!r}"))
    for key, nets in (("trusted-proxies", config.trusted_proxies), ("forwarded-trust", config.forwarded_trust)):
        for j, network in enumerate(nets):
            if (problem := network_problem(network)) is not None:
                problems.append((f"server.{key}[{j}]", problem))
    if config.access_log_format not in get_args(AccessLogFormat):
        problems.append(("server.access-log-format", f"must be 'text' or 'json', not {config.access_log_format!r}"))
    _count(problems, "server.h2-max-concurrent-streams", config.h2_max_concurrent_streams, 1, 1 << 20)
    _count(problems, "server.h2-initial-window-size", config.h2_initial_window_size, 1024, (1 << 31) - 1)
    if (deny_problem := static_deny_problem(config.static_deny)) is not None:
        problems.append(("server.static-deny", deny_problem))
    for key, value in (
        ("max-read-idle", config.max_read_idle),
        ("max-write-idle", config.max_write_idle),
        ("max-keep-alive-idle", config.max_keep_alive_idle),
        ("max-request-head-time", config.max_request_head_time),
        ("max-tunnel-lifetime", config.max_tunnel_lifetime),
        ("shutdown-timeout", config.shutdown_timeout),
        ("drain-timeout", config.drain_timeout),
    ):
        _seconds(problems, f"server.{key}", value)
    for i, route in enumerate(config.routes):
        _check_route(problems, f"route[{i}]", route, config)
    return problems
