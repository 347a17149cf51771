"""The one exception hierarchy of wstrio.

Every error wstrio raises on purpose is a :class:`WstrioError`.  Errors that
end up on the wire carry their HTTP status (:class:`HandshakeRejected`) or
WebSocket close code (:class:`PolicyViolation`, :class:`BackendError`), the way
h2's exceptions carry ``error_code``.
"""

from __future__ import annotations

from collections.abc import Sequence

from wsproto.frame_protocol import CloseReason

__all__ = [
    "BackendError",
    "BackendExited",
    "BackendUnavailable",
    "ConfigError",
    "HandshakeRejected",
    "MessageTooBig",
    "PolicyViolation",
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


class HandshakeRejected(WstrioError):
    """A request cannot be served; answer it with ``status_code``.

    Like h11's ``error_status_hint``: the status travels with the error.
    """

    def __init__(
        self,
        message: str,
        status_code: int,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.headers = tuple(headers)


class PolicyViolation(WstrioError):
    """The peer broke a rule of ours; close the WebSocket with ``close_code``."""

    close_code: int = CloseReason.POLICY_VIOLATION


class MessageTooBig(PolicyViolation):
    """A message or frame exceeded a configured size."""

    close_code: int = CloseReason.MESSAGE_TOO_BIG


class BackendError(WstrioError):
    """The backend failed after the handshake; close with 1011."""

    close_code: int = CloseReason.INTERNAL_ERROR


class BackendUnavailable(BackendError):
    """No backend could be reached (refused, timed out, all disabled).

    Before the handshake this is a 503; after it, close code 1013.
    """

    close_code: int = CloseReason.TRY_AGAIN_LATER


class BackendExited(BackendError):
    """A spawned backend process exited."""

    def __init__(self, message: str, returncode: int | None = None) -> None:
        super().__init__(message)
        self.returncode = returncode
