"""The request-body limit (``max-request-body-size``), shared by the proxy and the CGI family.

Theory of operation
-------------------
A handler that passes a request body on (``proxy``, ``cgi``, ``scgi``,
``fastcgi``) makes one :class:`BodyLimit` per request from
:meth:`ServerConfig.request_body_limit <wstrio._config.ServerConfig.request_body_limit>`
and asks it twice:

* :meth:`BodyLimit.check_declared` with the ``Content-Length``, before any
  backend is contacted or script started: a length over the limit is a 413
  at once, and the body is never read;
* :meth:`BodyLimit.count` with every chunk it takes from the exchange,
  *before* passing the chunk on, so a backend never gets more than the
  limit.  This is what bounds bodies without a length (HTTP/1.1 chunked,
  HTTP/2 DATA without ``content-length``); for the others the HTTP layer
  already holds the client to its ``Content-Length``.

Either way the answer is :class:`RequestBodyTooLarge`, a 413 whose headers
say ``Connection: close`` (HTTP/2 drops the header, and resets the stream
instead): the rest of the body is not read, so on HTTP/1.1 the connection
cannot carry another request.  A WebSocket passed through has no body to
count (the plan gives it none), and the tunnel after the switch is not
limited by this key.  A limit of 0 means no limit.

Never imports trio.
"""

from __future__ import annotations

from typing import final

from wstrio._errors import HttpError

__all__ = ["BodyLimit", "RequestBodyTooLarge"]

_CLOSE = ((b"connection", b"close"),)


@final
class RequestBodyTooLarge(HttpError):
    """The request body is over ``max-request-body-size``: 413, and the connection closes."""

    status = 413

    def __init__(self, message: str) -> None:
        super().__init__(message, 413, _CLOSE)


@final
class BodyLimit:
    """One request body, measured against its route's limit.

    Args:
        limit: the largest body in bytes; 0 = no limit.
    """

    __slots__ = ("limit", "received")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.received = 0
        """Bytes counted so far."""

    def check_declared(self, length: int | None) -> None:
        """Refuse a declared length over the limit (``None``: no length declared).

        Raises:
            RequestBodyTooLarge: ``length`` is over the limit.
        """
        if self.limit and length is not None and length > self.limit:
            msg = f"Content-Length {length} is over max-request-body-size ({self.limit} bytes)"
            raise RequestBodyTooLarge(msg)

    def count(self, size: int) -> None:
        """Count ``size`` more bytes of the body (call it before passing them on).

        Raises:
            RequestBodyTooLarge: the body is now over the limit.
        """
        self.received += size
        if self.limit and self.received > self.limit:
            msg = f"the request body is more than max-request-body-size ({self.limit} bytes)"
            raise RequestBodyTooLarge(msg)
