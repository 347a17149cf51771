"""The sdist, as ``python -m build`` makes it: it must carry what the README points at."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sdist_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    out = tmp_path_factory.mktemp("sdist")
    # --no-isolation: the build uses this environment's setuptools, no network.
    result = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    (archive,) = out.glob("wstrio-*.tar.gz")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    prefix = names[0].split("/")[0]
    return {name[len(prefix) + 1 :] for name in names if "/" in name}


def test_sdist_has_every_path_the_readme_names(sdist_names: set[str]) -> None:
    readme = (ROOT / "README.md").read_text()
    paths = set(re.findall(r"\b((?:examples|docs|tests|benchmarks)/[\w./-]+\w)", readme))
    assert paths, "the README names no paths: update this test"
    missing = sorted(p for p in paths if (ROOT / p).exists() and p not in sdist_names)
    assert not missing, missing


@pytest.mark.parametrize(
    "name",
    ["CHANGELOG.md", "LICENSE", ".ci/run", "mkdocs.yml", "wstrio/_speedups.c", "tests/conftest.py",
     "examples/count/wstrio.toml", "examples/count/echo.pl", "docs/security.md", "benchmarks/run.py"],
)  # fmt: skip
def test_sdist_has(sdist_names: set[str], name: str) -> None:
    assert name in sdist_names


def test_sdist_has_no_build_or_run_leftovers(sdist_names: set[str]) -> None:
    leftovers = [n for n in sdist_names if re.search(r"__pycache__|\.so$|\.sock(-\d+)?$|\.pem$|\.pyc$", n)]
    assert not leftovers, leftovers
