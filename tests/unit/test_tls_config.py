"""TLS and HTTP/2 configuration, without an event loop.

Certificates come from trustme; TLS handshakes run between two
:class:`ssl.SSLObject` over memory BIOs, so no socket is needed.
"""

from __future__ import annotations

import os
import ssl
import subprocess
from pathlib import Path

import pytest
import trustme

import wstrio
from wstrio._cli import main
from wstrio._config import TlsConfig
from wstrio._io.http.tls import ReloadableContext, listener_wants_tls, load_server_context


def _write(cert: trustme.LeafCert, directory: Path, stem: str = "") -> TlsConfig:
    chain = directory / f"{stem}cert.pem"
    key = directory / f"{stem}key.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(key)
    return TlsConfig(certificate=chain, private_key=key)


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls(ca: trustme.CA, tmp_path: Path) -> TlsConfig:
    return _write(ca.issue_cert("localhost"), tmp_path)


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> tuple[str | None, str | None]:
    """A TLS handshake over memory BIOs; returns (ALPN protocol, TLS version)."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, obj in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    assert all(done.values())
    return client.selected_alpn_protocol(), client.version()


def _client(ca: trustme.CA, alpn: list[str]) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    ctx.set_alpn_protocols(alpn)
    return ctx


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_context_offers_h2_then_http11_and_tls12_or_newer(ca: trustme.CA, tls: TlsConfig) -> None:
    ctx = load_server_context(tls)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert _handshake(ctx, _client(ca, ["h2", "http/1.1"]))[0] == "h2"
    assert _handshake(ctx, _client(ca, ["http/1.1"]))[0] == "http/1.1"
    old = _client(ca, ["http/1.1"])
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError):
        _handshake(ctx, old)


def test_http2_off_offers_only_http11(ca: trustme.CA, tls: TlsConfig) -> None:
    ctx = load_server_context(tls, http2=False)
    assert _handshake(ctx, _client(ca, ["h2", "http/1.1"]))[0] == "http/1.1"


def test_certificate_chain_with_intermediate(ca: trustme.CA, tmp_path: Path) -> None:
    intermediate = ca.create_child_ca()
    tls = _write(intermediate.issue_cert("localhost"), tmp_path)
    assert _handshake(load_server_context(tls), _client(ca, ["h2"]))[0] == "h2"


def _problem(tls: TlsConfig) -> tuple[str, str]:
    with pytest.raises(wstrio.ConfigError) as info:
        load_server_context(tls, source="site.toml")
    assert str(info.value).startswith("site.toml: ")
    key, message = info.value.problems[0]
    return key, message


def test_missing_certificate_names_the_file(tls: TlsConfig, tmp_path: Path) -> None:
    key, message = _problem(TlsConfig(tmp_path / "nope.pem", tls.private_key))
    assert key == "server.tls.certificate"
    assert "nope.pem" in message
    assert "No such file" in message


def test_missing_key_names_the_file(tls: TlsConfig, tmp_path: Path) -> None:
    key, message = _problem(TlsConfig(tls.certificate, tmp_path / "gone.key"))
    assert key == "server.tls.private-key"
    assert "gone.key" in message


def test_directory_instead_of_a_file(tls: TlsConfig, tmp_path: Path) -> None:
    key, message = _problem(TlsConfig(tmp_path, tls.private_key))
    assert key == "server.tls.certificate"
    assert "directory" in message.lower()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_key(tls: TlsConfig) -> None:
    tls.private_key.chmod(0)
    key, message = _problem(tls)
    assert key == "server.tls.private-key"
    assert "Permission denied" in message


def test_certificate_file_without_a_certificate(tls: TlsConfig, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("this is not a certificate\n")
    key, message = _problem(TlsConfig(junk, tls.private_key))
    assert key == "server.tls.certificate"
    assert "junk.pem" in message
    assert "no PEM certificate" in message


def test_key_file_without_a_key(tls: TlsConfig) -> None:
    key, message = _problem(TlsConfig(tls.certificate, tls.certificate))
    assert key == "server.tls.private-key"
    assert "no PEM private key" in message


def test_corrupt_key(tls: TlsConfig, tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    key, message = _problem(TlsConfig(tls.certificate, bad))
    assert key == "server.tls.private-key"
    assert "not a usable PEM private key" in message


def test_key_of_another_certificate(ca: trustme.CA, tls: TlsConfig, tmp_path: Path) -> None:
    other = _write(ca.issue_cert("localhost"), tmp_path, "other-")
    key, message = _problem(TlsConfig(tls.certificate, other.private_key))
    assert key == "server.tls.private-key"
    assert "does not belong to the certificate" in message
    assert str(tls.certificate) in message
    assert str(other.private_key) in message


def test_encrypted_key_is_refused_without_prompting(tls: TlsConfig, tmp_path: Path) -> None:
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(
        ["openssl", "pkey", "-in", str(tls.private_key), "-out", str(encrypted), "-aes256", "-passout", "pass:x"],
        check=True,
        capture_output=True,
    )
    key, message = _problem(TlsConfig(tls.certificate, encrypted))
    assert key == "server.tls.private-key"
    assert "encrypted" in message


def test_reload_takes_new_files_and_keeps_the_old_context_on_failure(ca: trustme.CA, tls: TlsConfig) -> None:
    contexts = ReloadableContext(tls)
    first = contexts.context
    other_ca = trustme.CA()
    _write(other_ca.issue_cert("localhost"), tls.certificate.parent)  # same file names
    contexts.reload()
    assert contexts.context is not first
    assert contexts.generation == 2
    assert _handshake(contexts.context, _client(other_ca, ["h2"]))[0] == "h2"
    good = contexts.context
    tls.private_key.write_text("broken\n")
    with pytest.raises(wstrio.ConfigError):
        contexts.reload()
    assert contexts.context is good
    assert contexts.generation == 2


def test_config_keys_and_defaults(tmp_path: Path) -> None:
    config = wstrio.config_from_mapping({})
    assert config.http2 is True
    assert config.h2_max_concurrent_streams == 100
    assert config.h2_initial_window_size == 65536
    config = wstrio.config_from_mapping(
        {"server": {"http2": False, "h2-max-concurrent-streams": 500, "h2-initial-window-size": 1 << 20}}
    )
    assert (config.http2, config.h2_max_concurrent_streams, config.h2_initial_window_size) == (False, 500, 1 << 20)
    with pytest.raises(wstrio.ConfigError) as info:
        wstrio.config_from_mapping({"server": {"h2-max-concurrent-streams": 0, "h2-initial-window-size": 10}})
    assert {p for p, _ in info.value.problems} == {"server.h2-max-concurrent-streams", "server.h2-initial-window-size"}


def test_per_listener_tls(tmp_path: Path) -> None:
    tls = {"certificate": "c.pem", "private-key": "k.pem"}
    config = wstrio.config_from_mapping(
        {"server": {"listen": ["127.0.0.1:0", {"address": "127.0.0.1:0", "tls": False}], "tls": tls}},
        base_dir=tmp_path,
    )
    assert config.tls is not None
    assert config.tls.certificate == tmp_path / "c.pem"
    assert [listener_wants_tls(config, a.tls) for a in config.listen] == [True, False]
    plain = wstrio.config_from_mapping(
        {"server": {"listen": ["127.0.0.1:0", {"address": "127.0.0.1:0", "tls": True}], "tls": tls}}
    )
    assert [listener_wants_tls(plain, a.tls) for a in plain.listen] == [True, True]
    # A listener that asks for TLS without [server.tls] is refused when the
    # configuration is built (so `wstrio check` reports it too).
    with pytest.raises(wstrio.ConfigError, match=r"server\.listen\[0\]\.tls: needs \[server\.tls\]"):
        wstrio.config_from_mapping({"server": {"listen": [{"address": "127.0.0.1:0", "tls": True}]}})


def test_check_command_loads_the_certificate(
    tls: TlsConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "site.toml"
    config.write_text(
        f'[server]\nlisten = ["127.0.0.1:8443"]\n[server.tls]\ncertificate = "{tls.certificate.name}"\n'
        'private-key = "missing.key"\n'
    )
    assert main(["check", str(config)]) == 1
    err = capsys.readouterr().err
    assert "server.tls.private-key" in err
    assert "missing.key" in err
    config.write_text(config.read_text().replace("missing.key", tls.private_key.name))
    assert main(["check", str(config)]) == 0
