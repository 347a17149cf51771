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
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn, final

import attrs
import trio
from hyperframe.frame import GoAwayFrame, SettingsFrame

from wstrio._config import ListenAddress, ServerConfig
from wstrio._errors import ConfigError
from wstrio._io.accesslog import AccessLogFile
from wstrio._io.backends.connect import BackendConnector, SocketConnector
from wstrio._io.context import ServerContext
from wstrio._io.handlers.dispatch import BUSY_RETRY_AFTER
from wstrio._io.http.exchange import ConnectionContext, Exchange, send_simple
from wstrio._io.http.h1 import serve_h1
from wstrio._io.http.h2.connection import PREFACE, read_preface, serve_h2
from wstrio._io.http.tls import ReloadableContext, TlsListener, handshake_time, listener_wants_tls
from wstrio._io.proxyproto import read_proxy_header
from wstrio._io.streams.pipes import close_stream
from wstrio._io.systemd import inherited_sockets, taken_fds
from wstrio._sansio.limits import allowed, client_key
from wstrio._sansio.proxyproto import ProxyProtocolError
from wstrio._sansio.resources import AcceptBackoff

__all__ = ["Server", "ServerStatistics", "open_listeners", "serve", "serve_listeners"]

log = logging.getLogger("wstrio.server")
conn_log = logging.getLogger("wstrio.connection")

# The accept() errors that mean "out of resources", as in trio.serve_listeners:
# wait and try again instead of dying.
_ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_TLS_CLOSE_TIMEOUT = 1.0


@final
@attrs.frozen
class ServerStatistics:
    """A snapshot of a running server's counters."""

    connections_active: int
    """Client connections open now."""
    connections_total: int
    """Client connections accepted since start."""
    buffered_bytes: int = 0
    """Bytes that backpressured tunnels and relays hold now: read from one side, waiting for the
    other to take them (what ``max-buffer-memory`` limits)."""
    buffered_peak: int = 0
    """The highest :attr:`buffered_bytes` since memory was last given back to the kernel."""
    tunnels_active: int = 0
    """WebSockets open now (tunnels and upgrades passed through), HTTP/1.1 and HTTP/2."""


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

    @property
    def addresses(self) -> tuple[ListenAddress, ...]:
        """The bound addresses (port 0 resolved to the port the OS chose)."""
        return self._addresses

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
        """Counters of this server."""
        context = self._context
        return ServerStatistics(
            connections_active=self._active,
            connections_total=self._total,
            buffered_bytes=context.budget.held if context is not None else 0,
            buffered_peak=context.budget.peak if context is not None else 0,
            tunnels_active=context.tunnels if context is not None else 0,
        )

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
        await _serve_connection(stream, context, client, local, refuse=not admitted)
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
) -> None:
    """TLS handshake (if any), then HTTP/2 or HTTP/1.1 on the connection.

    ``refuse``: the client is over ``max-connections-per-ip``: HTTP/1.1
    requests get 429 and the connection closes, HTTP/2 gets GOAWAY
    ENHANCE_YOUR_CALM.
    """
    config = context.config
    dispatch = _too_many_connections if refuse else context.dispatch
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


async def _accept_loop(
    listener: trio.abc.Listener[trio.abc.Stream],
    limiter: trio.Semaphore,
    nursery: trio.Nursery,
    context: ServerContext,
    server: Server,
    proxied: bool = False,
) -> None:
    backoff = AcceptBackoff()
    async with listener:
        while True:
            # At max-connections we stop accepting; new clients wait in the
            # kernel's listen queue, as with lighttpd.
            await limiter.acquire()
            try:
                stream = await listener.accept()
            except OSError as exc:
                limiter.release()
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
                limiter.release()
                raise
            ended = backoff.succeeded(trio.current_time()) if backoff.in_episode else None
            if ended is not None:
                log.warning("accepting again after %.1f s (%d failed accepts)", *ended)
            server._active += 1
            server._total += 1
            nursery.start_soon(_run_connection, stream, limiter, context, server, proxied)


async def _run_connection(
    stream: trio.abc.Stream, limiter: trio.Semaphore, context: ServerContext, server: Server, proxied: bool = False
) -> None:
    try:
        await _handle_connection(stream, context, server, proxied)
    finally:
        limiter.release()


async def _start_services(nursery: trio.Nursery, context: ServerContext) -> None:
    """Start what connections use: the keeper, backend pools, the timers, the reaper and the hub."""
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
        await _start_services(nursery, context)
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
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """serve_listeners' body.  ``worker=True``: a worker process of ``workers = N``,
    which neither spawns ``bin-path`` backends nor removes unix socket files
    (the supervisor owns both)."""
    context = ServerContext(config, connector or SocketConnector(), spawn=not worker)
    server = Server(config, listeners)
    server._context = context
    limiter = trio.Semaphore(config.max_connections)
    # Socket files wstrio created go when it stops; not those systemd passed (it owns them).
    passed = taken_fds()
    unix_paths = []
    for listener in [] if worker else listeners:
        address = _bound_address(listener)  # a TlsListener has .socket too
        if address is not None and address.path is not None and listener.socket.fileno() not in passed:  # type: ignore[attr-defined]
            unix_paths.append(address.path)
    try:
        if config.access_log is not None:
            try:
                server._access_log = AccessLogFile(config.access_log, config.access_log_format == "json")
            except OSError as exc:
                problem = f"cannot open {config.access_log} for appending: {exc.strerror or exc}"
                raise ConfigError(config.source, [("server.access-log", problem)]) from exc
        async with trio.open_nursery() as backend_nursery:
            if handler_nursery is None:
                await _start_services(backend_nursery, context)
            else:
                # The connections run in handler_nursery and outlive this
                # call (as with trio.serve_tcp), so what they use must too.
                await handler_nursery.start(_run_services, context, server)
            async with trio.open_nursery() as connection_nursery:
                target = handler_nursery or connection_nursery
                for listener in listeners:
                    connection_nursery.start_soon(
                        _accept_loop, listener, limiter, target, context, server, id(listener) in proxied
                    )
                for listener in listeners:
                    address = _bound_address(listener)
                    if address is not None:
                        scheme = "https" if isinstance(listener, (TlsListener, trio.SSLListener)) else "http"
                        where = f"{scheme}://{address}" if address.kind == "tcp" else f"{address} ({scheme})"
                        log.info("listening on %s", where)
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
        for path in unix_paths:
            with contextlib.suppress(OSError):
                os.unlink(path)
        for listener in listeners:
            await trio.aclose_forcefully(listener)
    msg = "_serve ended without being cancelled"  # pragma: no cover
    raise AssertionError(msg)  # pragma: no cover


async def serve_worker(
    config: ServerConfig,
    inherited: Sequence[tuple[int, bool, bool]],
    *,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve on listening sockets inherited from the supervisor (``workers = N``).

    Args:
        config: the configuration.
        inherited: ``(file descriptor, serve TLS, PROXY protocol)`` for each listening socket.
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
    await _serve(config, listeners, worker=True, proxied=frozenset(proxied), task_status=task_status)


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
    listeners: list[trio.abc.Listener[trio.abc.Stream]] = []
    proxied: list[trio.abc.Listener[trio.abc.Stream]] = []
    try:
        for address in config.listen:
            opened: Sequence[trio.abc.Listener[trio.abc.Stream]] = await open_listeners([address])
            if contexts is not None and listener_wants_tls(config, address.tls):
                opened = [TlsListener(listener, contexts) for listener in opened]
            listeners.extend(opened)
            if address.proxy_protocol:
                proxied.extend(opened)
    except BaseException:
        for listener in listeners:
            await trio.aclose_forcefully(listener)
        raise
    await serve_listeners(
        config,
        listeners,
        connector=connector,
        handler_nursery=handler_nursery,
        proxy_protocol=proxied,
        task_status=task_status,
    )
