"""The one exception hierarchy of wstrio.

Every error wstrio raises on purpose is a :class:`WstrioError`::

    WstrioError
    ├── ConfigError            a configuration is invalid (every problem, with its key path)
    ├── HttpError              answer the request with .status (and .headers)
    │   ├── BadRequest         the request as sent cannot be served (400, 405, 413, 431, ...)
    │   ├── RequestTimeout     the client stalled while sending its request (408)
    │   └── HandshakeRejected  a WebSocket handshake is refused (400, 403, ...)
    ├── ClientGone             the client closed or broke the connection
    ├── InvalidResponse        a handler's response breaks HTTP; nothing more can be sent
    └── BackendError           the upstream failed; .status is the answer if none started (502, 504)
        ├── BackendUnavailable no backend could be reached (503)
        └── BackendExited      a spawned backend cannot be started, or exited (.returncode)

Local and remote are kept apart as in h11: :class:`HttpError` is the
client's request at fault (or refused by us), :class:`BackendError` the
program or server behind wstrio.  The wire status travels with the error,
as h11's ``error_status_hint`` and h2's ``error_code`` do, so whoever
answers the client needs nothing else.

The HTTP layer (:mod:`wstrio._io.http`) raises only these from the exchange
API: h11's and trio's exceptions are translated at that edge by
:class:`wstrio._io.http.exchange.map_exceptions`, so handlers catch only
wstrio's own exceptions.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "BackendError",
    "BackendExited",
    "BackendUnavailable",
    "BadRequest",
    "ClientGone",
    "ConfigError",
    "HandshakeRejected",
    "HttpError",
    "InvalidResponse",
    "RequestTimeout",
    "WstrioError",
]


class WstrioError(Exception):
    """Root of every wstrio error.  Never raised directly."""


class ConfigError(WstrioError, ValueError):
    """A configuration is invalid.

    Attributes:
        source: the file (or ``"<mapping>"``) the configuration came from.
        problems: every problem found, each a ``(key path, message)`` pair;
            ``wstrio check`` prints them all at once.
    """

    def __init__(self, source: str, problems: Sequence[tuple[str, str]]) -> None:
        self.source = source
        self.problems = tuple(problems)
        lines = [f"{source}: {path}: {message}" if path else f"{source}: {message}" for path, message in self.problems]
        super().__init__("\n".join(lines))

    @property
    def path(self) -> str:
        """The key path of the first problem (e.g. ``"route[1].backend[0].port"``)."""
        return self.problems[0][0] if self.problems else ""


class HttpError(WstrioError):
    """A request cannot be served; answer it with :attr:`status` and :attr:`headers`.

    Raised as it is for refusals that say nothing about the request's form
    (403 for a script outside the document root, 404 for no such file, 500
    for a script that cannot be started); the subclasses name the common
    cases.

    Attributes:
        status: the HTTP status to answer (the class default unless given).
        headers: extra response headers (e.g. ``Sec-WebSocket-Version``).
    """

    status: int = 500

    def __init__(self, message: str, status: int | None = None, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        self.headers = tuple(headers)


class BadRequest(HttpError):
    """The request as sent cannot be served: malformed (400), a method not
    allowed (405), too large (413, 431), ..."""

    status = 400


class RequestTimeout(HttpError):
    """The client sent nothing of its request (head or body) for ``max-read-idle``."""

    status = 408


class HandshakeRejected(HttpError):
    """A WebSocket handshake is refused (400, 403), with the headers to send."""

    status = 400


class ClientGone(WstrioError):
    """The client closed or broke the connection; the exchange stops quietly."""


class InvalidResponse(WstrioError):
    """A response handed to the HTTP layer breaks HTTP.

    For instance a body longer than its ``Content-Length``, or a header
    value with CR or LF (a backend's response passed on as it is).  The
    response cannot go on: a gateway answers 502 if it had not started.
    """


class BackendError(WstrioError):
    """The backend failed; answer :attr:`status` if the response has not started.

    Attributes:
        status: 502 (an invalid or missing answer, a broken connection) or
            504 (the backend was silent for ``read-timeout``, or a write to
            it stalled for ``write-timeout``).
    """

    status: int = 502

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class BackendUnavailable(BackendError):
    """No backend could be reached (refused, timed out, all disabled): 503."""

    status = 503


class BackendExited(BackendError):
    """A spawned backend process cannot be started, or exited."""

    def __init__(self, message: str, returncode: int | None = None) -> None:
        super().__init__(message)
        self.returncode = returncode
