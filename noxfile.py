"""Developer and CI sessions.

``nox`` runs tests, lint, typecheck and examples; ``nox -s tests -- -k wstunnel -x``
passes what follows ``--`` to pytest.
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "examples", "docs"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).resolve().parent


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite (the README's test command), slow and browser tests included."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint rules and formatting."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package, the tests, the examples and this file."""
    session.install("-e", ".[test]", "mypy", "nox")
    session.run("mypy", "--strict", "wstrio", "tests", "examples", "noxfile.py")


@nox.session
def examples(session: nox.Session) -> None:
    """``wstrio check`` every example configuration.

    Runs on a copy of ``examples/``: a TLS example wants a certificate its
    README tells the user to make, so the copy gets a throwaway one.
    """
    session.install("-e", ".[test]")  # trustme makes the throwaway certificate
    copy = Path(session.create_tmp()) / "examples"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(ROOT / "examples", copy, ignore=shutil.ignore_patterns("*.sock", "*.sock-*", "__pycache__"))
    configs = sorted(copy.rglob("*.toml"))
    if not configs:
        session.error("no example configuration found under examples/")
    for config in configs:
        tls = tomllib.loads(config.read_text(encoding="utf-8")).get("server", {}).get("tls")
        if not isinstance(tls, dict):
            continue
        cert = config.parent / tls.get("certificate", "cert.pem")
        key = config.parent / tls.get("private-key", "key.pem")
        if cert.exists() and key.exists():
            continue
        made = Path(session.create_tmp()) / "trustme"
        made.mkdir(exist_ok=True)
        session.run("python", "-m", "trustme", "--quiet", "--dir", str(made))
        shutil.copyfile(made / "server.pem", cert)
        shutil.copyfile(made / "server.key", key)
    for config in configs:
        session.run("wstrio", "check", str(config))


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site with MkDocs; any warning is an error (``strict: true``)."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", "--site-dir", str(Path(session.create_tmp()) / "site"))


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark suite against lighttpd (``apt-get install lighttpd gcc``); ``-- --quick`` for one short round.

    Prints the comparison table and writes benchmarks/results/*.json and docs/perf/benchmark.png.
    """
    session.install("-e", ".", "matplotlib", "py-spy")
    session.run("python", "benchmarks/run.py", *session.posargs)
