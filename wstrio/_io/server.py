"""Listeners, the accept loop and the server lifecycle.

Shape: :func:`serve_listeners` opens one nursery for the backend supervisors
(spawned ``bin-path`` processes) and, inside it, one for the connections.
Each accepted connection runs in its own task with its own nursery (see
:mod:`wstrio._io.streams.tunnel`).  Cancelling :func:`serve` stops the accept loops,
every tunnel sends CLOSE 1001 and waits (bounded by ``shutdown-timeout``)
for the client's CLOSE, and then the spawned backends are stopped.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import socket
import stat
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import NoReturn, final

import attrs
import trio
from hyperframe.frame import GoAwayFrame, SettingsFrame

from wstrio._config import ListenAddress, MetricsConfig, ServerConfig
from wstrio._errors import ConfigError
from wstrio._io.accesslog import AccessLogFile
from wstrio._io.backends.connect import BackendConnector, SocketConnector
from wstrio._io.backends.pool import SpawnedPool
from wstrio._io.context import ServerContext
from wstrio._io.handlers.dispatch import BUSY_RETRY_AFTER
from wstrio._io.http.exchange import ConnectionContext, Exchange, send_simple
from wstrio._io.http.h1 import serve_h1
from wstrio._io.http.h2.connection import PREFACE, read_preface, serve_h2
from wstrio._io.http.tls import ReloadableContext, TlsListener, handshake_time, listener_wants_tls
from wstrio._io.metrics import serve_metrics, server_statistics
from wstrio._io.proxyproto import read_proxy_header
from wstrio._io.streams.pipes import close_stream
from wstrio._io.systemd import inherited_sockets, taken_fds
from wstrio._sansio.limits import allowed, client_key
from wstrio._sansio.metrics import ServerStatistics
from wstrio._sansio.proxyproto import ProxyProtocolError
from wstrio._sansio.resources import AcceptBackoff

__all__ = ["ReloadReport", "Server", "ServerStatistics", "open_listeners", "serve", "serve_listeners"]

log = logging.getLogger("wstrio.server")
conn_log = logging.getLogger("wstrio.connection")

# The accept() errors that mean "out of resources", as in trio.serve_listeners:
# wait and try again instead of dying.
_ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_TLS_CLOSE_TIMEOUT = 1.0


@final
@attrs.frozen
class ReloadReport:
    """What :meth:`Server.reload` changed."""

    routes: int
    """Routes in the new configuration."""
    routes_kept: int
    """Of them, routes equal to one before: they keep their backends and counters."""
    pools_started: int
    """``bin-path`` backends new in this configuration, started."""
    pools_kept: int
    """``bin-path`` backends unchanged: their processes go on."""
    pools_draining: int
    """``bin-path`` backends no longer configured: they stop after their last connection (or ``drain-timeout``)."""
    listeners_added: tuple[str, ...] = ()
    """Addresses now listened on."""
    listeners_removed: tuple[str, ...] = ()
    """Addresses no longer listened on."""
    restart_needed: tuple[str, ...] = ()
    """Keys whose change takes effect only when wstrio is restarted (``workers``)."""

    def describe(self) -> str:
        """One line for the log."""
        parts = [
            f"{self.routes} route{'s' if self.routes != 1 else ''} ({self.routes_kept} unchanged)",
            f"bin-path backends: {self.pools_kept} kept, {self.pools_started} started, {self.pools_draining} draining",
        ]
        if self.listeners_added:
            parts.append("now listening on " + ", ".join(self.listeners_added))
        if self.listeners_removed:
            parts.append("no longer listening on " + ", ".join(self.listeners_removed))
        if self.restart_needed:
            parts.append("a restart is needed to change " + ", ".join(self.restart_needed))
        return "; ".join(parts)


@attrs.define(eq=False)
class _Listening:
    """One listener being accepted on, with what a reload or the stop needs to know."""

    address: ListenAddress | None
    """The ``listen`` entry it was opened for (``None``: handed to serve_listeners)."""
    listener: trio.abc.Listener[trio.abc.Stream]
    proxied: bool = False
    """Connections start with a PROXY protocol header."""
    unix_path: Path | None = None
    """The socket file wstrio created (removed when the listener closes)."""
    group: int = 0
    """Which ``listen`` entry opened it (an address such as ``localhost:80`` opens several)."""
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    """The accept loop's."""

    @property
    def raw(self) -> trio.abc.Listener[trio.abc.Stream]:
        """The listener without TLS."""
        listener = self.listener
        return listener.transport_listener if isinstance(listener, TlsListener) else listener

    async def close(self) -> None:
        self.scope.cancel()
        if self.unix_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.unix_path)
        with trio.CancelScope(shield=True):  # (it runs when serving is cancelled: every listener closes)
            await trio.aclose_forcefully(self.listener)


@final
@attrs.frozen
class _ListenPlan:
    """How a reload changes the listeners: by the ``listen`` entries of the old and new configurations."""

    kept: dict[_Listening, ListenAddress]
    rewrapped: list[tuple[_Listening, ListenAddress, bool]]
    """Same socket, new ``tls`` or ``proxy-protocol``: (listening, new address, serve TLS)."""
    removed: list[_Listening]
    added: list[ListenAddress]

    @classmethod
    def make(cls, server: Server, config: ServerConfig) -> _ListenPlan:
        old_config = server.config
        groups: dict[int, list[_Listening]] = {}
        for listening in server._listening:
            groups.setdefault(listening.group, []).append(listening)
        kept: dict[_Listening, ListenAddress] = {}
        rewrapped: list[tuple[_Listening, ListenAddress, bool]] = []
        added: list[ListenAddress] = []

        def bind(address: ListenAddress | None) -> ListenAddress | None:
            return None if address is None else attrs.evolve(address, tls=None, proxy_protocol=False)

        def old_tls(group: list[_Listening]) -> bool:
            address = group[0].address
            return address is not None and listener_wants_tls(old_config, address.tls)

        for address in config.listen:
            tls = listener_wants_tls(config, address.tls)
            same = next((g for g, x in groups.items() if x[0].address == address and old_tls(x) == tls), None)
            if same is not None:
                for x in groups.pop(same):
                    kept[x] = address
                continue
            moved = next((g for g, x in groups.items() if bind(x[0].address) == bind(address)), None)
            if moved is not None:
                rewrapped.extend((x, address, tls) for x in groups.pop(moved))
                continue
            added.append(address)
        removed = [x for group in groups.values() for x in group]
        return cls(kept, rewrapped, removed, added)


def _bound_address(listener: trio.abc.Listener[trio.abc.Stream]) -> ListenAddress | None:
    sock = getattr(listener, "socket", None)
    if sock is None:
        return None
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return ListenAddress("unix", path=Path(name if isinstance(name, str) else name.decode()))
    return ListenAddress("tcp", name[0], name[1])


@final
class Server:
    """A running wstrio server.

    There is no public constructor: :func:`wstrio.serve` and
    :func:`wstrio.serve_listeners` create it and pass it to
    ``task_status.started()``.
    """

    def __init__(self, config: ServerConfig, listeners: Sequence[trio.abc.Listener[trio.abc.Stream]]) -> None:
        self.config = config
        self.listeners = tuple(listeners)
        # Resolved now, so they can still be read after serve() returns.
        self._addresses = tuple(a for a in map(_bound_address, self.listeners) if a is not None)
        self._active = 0
        self._total = 0
        self._context: ServerContext | None = None  # set by _serve
        self._access_log: AccessLogFile | None = None  # access-log, while serving
        # With a handler_nursery, connections outlive serve(); the services
        # they use (hub, timers, backends) stop once serving has stopped and
        # the last connection ended.
        self._serving = True
        self._drained = trio.Event()
        # One reloadable context per [server.tls], shared by its TLS listeners.
        tls_listeners = [x for x in self.listeners if isinstance(x, TlsListener)]
        self._tls_contexts = list({id(x.contexts): x.contexts for x in tls_listeners}.values())
        # Set by _serve: what a reload needs.
        self._limiter = trio.CapacityLimiter(config.max_connections)
        self._listening: list[_Listening] = []
        self._groups = 1 << 20  # numbers for the listen entries a reload adds
        self._opened_from_config = False  # the listeners are config.listen's (serve()), so a reload changes them
        self._tls: ReloadableContext | None = None  # the context of those TLS listeners
        self._connector: BackendConnector = SocketConnector()
        self._worker = False
        self._services_nursery: trio.Nursery | None = None
        self._accepting: trio.Nursery | None = None
        self._handlers: trio.Nursery | None = None
        self._reloading = trio.Lock()
        self._metrics_address: ListenAddress | None = None
        self._metrics_path: Path | None = None  # its unix socket file, removed at the end
        self.reloads = 0
        """Successful :meth:`reload` calls so far."""

    def dispatch(self, exchange: Exchange) -> Awaitable[None]:
        """Answer one request with the configuration current now (a reload applies to the next request)."""
        assert self._context is not None
        return self._context.dispatch(exchange)

    @property
    def addresses(self) -> tuple[ListenAddress, ...]:
        """The bound addresses (port 0 resolved to the port the OS chose)."""
        return self._addresses

    @property
    def metrics_address(self) -> ListenAddress | None:
        """Where the ``[server.metrics]`` listener is bound (port 0 resolved), or ``None``."""
        return self._metrics_address

    @property
    def port(self) -> int:
        """The TCP port, when the server listens on exactly one TCP port.

        Raises:
            RuntimeError: there is no TCP listener, or several ports.
        """
        ports = {a.port for a in self.addresses if a.kind == "tcp"}
        if len(ports) != 1:
            msg = f"server.port needs exactly one TCP port, not {sorted(ports)}; use server.addresses"
            raise RuntimeError(msg)
        return ports.pop()

    def url(self, path: str = "/", *, scheme: str = "http") -> str:
        """``http://host:port/path`` for the first TCP listener (``ws``/``wss`` with ``scheme=``)."""
        for a in self.addresses:
            if a.kind == "tcp":
                host = a.host if a.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
                if ":" in host:
                    host = f"[{host}]"
                return f"{scheme}://{host}:{a.port}{path}"
        msg = "the server has no TCP listener"
        raise RuntimeError(msg)

    def statistics(self) -> ServerStatistics:
        """Counters of this server: the figures the metrics listener exposes (``[server.metrics]``)."""
        context = self._context
        if context is None:
            return ServerStatistics(connections_active=self._active, connections_total=self._total)
        return server_statistics(context, self._active, self._total, self.reloads)

    def reload_certificates(self) -> int:
        """Read the TLS certificate and key files again (what SIGHUP does).

        New connections get the new certificate; connections already open
        keep theirs and are not disturbed.  Reads two small files
        synchronously.

        Returns:
            how many TLS configurations were reloaded (0 without TLS listeners).

        Raises:
            ConfigError: the files are unusable now; the old certificate stays.
        """
        for contexts in self._tls_contexts:
            contexts.reload()
        return len(self._tls_contexts)

    async def reload(self, config: ServerConfig) -> ReloadReport:
        """Serve ``config`` from now on, without dropping a connection (what SIGHUP does).

        New connections, and the next request on a connection already open,
        get the new routes.  What is open keeps running untouched: tunnels,
        relays and CGI upgrades keep their backend.  In detail:

        * a route equal to an old one keeps its backends (balancer state,
          disabled hosts, queue) and counters;
        * a ``bin-path`` backend equal to an old one keeps its processes; a
          new one is started (before anything changes: when it cannot start,
          nothing does); one no longer configured is stopped when its last
          connection ends, or after ``drain-timeout``;
        * with listeners :func:`serve` opened, addresses added to ``listen``
          are bound and those removed are closed (an address whose ``tls`` or
          ``proxy-protocol`` changed keeps its socket);
        * the TLS certificate and key are read again;
        * connection-level settings (timeouts, HTTP/2 settings) apply to new
          connections; ``max-connections`` and ``max-buffer-memory`` at once.

        ``workers`` cannot change in a running process: the report lists it in
        ``restart_needed``.

        Returns:
            what changed.

        Raises:
            ConfigError: the new TLS files or access-log file cannot be used.
            OSError: a new address cannot be bound.
            BackendExited: a new ``bin-path`` backend cannot be started (in an
                :class:`ExceptionGroup`).
            RuntimeError: the server is not serving.

            In every case the running configuration stays as it was.
        """
        async with self._reloading:
            return await self._reload(config)

    async def _reload(self, config: ServerConfig) -> ReloadReport:
        old = self._context
        services, accepting = self._services_nursery, self._accepting
        if not self._serving or old is None or services is None or accepting is None:
            msg = "the server is not serving"
            raise RuntimeError(msg)
        # 1. Everything that can fail, before anything changes.
        tls_now = self._prepare_tls(config)
        if config.access_log is not None and config.access_log != old.config.access_log:
            try:
                await trio.Path(config.access_log).touch()
            except OSError as exc:
                problem = f"cannot open {config.access_log} for appending: {exc.strerror or exc}"
                raise ConfigError(config.source, [("server.access-log", problem)]) from exc
        plan = _ListenPlan.make(self, config) if self._opened_from_config else None
        contexts = tls_now[0][0] if self._opened_from_config and tls_now else self._tls
        opened = await _open_addresses(config, plan.added, contexts) if plan is not None else []
        new = ServerContext(config, self._connector, spawn=not self._worker, previous=old)
        started: list[SpawnedPool] = []
        try:
            if new.starts_programs and not new.keeper.running:
                await services.start(new.keeper.run)
            for backends in new.backends.values():
                fresh = [pool for pool in backends.spawned_pools if not pool.started]
                await backends.start(services, new.keeper)
                started.extend(fresh)
        except BaseException:
            for pool in started:
                pool.stop()
            for _, listeners in opened:
                for listener in listeners:
                    await trio.aclose_forcefully(listener)
            raise
        # 2. Commit: from here on nothing fails.
        for contexts, replacement in tls_now:
            contexts.take(replacement)
        if self._opened_from_config and tls_now and self._tls is None:
            self._tls = tls_now[0][0]
        new.budget.limit = config.max_buffer_memory
        self._limiter.total_tokens = config.max_connections
        if (config.access_log, config.access_log_format) != (old.config.access_log, old.config.access_log_format):
            if self._access_log is not None:
                self._access_log.close()
                self._access_log = None
            if config.access_log is not None:
                self._access_log = AccessLogFile(config.access_log, config.access_log_format == "json")
        self._context = new
        self.config = config
        added: list[str] = []
        removed: list[str] = []
        if plan is not None:
            for listening in plan.removed:
                self._listening.remove(listening)
                await listening.close()
                removed.append(str(listening.address))
            for listening, address, tls in plan.rewrapped:
                listening.scope.cancel()
                self._listening.remove(listening)
                raw = listening.raw
                wrapped: trio.abc.Listener[trio.abc.Stream] = raw
                if tls:
                    assert self._tls is not None
                    wrapped = TlsListener(raw, self._tls)
                moved = _Listening(
                    address, wrapped, proxied=address.proxy_protocol, unix_path=listening.unix_path,
                    group=listening.group,
                )  # fmt: skip
                self._listening.append(moved)
                accepting.start_soon(_accept_loop, moved, self)
            for listening in plan.kept:
                listening.address = plan.kept[listening]
            for address, listeners in opened:
                self._groups += 1
                for listener in listeners:
                    bound = _bound_address(listener)
                    path = bound.path if bound is not None and not self._worker else None
                    fresh_listening = _Listening(
                        address, listener, proxied=address.proxy_protocol, unix_path=path, group=self._groups
                    )
                    self._listening.append(fresh_listening)
                    accepting.start_soon(_accept_loop, fresh_listening, self)
                    _log_listening(listener, "now listening on")
                added.append(str(address))
            self.listeners = tuple(x.listener for x in self._listening)
            self._addresses = tuple(a for a in map(_bound_address, self.listeners) if a is not None)
        for pool in new.removed_pools:
            services.start_soon(pool.drain, config.drain_timeout)
        self.reloads += 1
        kept_pools = len(new.spawned_pools()) - len(started)
        return ReloadReport(
            routes=len(config.routes),
            routes_kept=new.kept_routes,
            pools_started=len(started),
            pools_kept=kept_pools,
            pools_draining=len(new.removed_pools),
            listeners_added=tuple(added),
            listeners_removed=tuple(removed),
            restart_needed=tuple(
                key
                for key, changed in (
                    ("workers", config.workers != old.config.workers),
                    ("server.metrics", config.metrics != old.config.metrics),
                )
                if changed
            ),
        )

    async def retire(self, limit: float = 0.0) -> None:
        """Stop accepting, and return once the last open connection has ended, or after ``limit`` s (0: no limit).

        What a worker of an old configuration does after a reload (SIGUSR2
        from the supervisor): the new workers take new connections, and the
        tunnels open here run on untouched.  Cancelling the serve call
        afterwards closes what is still open (CLOSE 1001).
        """
        self._serving = False
        for listening in self._listening:
            await listening.close()
        if self._active == 0:
            self._drained.set()
        with trio.move_on_after(limit or math.inf):
            await self._drained.wait()

    def _prepare_tls(self, config: ServerConfig) -> list[tuple[ReloadableContext, ReloadableContext]]:
        """Each TLS context to replace, with its replacement, loaded now (nothing changes yet).

        Raises:
            ConfigError: the certificate or key cannot be used.
        """
        if self._opened_from_config:
            if not any(listener_wants_tls(config, address.tls) for address in config.listen):
                return []
            replacement = ReloadableContext.from_config(config)
            return [(self._tls or replacement, replacement)]
        out = []
        for contexts in self._tls_contexts:
            tls = config.tls if config.tls is not None else contexts.tls
            out.append((contexts, ReloadableContext(tls, http2=config.http2, source=config.source)))
        return out

    def reopen_access_log(self) -> bool:
        """Reopen the ``access-log`` file by name (what SIGUSR1 does, for logrotate).

        Returns:
            False when the configuration names no access-log file.

        Raises:
            OSError: the file cannot be opened now (lines are retried on the next request).
        """
        if self._access_log is None:
            return False
        self._access_log.reopen()
        return True


def _open_unix_listener(path: Path) -> trio.SocketListener:
    p = str(path)
    try:
        mode = os.lstat(p).st_mode
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(mode):
            msg = f"{p} exists and is not a socket"
            raise OSError(errno.EEXIST, msg)
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(p)
            except OSError:
                os.unlink(p)  # stale, from an earlier run
            else:
                raise OSError(errno.EADDRINUSE, f"another server is listening on {p}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(p)
        sock.listen(socket.SOMAXCONN)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(trio.socket.from_stdlib_socket(sock))


def _inherited_listeners(address: ListenAddress) -> list[trio.SocketListener]:
    """The listening sockets systemd passed for ``address`` (``systemd`` or ``systemd:name``)."""
    passed = inherited_sockets()
    chosen = [s for s in passed if address.name is None or s.name == address.name]
    if not chosen:
        names = ", ".join(sorted({s.name for s in passed})) or "none"
        msg = (
            "systemd passed no socket"
            + (f" named {address.name!r} (FileDescriptorName=; passed: {names})" if address.name else "")
            + "; start wstrio from its .socket unit, or listen on an address"
        )
        raise OSError(errno.EBADF, msg)
    listeners = []
    for item in chosen:
        sock = socket.socket(fileno=item.fd)
        if sock.type != socket.SOCK_STREAM or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            sock.detach()
            msg = f"the socket systemd passed as fd {item.fd} ({item.name}) is not a listening stream socket"
            raise OSError(errno.EINVAL, msg)
        sock.setblocking(False)
        listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
    return listeners


async def open_listeners(addresses: Sequence[ListenAddress]) -> list[trio.SocketListener]:
    """Bind every address (TCP via :func:`trio.open_tcp_listeners`, unix directly).

    Raises:
        OSError: an address cannot be bound (with the address in the message).
    """
    listeners: list[trio.SocketListener] = []
    try:
        for address in addresses:
            try:
                if address.kind == "unix":
                    assert address.path is not None
                    listeners.append(_open_unix_listener(address.path))
                elif address.kind == "systemd":
                    listeners.extend(_inherited_listeners(address))
                else:
                    listeners.extend(
                        await trio.open_tcp_listeners(address.port, host=address.host or None, backlog=None)
                    )
            except OSError as exc:
                msg = f"cannot listen on {address}: {exc.strerror or exc}"
                raise OSError(exc.errno, msg) from exc
    except BaseException:
        for listener in listeners:
            await trio.aclose_forcefully(listener)
        raise
    return listeners


def _addresses(stream: trio.abc.Stream) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
    if isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    sock = getattr(stream, "socket", None)
    if sock is None or sock.family == socket.AF_UNIX:
        return None, None
    try:
        peer = sock.getpeername()
        local = sock.getsockname()
    except OSError:
        return None, None
    return (peer[0], peer[1]), (local[0], local[1])


async def _proxied_addresses(
    stream: trio.abc.Stream, config: ServerConfig, client: tuple[str, int] | None, local: tuple[str, int] | None
) -> tuple[tuple[str, int] | None, tuple[str, int] | None] | None:
    """The addresses a PROXY protocol header gives, or None: close the connection (logged)."""
    peer = client[0] if client else None
    if not allowed(peer, config.trusted_proxies, ()):
        conn_log.info("%s: not in trusted-proxies, on a proxy-protocol listener: closing", peer or "unix")
        return None
    transport = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    sock = getattr(transport, "socket", None)
    if sock is None:  # pragma: no cover - every proxy-protocol listener is a socket
        return None
    with trio.move_on_after(handshake_time(config)):  # the first bytes, bounded as a TLS handshake is
        try:
            header = await read_proxy_header(sock)
        except (ProxyProtocolError, OSError) as exc:
            conn_log.info("%s: bad PROXY protocol header: %s", peer, exc)
            return None
        if header.source is None:  # LOCAL or UNKNOWN: the proxy speaks for itself
            return client, local
        return header.source, header.destination
    conn_log.info("%s: no PROXY protocol header in time (max-request-head-time, max-read-idle)", peer)
    return None


async def _handle_connection(
    stream: trio.abc.Stream, context: ServerContext, server: Server, proxied: bool = False
) -> None:
    client, local = _addresses(stream)
    key = None
    admitted = False
    try:
        if proxied:
            addresses = await _proxied_addresses(stream, context.config, client, local)
            if addresses is None:
                return
            client, local = addresses
        key = client_key(client[0]) if client else None
        admitted = context.connections_per_ip.acquire(key)
        if not admitted:
            conn_log.info(
                "%s:%d: over max-connections-per-ip (%d): answering 429 (HTTP/2: GOAWAY ENHANCE_YOUR_CALM)",
                *(client or ("unix", 0)),
                context.config.max_connections_per_ip,
            )
        await _serve_connection(stream, context, client, local, refuse=not admitted, dispatch=server.dispatch)
    except Exception:
        conn_log.exception("connection from %s failed", client)
    finally:
        if admitted:
            context.connections_per_ip.release(key)
        server._active -= 1
        if not server._serving and server._active == 0:
            server._drained.set()
        await close_stream(stream)


async def _too_many_connections(exchange: Exchange) -> None:
    """The answer to every request on a connection over ``max-connections-per-ip``."""
    exchange.set_log_note("over max-connections-per-ip")
    await send_simple(
        exchange, 429, headers=[(b"retry-after", str(BUSY_RETRY_AFTER).encode()), (b"connection", b"close")]
    )


async def _calm_h2(stream: trio.abc.Stream) -> None:
    """Refuse an HTTP/2 connection over ``max-connections-per-ip``: SETTINGS, GOAWAY ENHANCE_YOUR_CALM."""
    frames = SettingsFrame(0).serialize() + GoAwayFrame(0, last_stream_id=0, error_code=0xB).serialize()
    with trio.move_on_after(_TLS_CLOSE_TIMEOUT):
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(frames)


async def _serve_connection(
    stream: trio.abc.Stream,
    context: ServerContext,
    client: tuple[str, int] | None,
    local: tuple[str, int] | None,
    *,
    refuse: bool = False,
    dispatch: Callable[[Exchange], Awaitable[None]] | None = None,
) -> None:
    """TLS handshake (if any), then HTTP/2 or HTTP/1.1 on the connection.

    ``refuse``: the client is over ``max-connections-per-ip``: HTTP/1.1
    requests get 429 and the connection closes, HTTP/2 gets GOAWAY
    ENHANCE_YOUR_CALM.  ``dispatch`` answers each request (default:
    ``context``'s; the server's follows reloads).
    """
    config = context.config
    dispatch = _too_many_connections if refuse else dispatch or context.dispatch
    if isinstance(stream, trio.SSLStream):
        # A client that connects and says nothing must not hold the slot:
        # the whole handshake is bounded like a request head (handshake_time).
        with trio.move_on_after(handshake_time(config)) as scope:
            try:
                await stream.do_handshake()
            except trio.BrokenResourceError as exc:
                conn_log.info("TLS handshake with %s failed: %s", client, exc.__cause__ or exc)
                return
        if scope.cancelled_caught:
            conn_log.info("TLS handshake with %s timed out", client)
            return
        try:
            if stream.selected_alpn_protocol() == "h2":
                if refuse:
                    await _calm_h2(stream)
                else:
                    await serve_h2(stream, config, dispatch, scheme="https", client=client, server=local)
            else:
                await serve_h1(stream, ConnectionContext(config, dispatch, "https", client, local))
        finally:
            # close_notify, so that the client can tell the end of a response
            # from a cut connection (bounded: the client may not be reading).
            with trio.move_on_after(_TLS_CLOSE_TIMEOUT, shield=True):
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stream.aclose()
        return
    initial = b""
    if config.http2:
        # h2c by prior knowledge (RFC 9113 3.3): the client starts with the
        # preface.  HTTP/1.1 request lines differ from it at once.
        preface = await read_preface(stream, config.max_read_idle or math.inf)
        if preface is None:
            return
        if preface.startswith(PREFACE):
            if refuse:
                await _calm_h2(stream)
                return
            await serve_h2(stream, config, dispatch, scheme="http", client=client, server=local, initial=preface)
            return
        initial = preface
    await serve_h1(stream, ConnectionContext(config, dispatch, "http", client, local), initial=initial)


async def _accept_loop(listening: _Listening, server: Server) -> None:
    """Accept on one listener until cancelled (a reload that removes it cancels it; it is closed apart)."""
    backoff = AcceptBackoff()
    listener = listening.listener
    limiter = server._limiter
    with listening.scope:
        while True:
            # At max-connections we stop accepting; new clients wait in the
            # kernel's listen queue, as with lighttpd.  (A CapacityLimiter, so
            # that a reload can change max-connections.)
            token = object()
            await limiter.acquire_on_behalf_of(token)
            try:
                stream = await listener.accept()
            except OSError as exc:
                limiter.release_on_behalf_of(token)
                if exc.errno in _ACCEPT_CAPACITY_ERRNOS:
                    # Out of file descriptors or memory: wait (backing off)
                    # and say so once per episode, not at every retry.
                    delay, first = backoff.failed(trio.current_time())
                    if first:
                        log.error(
                            "accept() failed (%s); new clients wait in the listen queue until it works again"
                            " (see max-connections and the open-file limit in docs/deployment.md)",
                            os.strerror(exc.errno or 0),
                        )
                    await trio.sleep(delay)
                    continue
                raise
            except BaseException:
                limiter.release_on_behalf_of(token)
                raise
            ended = backoff.succeeded(trio.current_time()) if backoff.in_episode else None
            if ended is not None:
                log.warning("accepting again after %.1f s (%d failed accepts)", *ended)
            server._active += 1
            server._total += 1
            # The configuration current now: a reload applies to the next accept.
            handlers, context = server._handlers, server._context
            assert handlers is not None
            assert context is not None
            handlers.start_soon(_run_connection, stream, token, context, server, listening.proxied)


async def _run_connection(
    stream: trio.abc.Stream, token: object, context: ServerContext, server: Server, proxied: bool = False
) -> None:
    try:
        await _handle_connection(stream, context, server, proxied)
    finally:
        server._limiter.release_on_behalf_of(token)


async def _start_services(nursery: trio.Nursery, context: ServerContext, server: Server) -> None:
    """Start what connections use: the keeper, backend pools, the timers, the reaper and the hub."""
    server._services_nursery = nursery  # where a reload starts new pools
    if context.starts_programs:
        # First, so that it stops last: it waits for the pools and the
        # reaper to stop their processes, then kills what is left.
        await nursery.start(context.keeper.run)
    for route_backends in context.backends.values():
        await route_backends.start(nursery, context.keeper)
    nursery.start_soon(context.timers.run)
    await nursery.start(context.budget.run)
    await nursery.start(context.reaper.run)
    await nursery.start(context.hub.run)  # the hub is ready before the first accept


async def _run_services(
    context: ServerContext, server: Server, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """The services in a ``handler_nursery``: until serving stopped and the last connection ended."""
    async with trio.open_nursery() as nursery:
        await _start_services(nursery, context, server)
        task_status.started()
        await server._drained.wait()
        if server._access_log is not None:
            server._access_log.close()
        nursery.cancel_scope.cancel()


async def serve_listeners(
    config: ServerConfig,
    listeners: Sequence[trio.abc.Listener[trio.abc.Stream]],
    *,
    connector: BackendConnector | None = None,
    handler_nursery: trio.Nursery | None = None,
    proxy_protocol: Sequence[trio.abc.Listener[trio.abc.Stream]] = (),
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve ``config`` on already-open ``listeners`` until cancelled.

    Args:
        config: the configuration (its ``listen`` is ignored here).
        listeners: any Trio listeners, e.g. :class:`trio.testing.MemoryListener`.
        connector: how backends are reached (default: real sockets).
        handler_nursery: where connection tasks run (default: an internal
            nursery).  They then outlive this call, as with
            :func:`trio.serve_tcp`: cancelling it stops accepting, and the
            open connections go on (with the hub, timers and backends they
            use, which stop after the last of them) until they end or that
            nursery is cancelled.
        proxy_protocol: those of ``listeners`` whose connections start with
            a PROXY protocol header (from ``trusted-proxies`` only).
        task_status: receives the :class:`Server` once every listener accepts
            and every spawned backend has started.

    Returns:
        never, unless cancelled.

    Cancellation: stops accepting; open tunnels get CLOSE 1001 and up to
    ``shutdown-timeout`` seconds to finish; spawned backends are stopped
    (``kill-signal``, then SIGKILL).

    Resource handling: takes ownership of ``listeners`` and closes them.

    Error handling: a failing connection is logged to ``wstrio.connection``
    and never disturbs another.  Listener errors other than running out of
    file descriptors propagate (in an :class:`ExceptionGroup`).
    """
    await _serve(
        config,
        listeners,
        connector=connector,
        handler_nursery=handler_nursery,
        proxied=frozenset(map(id, proxy_protocol)),
        task_status=task_status,
    )


async def _serve(
    config: ServerConfig,
    listeners: Sequence[trio.abc.Listener[trio.abc.Stream]],
    *,
    connector: BackendConnector | None = None,
    handler_nursery: trio.Nursery | None = None,
    worker: bool = False,
    proxied: frozenset[int] = frozenset(),
    listen: Sequence[tuple[ListenAddress, Sequence[trio.abc.Listener[trio.abc.Stream]]]] | None = None,
    tls: ReloadableContext | None = None,
    metrics_offset: int = 0,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """serve_listeners' body.  ``worker=True``: a worker process of ``workers = N``,
    which neither spawns ``bin-path`` backends nor removes unix socket files
    (the supervisor owns both).  ``listen``: the listeners opened for each
    address of ``config.listen`` (by :func:`serve`; a reload then adds and
    removes listeners), with ``tls`` the context of their TLS ones."""
    connector = connector or SocketConnector()
    context = ServerContext(config, connector, spawn=not worker)
    server = Server(config, listeners)
    server._context = context
    server._connector = connector
    server._worker = worker
    server._tls = tls
    # Socket files wstrio created go when it stops; not those systemd passed (it owns them).
    passed = taken_fds()
    groups: list[tuple[ListenAddress | None, Sequence[trio.abc.Listener[trio.abc.Stream]]]]
    groups = list(listen) if listen is not None else [(None, listeners)]
    server._opened_from_config = listen is not None
    for group, (address, opened) in enumerate(groups):
        for listener in opened:
            bound = _bound_address(listener)  # a TlsListener has .socket too
            path = None
            if not worker and bound is not None and bound.path is not None:
                if listener.socket.fileno() not in passed:  # type: ignore[attr-defined]
                    path = bound.path
            server._listening.append(
                _Listening(address, listener, proxied=id(listener) in proxied, unix_path=path, group=group)
            )
    try:
        if config.access_log is not None:
            try:
                server._access_log = AccessLogFile(config.access_log, config.access_log_format == "json")
            except OSError as exc:
                problem = f"cannot open {config.access_log} for appending: {exc.strerror or exc}"
                raise ConfigError(config.source, [("server.access-log", problem)]) from exc
        async with trio.open_nursery() as backend_nursery:
            if handler_nursery is None:
                await _start_services(backend_nursery, context, server)
            else:
                # The connections run in handler_nursery and outlive this
                # call (as with trio.serve_tcp), so what they use must too.
                await handler_nursery.start(_run_services, context, server)
            if config.metrics is not None:
                await _start_metrics(backend_nursery, server, config.metrics, metrics_offset)
            async with trio.open_nursery() as connection_nursery:
                server._accepting = connection_nursery
                server._handlers = handler_nursery or connection_nursery
                for listening in server._listening:
                    connection_nursery.start_soon(_accept_loop, listening, server)
                for listening in server._listening:
                    _log_listening(listening.listener)
                task_status.started(server)
            backend_nursery.cancel_scope.cancel()
    finally:
        server._serving = False
        if server._active == 0:
            server._drained.set()
        if server._access_log is not None and handler_nursery is None:
            # (With a handler nursery, connections still log after this: the
            # services close it after the last one.)
            server._access_log.close()
        for listening in server._listening:
            await listening.close()
        if server._metrics_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(server._metrics_path)
    msg = "_serve ended without being cancelled"  # pragma: no cover
    raise AssertionError(msg)  # pragma: no cover


async def _start_metrics(nursery: trio.Nursery, server: Server, metrics: MetricsConfig, offset: int) -> None:
    """Open the ``[server.metrics]`` listener (worker *n* of ``workers``: port + *n*) and serve it."""
    address = metrics.listen
    if offset and address.kind == "tcp" and address.port:
        address = attrs.evolve(address, port=address.port + offset)
    elif offset and address.kind == "unix" and address.path is not None:
        address = attrs.evolve(address, path=address.path.with_name(f"{address.path.name}.{offset}"))
    opened = await open_listeners([address])
    listener: trio.abc.Listener[trio.abc.Stream] = opened[0]
    for extra in opened[1:]:
        await trio.aclose_forcefully(extra)
    bound = _bound_address(listener)
    server._metrics_address = bound
    if bound is not None and bound.path is not None:
        server._metrics_path = bound.path

    assert server._context is not None
    counters = server._context.services.counters  # (shared by every configuration: a reload keeps them)
    await nursery.start(serve_metrics, listener, metrics, server.statistics, counters)
    log.info("metrics on http://%s%s", bound, metrics.path)


def _log_listening(listener: trio.abc.Listener[trio.abc.Stream], verb: str = "listening on") -> None:
    address = _bound_address(listener)
    if address is not None:
        scheme = "https" if isinstance(listener, (TlsListener, trio.SSLListener)) else "http"
        where = f"{scheme}://{address}" if address.kind == "tcp" else f"{address} ({scheme})"
        log.info("%s %s", verb, where)


async def serve_worker(
    config: ServerConfig,
    inherited: Sequence[tuple[int, bool, bool]],
    *,
    number: int = 0,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve on listening sockets inherited from the supervisor (``workers = N``).

    Args:
        config: the configuration.
        inherited: ``(file descriptor, serve TLS, PROXY protocol)`` for each listening socket.
        number: which worker this is (its metrics listener is at port + ``number``).
    """
    contexts = ReloadableContext.from_config(config) if any(tls for _, tls, _ in inherited) else None
    listeners: list[trio.abc.Listener[trio.abc.Stream]] = []
    proxied = set()
    for fd, tls, proxy in inherited:
        stdlib = socket.socket(fileno=fd)
        listener: trio.abc.Listener[trio.abc.Stream] = trio.SocketListener(trio.socket.from_stdlib_socket(stdlib))
        if tls:
            assert contexts is not None
            listener = TlsListener(listener, contexts)
        listeners.append(listener)
        if proxy:
            proxied.add(id(listener))
    await _serve(
        config, listeners, worker=True, proxied=frozenset(proxied), metrics_offset=number, task_status=task_status
    )


async def serve(
    config: ServerConfig,
    *,
    connector: BackendConnector | None = None,
    handler_nursery: trio.Nursery | None = None,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Listen on ``config.listen`` and serve until cancelled.

    A thin wrapper around :func:`serve_listeners`, like :func:`trio.serve_tcp`.
    Use it as ``server = await nursery.start(wstrio.serve, config)``; with
    port 0 in ``listen``, ``server.port`` tells the port the OS chose.

    Listeners whose address asks for TLS (``[server.tls]``, or ``tls = true``
    on the address) serve https/wss, with HTTP/2 offered by ALPN; the others
    serve cleartext HTTP/1.1 and h2c.  :meth:`Server.reload_certificates`
    loads new certificates for new connections.

    Raises:
        OSError: an address cannot be bound.
        ConfigError: the TLS certificate or key cannot be used.
        BackendExited: a spawned backend cannot be started (inside an
            :class:`ExceptionGroup`, as nurseries are strict).
    """
    contexts = None
    if any(listener_wants_tls(config, address.tls) for address in config.listen):
        contexts = ReloadableContext.from_config(config)
    groups = await _open_addresses(config, config.listen, contexts)
    listeners = [listener for _, opened in groups for listener in opened]
    proxied = [listener for address, opened in groups if address.proxy_protocol for listener in opened]
    await _serve(
        config,
        listeners,
        connector=connector,
        handler_nursery=handler_nursery,
        proxied=frozenset(map(id, proxied)),
        listen=groups,
        tls=contexts,
        task_status=task_status,
    )


async def _open_addresses(
    config: ServerConfig, addresses: Sequence[ListenAddress], contexts: ReloadableContext | None
) -> list[tuple[ListenAddress, list[trio.abc.Listener[trio.abc.Stream]]]]:
    """Bind each address, wrapping the TLS ones (``contexts``); all or none.

    Raises:
        OSError: an address cannot be bound (those bound before are closed).
    """
    groups: list[tuple[ListenAddress, list[trio.abc.Listener[trio.abc.Stream]]]] = []
    try:
        for address in addresses:
            opened: list[trio.abc.Listener[trio.abc.Stream]] = list(await open_listeners([address]))
            if listener_wants_tls(config, address.tls):
                assert contexts is not None
                opened = [TlsListener(listener, contexts) for listener in opened]
            groups.append((address, opened))
    except BaseException:
        for _, opened in groups:
            for listener in opened:
                await trio.aclose_forcefully(listener)
        raise
    return groups
