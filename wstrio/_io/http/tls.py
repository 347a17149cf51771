"""TLS: server contexts from ``[server.tls]``, reloadable, and a TLS listener.

* :func:`load_server_context` builds an :class:`ssl.SSLContext` with modern
  defaults (TLS 1.2 or newer, the standard library's cipher choice) and ALPN
  offering ``h2`` (when HTTP/2 is on) and ``http/1.1``.  Every way the
  certificate or key can be unusable becomes a :class:`~wstrio.ConfigError`
  whose key path and message name the file: missing, unreadable, not PEM,
  encrypted key, key not matching the certificate.
* :class:`ReloadableContext` holds the current context.  ``reload()`` (on
  SIGHUP) builds a new one from the same files; when that fails the old one
  stays.  Connections already open keep the context they were accepted with,
  so a reload never drops them.
* :class:`TlsListener` wraps a transport listener and returns a
  :class:`trio.SSLStream` per connection, built with the context current at
  accept time.  The handshake is not done here (``accept`` must stay quick):
  the connection task does it, within :func:`handshake_time`.
"""

from __future__ import annotations

import math
import ssl
from pathlib import Path
from typing import final

import trio

from wstrio._config import ServerConfig, TlsConfig
from wstrio._errors import ConfigError

__all__ = ["ReloadableContext", "TlsListener", "handshake_time", "listener_wants_tls", "load_server_context"]

_CERT_KEY = "server.tls.certificate"
_KEY_KEY = "server.tls.private-key"


class _EncryptedKey(Exception):
    """Raised by the password callback: an encrypted key cannot be used."""


def _refuse_password() -> bytes:
    # Without a callback, OpenSSL would prompt on the terminal and block.
    raise _EncryptedKey


def _read(path: Path, key: str, what: str, source: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(source, [(key, f"cannot read the {what} file {str(path)!r}: {reason}")]) from exc


def load_server_context(tls: TlsConfig, *, http2: bool = True, source: str = "<mapping>") -> ssl.SSLContext:
    """A server :class:`ssl.SSLContext` for ``tls``.

    Args:
        tls: the certificate chain and private key files.
        http2: offer ``h2`` by ALPN (before ``http/1.1``).
        source: the configuration's name, for error messages.

    Returns:
        a context with TLS 1.2 as the minimum and ALPN set.

    Raises:
        ConfigError: a file is missing or unreadable, the certificate file
            holds no PEM certificate, the key is not a usable unencrypted
            PEM key, or the key does not belong to the certificate.
    """
    cert_pem = _read(tls.certificate, _CERT_KEY, "certificate", source)
    key_pem = _read(tls.private_key, _KEY_KEY, "private key", source)
    # load_cert_chain says only "PEM lib" for either file; check the
    # certificate alone first so the message can name the right one.
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        probe.load_verify_locations(cadata=cert_pem.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError) as exc:
        msg = f"{str(tls.certificate)!r} holds no PEM certificate (expected '-----BEGIN CERTIFICATE-----')"
        raise ConfigError(source, [(_CERT_KEY, msg)]) from exc
    if b"PRIVATE KEY-----" not in key_pem:
        msg = f"{str(tls.private_key)!r} holds no PEM private key (expected '-----BEGIN ... PRIVATE KEY-----')"
        raise ConfigError(source, [(_KEY_KEY, msg)])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2", "http/1.1"] if http2 else ["http/1.1"])
    try:
        context.load_cert_chain(tls.certificate, tls.private_key, password=_refuse_password)
    except _EncryptedKey as exc:
        msg = f"{str(tls.private_key)!r} is encrypted; give an unencrypted key (openssl pkey -in KEY -out PLAIN)"
        raise ConfigError(source, [(_KEY_KEY, msg)]) from exc
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            msg = (
                f"the private key {str(tls.private_key)!r} does not belong to the certificate"
                f" {str(tls.certificate)!r} (the first certificate in the file must be the server's)"
            )
        else:
            msg = f"{str(tls.private_key)!r} is not a usable PEM private key ({exc.reason or exc})"
        raise ConfigError(source, [(_KEY_KEY, msg)]) from exc
    except OSError as exc:  # the files vanished between the checks and the load
        raise ConfigError(source, [(_CERT_KEY, f"cannot load the certificate: {exc}")]) from exc
    return context


def listener_wants_tls(config: ServerConfig, tls: bool | None) -> bool:
    """Whether a listener with per-address ``tls`` setting serves TLS (``None`` follows ``[server.tls]``)."""
    return config.tls is not None if tls is None else tls


def handshake_time(config: ServerConfig) -> float:
    """Seconds a whole TLS handshake may take: the lesser of ``max-read-idle`` and ``max-request-head-time``.

    The handshake is the first thing a client sends, like a request head:
    one that trickles its bytes must not hold the connection (slowloris),
    nor one that sends nothing.  0 means no limit for either key.
    """
    return min(config.max_read_idle or math.inf, config.max_request_head_time or math.inf)


@final
class ReloadableContext:
    """The current server context for one ``[server.tls]``; see :meth:`reload`."""

    def __init__(self, tls: TlsConfig, *, http2: bool = True, source: str = "<mapping>") -> None:
        """Load the context now.

        Raises:
            ConfigError: as :func:`load_server_context`.
        """
        self.tls = tls
        self.http2 = http2
        self.source = source
        self.context = load_server_context(tls, http2=http2, source=source)
        self.generation = 1
        """Incremented by every successful :meth:`reload`."""

    @classmethod
    def from_config(cls, config: ServerConfig) -> ReloadableContext:
        """The context for ``config.tls``.

        Raises:
            ConfigError: ``[server.tls]`` is missing, or as :func:`load_server_context`.
        """
        if config.tls is None:
            raise ConfigError(config.source, [("server.tls", "a listener asks for TLS but there is no [server.tls]")])
        return cls(config.tls, http2=config.http2, source=config.source)

    def reload(self) -> None:
        """Read the certificate and key files again; new connections use them.

        Connections already accepted keep their context.  This reads two small
        files synchronously.

        Raises:
            ConfigError: the new files are unusable; the old context stays.
        """
        self.context = load_server_context(self.tls, http2=self.http2, source=self.source)
        self.generation += 1

    def take(self, other: ReloadableContext) -> None:
        """Use ``other``'s files and context from now on (a configuration reload; nothing is read)."""
        if other is self:
            return
        self.tls, self.http2, self.source, self.context = other.tls, other.http2, other.source, other.context
        self.generation += 1


@final
class TlsListener(trio.abc.Listener[trio.abc.Stream]):
    """A listener whose connections are :class:`trio.SSLStream` (server side).

    Unlike :class:`trio.SSLListener`, the context is looked up at each
    ``accept`` so that :meth:`ReloadableContext.reload` applies to new
    connections.  The handshake happens on first use (or an explicit
    ``do_handshake``), not in ``accept``.
    """

    def __init__(self, transport_listener: trio.abc.Listener[trio.abc.Stream], contexts: ReloadableContext) -> None:
        self.transport_listener = transport_listener
        self.contexts = contexts

    @property
    def socket(self) -> trio.socket.SocketType | None:
        """The listening socket of the transport listener, if it has one."""
        sock: trio.socket.SocketType | None = getattr(self.transport_listener, "socket", None)
        return sock

    async def accept(self) -> trio.SSLStream[trio.abc.Stream]:
        """Accept a connection and wrap it (no handshake yet)."""
        transport = await self.transport_listener.accept()
        # https_compatible=False: closing sends close_notify, so a client
        # can tell a complete response (or "Connection: close") from a cut
        # one.  The price: a client that drops the TCP connection without
        # close_notify is seen as BrokenResourceError rather than EOF, which
        # every reader here already treats as "client gone".
        return trio.SSLStream(transport, self.contexts.context, server_side=True, https_compatible=False)

    async def aclose(self) -> None:
        """Close the transport listener."""
        await self.transport_listener.aclose()
