"""Which script a request names, for the CGI family (``SCRIPT_NAME``, ``PATH_INFO``, ``SCRIPT_FILENAME``).

``cgi`` routes walk the URL path from the left for the first prefix that is a
regular file under the document root (:func:`locate_script`); ``scgi`` and
``fastcgi`` routes follow lighttpd's rules, with or without ``check-local``
(:func:`backend_target`).  A script whose real path (symbolic links
resolved) lies outside the document root is refused (403).
"""

from __future__ import annotations

import os
from typing import final

import attrs

from wstrio._config import Route
from wstrio._errors import HttpError
from wstrio._sansio.cgi.environ import find_script
from wstrio._sansio.http.request import Request
from wstrio._sansio.http.static import inside_root

__all__ = ["ScriptTarget", "backend_target", "locate_script"]


@final
@attrs.frozen
class ScriptTarget:
    """What a request names: ``SCRIPT_NAME``, ``PATH_INFO`` and ``SCRIPT_FILENAME``."""

    script_name: str
    path_info: str
    script_filename: str | None


def locate_script(real_root: str, url_path: str) -> ScriptTarget | None:
    """Find the file ``url_path`` names under the document root.

    Args:
        real_root: the document root, symbolic links resolved.
        url_path: the decoded, normalised URL path.

    Returns:
        the script, with ``SCRIPT_FILENAME`` under ``real_root``; or ``None``
        when no prefix of the path is a regular file.

    Raises:
        HttpError: 403 when the file's real path (symbolic links
            resolved) lies outside the document root.
    """

    def is_file(prefix: str) -> bool:
        return os.path.isfile(os.path.join(real_root, prefix.lstrip("/")))

    found = find_script(url_path, is_file)
    if found is None:
        return None
    script_name, path_info = found
    filename = os.path.join(real_root, script_name.lstrip("/"))
    if not inside_root(os.path.realpath(filename), real_root):
        msg = f"{script_name} leads outside document-root"
        raise HttpError(msg, 403)
    return ScriptTarget(script_name, path_info, filename)


def backend_target(route: Route, request: Request, real_root: str | None) -> ScriptTarget:
    """``SCRIPT_NAME`` and friends for an SCGI or FastCGI request (lighttpd's rules).

    With ``check-local = true`` the request must name an existing file under
    the document root.  Without, a prefix route splits the path at the next
    ``/`` after the prefix (``/ws/`` + ``/ws/x/y`` gives ``/ws/x`` and
    ``/y``), and ``SCRIPT_FILENAME`` is the document root plus the script
    name, whether or not such a file exists.

    Raises:
        HttpError: 404 (check-local, no such file) or 403 (outside
            the document root).
    """
    check_local = route.backends[0].check_local if route.backends else False
    if check_local:
        target = locate_script(real_root, request.path) if real_root is not None else None
        if target is None:
            msg = f"{request.path} names no file under document-root (check-local)"
            raise HttpError(msg, 404)
        return target
    script_name, path_info = request.path, ""
    if route.path is not None:
        slash = request.path.find("/", len(route.path))
        if slash >= 0:
            script_name, path_info = request.path[:slash], request.path[slash:]
    filename = os.path.join(real_root, script_name.lstrip("/")) if real_root is not None else None
    return ScriptTarget(script_name, path_info, filename)
