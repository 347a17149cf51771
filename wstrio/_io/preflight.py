"""What a configuration needs of the file system, checked before serving.

The loader checks a configuration's *values*; this module looks at the
files they name, which can only be known on the machine that serves:

* **problems** would make ``wstrio serve`` fail or answer wrongly (a
  ``bin-path`` that does not exist or cannot be executed, a spawned
  backend's socket in a missing directory, a ``document-root`` that is not a
  readable directory);
* **warnings** may be fine by the time the server starts (a socket of a
  backend wstrio does not start, which that backend creates).

``wstrio check`` prints both (problems make it exit 1); ``wstrio serve``
logs them at start, so a document root that cannot serve is never silent.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from wstrio._config import ServerConfig

__all__ = ["Preflight", "preflight"]


@attrs.frozen
class Preflight:
    """``(key, message)`` pairs: what will fail, and what may."""

    problems: tuple[tuple[str, str], ...] = ()
    warnings: tuple[tuple[str, str], ...] = ()


def _directory_problem(path: Path) -> str | None:
    if not path.exists():
        return f"{str(path)!r} does not exist"
    if not path.is_dir():
        return f"{str(path)!r} is not a directory"
    if not os.access(path, os.R_OK | os.X_OK):
        return f"{str(path)!r} cannot be read by this user (uid {os.getuid()})"
    return None


def _program_problem(program: str) -> str | None:
    path = Path(program)
    if not path.exists():
        return f"{program!r} does not exist"
    if path.is_dir():
        return f"{program!r} is a directory, not a program"
    if not os.access(path, os.X_OK):
        return f"{program!r} is not executable (chmod +x it, or name its interpreter first: 'perl {program}')"
    return None


def _access_log_problem(path: Path) -> str | None:
    if path.is_dir():
        return f"{str(path)!r} is a directory, not a file to append to"
    if path.exists():
        return None if os.access(path, os.W_OK) else f"wstrio cannot write to {str(path)!r}"
    directory = path.parent
    if not directory.is_dir():
        return f"the directory {str(directory)!r} for the access log does not exist"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"wstrio cannot create {str(path)!r} (no write access to its directory)"
    return None


def preflight(config: ServerConfig) -> Preflight:
    """Look at the files and directories ``config`` names."""
    problems: list[tuple[str, str]] = []
    warnings: list[tuple[str, str]] = []
    if config.document_root is not None and (problem := _directory_problem(config.document_root)) is not None:
        problems.append(("server.document-root", f"{problem}: every static request would be answered 404 or 403"))
    if config.access_log is not None and (problem := _access_log_problem(config.access_log)) is not None:
        problems.append(("server.access-log", problem))
    for i, route in enumerate(config.routes):
        for j, backend in enumerate(route.backends):
            key = f"route[{i}].backend[{j}]"
            if backend.spawned and (problem := _program_problem(backend.bin_path[0])) is not None:
                problems.append((f"{key}.bin-path", problem))
            if backend.socket is None:
                continue
            directory = backend.socket.parent
            if backend.spawned:
                if not directory.is_dir():
                    problems.append(
                        (f"{key}.socket", f"the directory {str(directory)!r} for wstrio's socket does not exist")
                    )
                elif not os.access(directory, os.W_OK | os.X_OK):
                    problems.append(
                        (f"{key}.socket", f"wstrio cannot create its socket in {str(directory)!r} (no write access)")
                    )
            elif not directory.is_dir():
                warnings.append(
                    (
                        f"{key}.socket",
                        f"the directory {str(directory)!r} does not exist (yet: the backend may create it)",
                    )
                )
            elif not backend.socket.exists():
                warnings.append((f"{key}.socket", f"nothing listens at {str(backend.socket)!r} yet"))
    return Preflight(tuple(problems), tuple(warnings))
