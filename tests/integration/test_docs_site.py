"""The MkDocs site, built as ``nox -s docs`` builds it: every relative link lands on a file."""

from __future__ import annotations

import posixpath
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    return out


def _target(site: Path, page: Path, href: str) -> Path:
    base = posixpath.dirname("/" + page.relative_to(site).as_posix())
    resolved = posixpath.normpath(posixpath.join(base, href.split("#")[0]))
    target = site / resolved.lstrip("/")
    return target / "index.html" if target.is_dir() else target


def test_links_to_repository_files_work_in_the_site(site: Path) -> None:
    checked, dead = 0, []
    for page in site.rglob("index.html"):
        if any(part in ("examples", "benchmarks") for part in page.relative_to(site).parts):
            continue
        for href in re.findall(r'href="(\.\./[^"#]+)', page.read_text()):
            if not re.match(r"(\.\./)+(examples|benchmarks)\b", href):
                continue
            checked += 1
            if not _target(site, page, href).is_file():
                dead.append(f"{page.relative_to(site)}: {href}")
    assert checked >= 10, f"only {checked} links to examples/ or benchmarks/ found: update this test"
    assert not dead, dead
