"""MkDocs hook: put the repository files the docs link to into the built site.

Pages link to ``../examples/...`` (and ``../benchmarks/...``) as files of the
repository, which is right on GitHub and in a checkout but outside
``docs_dir``, so MkDocs leaves the links as they are and they would point at
nothing in the site.  After the build this copies those folders next to the
pages (``site/examples/...``; a link ``../examples/x`` from ``/page/`` lands
there), with an ``index.html`` listing each folder, so every such link works
in the site too.  ``tests/integration/test_docs_site.py`` builds the site and
follows them.
"""

from __future__ import annotations

import html
import shutil
from pathlib import Path
from typing import Any

COPIED = ("examples", "benchmarks")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.sock", "*.sock-*", "*.pem", "results")


def _index(folder: Path, root: Path) -> None:
    for directory in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
        if (directory / "index.html").exists():
            continue
        entries = sorted(directory.iterdir(), key=lambda p: (not p.is_dir(), p.name))
        items = "\n".join(
            f'<li><a href="{html.escape(p.name)}{"/" if p.is_dir() else ""}">{html.escape(p.name)}</a></li>'
            for p in entries
        )
        title = html.escape(str(directory.relative_to(root)))
        (directory / "index.html").write_text(
            f'<!doctype html>\n<meta charset="utf-8">\n<title>{title}</title>\n<h1>{title}</h1>\n<ul>\n{items}\n</ul>\n'
        )


def on_post_build(config: Any, **kwargs: Any) -> None:
    repo = Path(config["config_file_path"]).resolve().parent
    site = Path(config["site_dir"])
    for name in COPIED:
        target = site / name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(repo / name, target, ignore=IGNORE)
        _index(target, site)
