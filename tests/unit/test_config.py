"""Unit tests for the strict configuration loader (wstrio._sansio.config.loader)."""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any

import pytest

from wstrio._config import Backend, ListenAddress, Route, ServerConfig
from wstrio._errors import ConfigError
from wstrio._sansio.config.loader import config_from_mapping, load_config, parse_listen

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _problems(data: dict[str, Any], **kwargs: Any) -> dict[str, str]:
    """The problems ``data`` has, as ``{key path: message}`` (asserting there are some)."""
    with pytest.raises(ConfigError) as info:
        config_from_mapping(data, **kwargs)
    return dict(info.value.problems)


def _ws_route(**extra: Any) -> dict[str, Any]:
    return {"path": "/ws/", "handler": "wstunnel", "backend": [{"host": "127.0.0.1", "port": 9000}], **extra}


def _backend(**backend: Any) -> Backend:
    config = config_from_mapping({"route": [{"path": "/", "handler": "wstunnel", "backend": [backend]}]})
    return config.routes[0].backends[0]


def _backend_problems(**backend: Any) -> dict[str, str]:
    return _problems({"route": [{"path": "/", "handler": "wstunnel", "backend": [backend]}]})


# -- defaults and a full, valid mapping --------------------------------------------


def test_empty_mapping_gives_defaults() -> None:
    config = config_from_mapping({})
    assert config == ServerConfig()
    assert config.listen == (ListenAddress("tcp", "127.0.0.1", 8080),)
    assert config.max_read_idle == 60.0
    assert config.routes == ()


def test_full_mapping_builds_frozen_objects(tmp_path: Path) -> None:
    config = config_from_mapping(
        {
            "server": {
                "listen": ["127.0.0.1:0"],
                "document-root": "www",
                "index-files": ["start.html"],
                "max-connections": 5,
                "max-read-idle": 7,
                "max-write-idle": 8.5,
                "shutdown-timeout": 1,
                "mimetype-assign": {".foo": "text/x-foo"},
            },
            "route": [_ws_route(**{"frame-type": "binary", "origins": ["example.com"], "ping-interval": 3})],
        },
        source="mine.toml",
        base_dir=tmp_path,
    )
    assert config.source == "mine.toml"
    assert config.document_root == tmp_path / "www"
    assert config.index_files == ("start.html",)
    assert config.max_connections == 5
    assert config.max_read_idle == 7.0
    assert isinstance(config.max_read_idle, float)
    assert config.max_write_idle == 8.5
    assert config.mimetype_assign == ((".foo", "text/x-foo"),)
    route = config.routes[0]
    assert route.frame_type == "binary"
    assert route.origins == ("example.com",)
    assert route.ping_interval == 3.0
    assert route.effective_pong_timeout == 3.0
    assert route.backends == (Backend(host="127.0.0.1", port=9000),)


# -- error reporting -----------------------------------------------------------------


def test_error_names_source_and_key_path() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"route": [_ws_route(), _ws_route(backend=[{"host": "h", "port": "80"}])]}, source="a.toml")
    err = info.value
    assert err.source == "a.toml"
    assert err.path == "route[1].backend[0].port"
    assert "a.toml: route[1].backend[0].port: must be an integer" in str(err)


def test_several_errors_reported_at_once() -> None:
    problems = _problems(
        {
            "server": {"max-connections": 0, "max-read-idle": "soon", "listen": ["nowhere"]},
            "route": [{"path": "ws", "handler": "wstunnel", "backend": [{"host": "h"}]}],
        }
    )
    assert set(problems) == {
        "server.max-connections",
        "server.max-read-idle",
        "server.listen",
        "route[0].path",
        "route[0].backend[0].port",
    }


def test_unknown_top_level_key() -> None:
    problems = _problems({"servers": {}})
    assert "unknown key" in problems["servers"]
    assert "route, server" in problems["servers"]


def test_unknown_key_lists_allowed_keys() -> None:
    message = _problems({"server": {"listn": ["127.0.0.1:1"]}})["server.listn"]
    assert message.startswith("unknown key (did you mean 'listen'?);")
    assert "listen" in message
    assert "max-read-idle" in message


def test_unknown_key_with_underscores_hints_at_dashes() -> None:
    problems = _problems({"server": {"max_read_idle": 3}, "route": [_ws_route(ping_interval=1)]})
    assert "did you mean 'max-read-idle'? keys use dashes" in problems["server.max_read_idle"]
    assert "did you mean 'ping-interval'?" in problems["route[0].ping_interval"]


def test_unknown_backend_key() -> None:
    problems = _backend_problems(host="h", port=1, prot=2)
    assert "unknown key" in problems["route[0].backend[0].prot"]


@pytest.mark.parametrize(
    ("server", "key", "fragment"),
    [
        ({"max-connections": "many"}, "max-connections", "must be an integer, not a string 'many'"),
        ({"max-connections": True}, "max-connections", "must be an integer"),
        ({"max-connections": 1.5}, "max-connections", "must be an integer"),
        ({"max-read-idle": "60"}, "max-read-idle", "must be a number of seconds"),
        ({"max-read-idle": False}, "max-read-idle", "must be a number of seconds"),
        ({"index-files": 3}, "index-files", "must be an array of strings"),
        ({"index-files": ["a", 3]}, "index-files", "item 1 must be a string"),
        ({"index-files": [""]}, "index-files", "item 0 must not be empty"),
        ({"document-root": 5}, "document-root", "must be a string"),
        ({"mimetype-assign": ["x"]}, "mimetype-assign", "must be a table of strings"),
        ({"listen": 8080}, "listen", "must be a non-empty array"),
        ({"tls": "yes"}, "tls", "must be a table"),
    ],
)
def test_wrong_types(server: dict[str, Any], key: str, fragment: str) -> None:
    assert fragment in _problems({"server": server})[f"server.{key}"]


@pytest.mark.parametrize(
    ("server", "key", "fragment"),
    [
        ({"max-connections": 0}, "max-connections", "must be at least 1, not 0"),
        ({"max-read-idle": -1}, "max-read-idle", "finite number of seconds >= 0"),
        ({"max-write-idle": float("nan")}, "max-write-idle", "finite number of seconds >= 0"),
        ({"shutdown-timeout": float("inf")}, "shutdown-timeout", "finite number of seconds >= 0"),
        ({"max-request-field-size": 10}, "max-request-field-size", "must be at least 256"),
        ({"max-request-headers": 10**6}, "max-request-headers", "must be at most 10000"),
        ({"workers": 0}, "workers", "must be at least 1"),
        ({"document-root": ""}, "document-root", "must be a non-empty path"),
        ({"listen": []}, "listen", "must be a non-empty array"),
    ],
)
def test_impossible_values(server: dict[str, Any], key: str, fragment: str) -> None:
    assert fragment in _problems({"server": server})[f"server.{key}"]


def test_workers_auto_is_a_positive_count() -> None:
    assert config_from_mapping({"server": {"workers": "auto"}}).workers >= 1


def test_mimetype_assign_keys_and_values_checked() -> None:
    problems = _problems({"server": {"mimetype-assign": {"foo": "text/x-foo", ".bar": "nonsense"}}})
    assert "extensions starting with '.'" in problems["server.mimetype-assign.foo"]
    assert "MIME type" in problems["server.mimetype-assign..bar"]


def test_tls_requires_both_files(tmp_path: Path) -> None:
    problems = _problems({"server": {"tls": {"certificate": "c.pem"}}})
    assert problems == {"server.tls.private-key": "is required"}
    config = config_from_mapping(
        {"server": {"tls": {"certificate": "c.pem", "private-key": "/abs/k.pem"}}}, base_dir=tmp_path
    )
    assert config.tls is not None
    assert config.tls.certificate == tmp_path / "c.pem"
    assert config.tls.private_key == Path("/abs/k.pem")


def test_tls_unknown_key() -> None:
    problems = _problems({"server": {"tls": {"certificate": "c", "private-key": "k", "cert": "x"}}})
    assert "unknown key" in problems["server.tls.cert"]


# -- listen forms -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", ListenAddress("tcp", "127.0.0.1", 8080)),
        ("localhost:0", ListenAddress("tcp", "localhost", 0)),
        ("[::1]:8080", ListenAddress("tcp", "::1", 8080)),
        ("[::]:443", ListenAddress("tcp", "::", 443)),
        (":8080", ListenAddress("tcp", "", 8080)),
        ("unix:/run/ws.sock", ListenAddress("unix", path=Path("/run/ws.sock"))),
    ],
)
def test_listen_forms(text: str, expected: ListenAddress) -> None:
    assert parse_listen(text) == expected
    assert config_from_mapping({"server": {"listen": [text]}}).listen == (expected,)


def test_listen_str_round_trips() -> None:
    for text in ("127.0.0.1:8080", "[::1]:8080", "unix:/run/ws.sock"):
        assert str(parse_listen(text)) == text


def test_listen_single_string_is_accepted() -> None:
    assert config_from_mapping({"server": {"listen": "127.0.0.1:1"}}).listen == (ListenAddress("tcp", "127.0.0.1", 1),)


def test_listen_unix_relative_path_resolved_against_base(tmp_path: Path) -> None:
    config = config_from_mapping({"server": {"listen": ["unix:ws.sock"]}}, base_dir=tmp_path)
    assert config.listen == (ListenAddress("unix", path=tmp_path / "ws.sock"),)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("8080", "expected 'host:port'"),
        ("::1:8080", "expected 'host:port'"),
        ("[::1]8080", "expected 'host:port'"),
        ("[nothost]:80", "is not an IPv6 address"),
        ("[127.0.0.1]:80", "is not an IPv6 address"),
        ("h:65536", "port must be a number from 0 to 65535"),
        ("h:-1", "port must be a number from 0 to 65535"),
        ("h:", "port must be a number from 0 to 65535"),
        ("h:http", "port must be a number from 0 to 65535"),
        ("h:\N{FULLWIDTH DIGIT EIGHT}\N{FULLWIDTH DIGIT ZERO}", "port must be a number from 0 to 65535"),
        ("h:\N{SUPERSCRIPT TWO}", "port must be a number from 0 to 65535"),
        ("unix:", "expected 'host:port'"),
    ],
)
def test_listen_bad_forms(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        parse_listen(text)
    message = _problems({"server": {"listen": ["127.0.0.1:1", text]}})["server.listen"]
    assert message.startswith("item 1: ")
    assert fragment in message


def test_listen_table_form_with_tls(tmp_path: Path) -> None:
    config = config_from_mapping(
        {
            "server": {
                "listen": [
                    {"address": "127.0.0.1:8443", "tls": True},
                    {"address": "unix:plain.sock", "tls": False},
                    {"address": "[::1]:80"},
                ],
                "tls": {"certificate": "cert.pem", "private-key": "key.pem"},
            }
        },
        base_dir=tmp_path,
    )
    assert config.listen == (
        ListenAddress("tcp", "127.0.0.1", 8443, tls=True),
        ListenAddress("unix", path=tmp_path / "plain.sock", tls=False),
        ListenAddress("tcp", "::1", 80, tls=None),
    )


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        ({"address": "h:1", "tls": "maybe"}, "must be true or false"),
        ({"address": "h:1", "port": 2}, "unknown keys ['port']; allowed: address, tls"),
        ({"address": "nowhere"}, "expected 'host:port'"),
        ({"tls": True}, "address"),
        (5, "must be a string or a table"),
    ],
)
def test_listen_table_form_errors(item: object, fragment: str) -> None:
    message = _problems({"server": {"listen": [item]}})["server.listen"]
    assert message.startswith("item 0")
    assert fragment in message


def test_listen_table_without_address_says_it_is_required() -> None:
    message = _problems({"server": {"listen": [{"tls": True}]}})["server.listen"]
    assert "'address' is required" in message
    assert "NoneType" not in message


# -- relative paths -----------------------------------------------------------------


def test_relative_paths_resolve_against_base_dir(tmp_path: Path) -> None:
    config = config_from_mapping(
        {
            "server": {"document-root": "www"},
            "route": [
                {
                    "path": "/ws/",
                    "handler": "wstunnel",
                    "backend": [{"socket": "run/echo.sock", "bin-path": "bin/echo.pl --flag", "max-procs": 1}],
                }
            ],
        },
        base_dir=tmp_path,
    )
    assert config.document_root == tmp_path / "www"
    backend = config.routes[0].backends[0]
    assert backend.socket == tmp_path / "run" / "echo.sock"
    assert backend.bin_path == (str(tmp_path / "bin" / "echo.pl"), "--flag")


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    config = config_from_mapping({"server": {"document-root": "/srv/www"}}, base_dir=tmp_path)
    assert config.document_root == Path("/srv/www")


def test_load_config_resolves_against_the_files_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "site.toml").write_text(
        '[server]\nlisten = ["unix:ws.sock"]\ndocument-root = "www"\n'
        '[[route]]\npath = "/ws/"\nhandler = "wstunnel"\n'
        '  [[route.backend]]\n  socket = "echo.sock"\n  bin-path = "echo.pl"\n  max-procs = 1\n'
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(Path("..") / "conf" / "site.toml")
    assert config.document_root == folder / "www"
    assert config.listen[0].path == folder / "ws.sock"
    backend = config.routes[0].backends[0]
    assert backend.socket == folder / "echo.sock"
    assert backend.bin_path == (str(folder / "echo.pl"),)
    assert config.source == str(Path("..") / "conf" / "site.toml")


def test_load_config_reports_errors_with_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[server]\nmax-connections = "lots"\nlisten = ["x"]\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.source == str(path)
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert all(line.startswith(f"{path}: server.") for line in lines)


def test_load_config_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[server]\nlisten = [\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.source == str(path)
    assert str(info.value).startswith(f"{path}: is not valid TOML")


def test_load_config_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: cannot read the file")


def test_load_config_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"# caf\xe9\n")
    with pytest.raises(ConfigError, match="is not UTF-8"):
        load_config(path)


def test_load_config_nan_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "nan.toml"
    path.write_text("[server]\nmax-read-idle = nan\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.path == "server.max-read-idle"


# -- routes ---------------------------------------------------------------------------


def test_route_needs_a_handler() -> None:
    assert _problems({"route": [{"path": "/"}]}) == {"route[0].handler": "is required"}


def test_route_unknown_handler_lists_handlers() -> None:
    message = _problems({"route": [_ws_route(handler="websocket")]})["route[0].handler"]
    assert "'wstunnel', 'proxy', 'cgi', 'scgi', 'fastcgi'" in message


def test_route_needs_a_matcher() -> None:
    data = {"route": [{"handler": "wstunnel", "backend": [{"host": "h", "port": 1}]}]}
    assert "needs one of 'path', 'regex' or 'extensions'" in _problems(data)["route[0]"]


@pytest.mark.parametrize(
    "matchers",
    [
        {"path": "/a", "regex": "^/a"},
        {"path": "/a", "extensions": [".ws"]},
        {"regex": "^/a", "extensions": [".ws"]},
    ],
)
def test_route_takes_exactly_one_matcher(matchers: dict[str, Any]) -> None:
    route = {"handler": "wstunnel", "backend": [{"host": "h", "port": 1}], **matchers}
    assert "give only one of" in _problems({"route": [route]})["route[0]"]


def test_route_path_must_start_with_slash() -> None:
    assert _problems({"route": [_ws_route(path="ws/")]}) == {"route[0].path": "must start with '/', not 'ws/'"}


def test_route_bad_regex() -> None:
    data = {"route": [{"regex": "(", "handler": "wstunnel", "backend": [{"host": "h", "port": 1}]}]}
    assert "not a valid regular expression" in _problems(data)["route[0].regex"]


def test_route_regex_and_extensions_parse() -> None:
    config = config_from_mapping(
        {
            "route": [
                {"regex": "^/websockify", "handler": "wstunnel", "backend": [{"host": "h", "port": 1}]},
                {"extensions": [".ws", ".ws2"], "handler": "wstunnel", "backend": [{"host": "h", "port": 1}]},
            ]
        }
    )
    first, second = config.routes
    assert first.regex is not None
    assert first.regex.pattern == "^/websockify"
    assert first.describe() == "regex=^/websockify"
    assert second.extensions == (".ws", ".ws2")
    assert second.describe() == "extensions=.ws,.ws2"


@pytest.mark.parametrize(
    ("key", "value"),
    [("frame-type", "binary"), ("origins", ["example.com"]), ("ping-interval", 5), ("pong-timeout", 5)],
)
def test_wstunnel_only_keys_rejected_on_other_handlers(key: str, value: object) -> None:
    route = {"path": "/", "handler": "proxy", "backend": [{"host": "h", "port": 1}], key: value}
    assert _problems({"route": [route]}) == {
        f"route[0].{key}": "only applies to wstunnel and process routes, not 'proxy'"
    }


def test_upgrade_rejected_on_wstunnel() -> None:
    assert "does not apply to wstunnel" in _problems({"route": [_ws_route(upgrade=True)]})["route[0].upgrade"]


def test_assign_only_on_cgi() -> None:
    problems = _problems({"route": [_ws_route(assign={".py": "/usr/bin/python3"})]})
    assert problems == {"route[0].assign": "only applies to cgi routes"}


def test_check_local_only_on_scgi_and_fastcgi() -> None:
    route = _ws_route(backend=[{"host": "h", "port": 1, "check-local": False}])
    assert _problems({"route": [route]}) == {
        "route[0].backend[0].check-local": "only applies to scgi and fastcgi routes"
    }
    config = config_from_mapping(
        {"route": [{"path": "/", "handler": "scgi", "backend": [{"host": "h", "port": 1, "check-local": False}]}]}
    )
    assert config.routes[0].backends[0].check_local is False


def test_frame_type_and_balance_choices() -> None:
    problems = _problems({"route": [_ws_route(**{"frame-type": "Binary", "balance": "random"})]})
    assert "must be one of 'text', 'binary'" in problems["route[0].frame-type"]
    assert "'fair'" in problems["route[0].balance"]


def test_upgrade_accepts_lighttpd_booleans() -> None:
    routes: list[dict[str, Any]] = [
        {"path": "/a", "handler": "proxy", "upgrade": "enable", "backend": [{"host": "h", "port": 1}]},
        {"path": "/b", "handler": "proxy", "upgrade": 0, "backend": [{"host": "h", "port": 1}]},
    ]
    config = config_from_mapping({"route": routes})
    assert [r.upgrade for r in config.routes] == [True, False]
    routes[0]["upgrade"] = "yes"
    assert "must be true or false" in _problems({"route": routes})["route[0].upgrade"]


def test_backend_route_needs_a_backend() -> None:
    problems = _problems({"route": [{"path": "/", "handler": "wstunnel"}]})
    assert problems == {"route[0].backend": "a wstunnel route needs at least one [[route.backend]]"}


def test_backend_must_be_array_of_tables() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"route": [_ws_route(backend="127.0.0.1:1")]})
    assert ("route[0].backend", "must be an array of tables ([[route.backend]])") in info.value.problems
    problems = _problems({"route": [_ws_route(backend=[5])]})
    assert problems == {"route[0].backend[0]": "must be a table, not an integer"}


def test_single_backend_table_is_accepted() -> None:
    config = config_from_mapping({"route": [_ws_route(backend={"host": "h", "port": 1})]})
    assert config.routes[0].backends == (Backend(host="h", port=1),)


def test_cgi_route_takes_no_backend_and_needs_document_root(tmp_path: Path) -> None:
    cgi = {"path": "/cgi/", "handler": "cgi", "backend": [{"host": "h", "port": 1}]}
    problems = _problems({"server": {"document-root": "www"}, "route": [cgi]}, base_dir=tmp_path)
    assert "take no backend" in problems["route[0].backend"]
    del cgi["backend"]
    assert "needs server.document-root" in _problems({"route": [cgi]})["route[0]"]
    config = config_from_mapping({"server": {"document-root": "www"}, "route": [cgi]}, base_dir=tmp_path)
    assert config.routes[0].handler == "cgi"


def test_route_must_be_array_of_tables() -> None:
    assert "must be an array of tables" in _problems({"route": "x"})["route"]
    assert _problems({"route": [3]}) == {"route[0]": "must be a table, not an integer"}


def test_errors_in_several_routes_are_all_reported() -> None:
    problems = _problems({"route": [_ws_route(path="a"), _ws_route(), _ws_route(balance="nope")]})
    assert set(problems) == {"route[0].path", "route[2].balance"}


# -- backends -----------------------------------------------------------------------------


def test_backend_tcp_unix_and_host_slash() -> None:
    assert _backend(host="10.0.0.1", port=9) == Backend(host="10.0.0.1", port=9)
    assert _backend(port=9).host == "127.0.0.1"
    assert _backend(socket="/run/b.sock").socket == Path("/run/b.sock")
    # lighttpd: a host starting with "/" is a unix socket path.
    slash = _backend(host="/run/b.sock")
    assert slash.socket == Path("/run/b.sock")
    assert slash.host is None


@pytest.mark.parametrize(
    ("backend", "key", "fragment"),
    [
        ({"socket": "/s", "host": "h"}, "", "either 'socket' or 'host'/'port', not both"),
        ({"socket": "/s", "port": 1}, "", "either 'socket' or 'host'/'port', not both"),
        ({"host": "h"}, ".port", "is required with 'host'"),
        ({}, "", "needs 'socket', 'host' and 'port', or 'app'"),
        ({"label": "x"}, "", "needs 'socket', 'host' and 'port', or 'app'"),
        ({"bin-path": "echo.pl"}, ".port", "is required"),
        ({"host": "h", "port": 70000}, ".port", "must be at most 65535"),
        ({"host": "h", "port": 1, "connect-timeout": -1}, ".connect-timeout", ">= 0"),
        ({"socket": "", "bin-path": "x"}, ".socket", "must be a non-empty path"),
        ({"socket": "/s", "bin-path": ""}, ".bin-path", "must name a program"),
        ({"socket": "/s", "bin-path": "x", "max-procs": 0}, ".max-procs", "must be at least 1"),
        ({"socket": "/s", "bin-path": "x", "bin-environment": {"A": 1}}, ".bin-environment", "value of 'A'"),
    ],
)
def test_backend_errors(backend: dict[str, Any], key: str, fragment: str) -> None:
    problems = _backend_problems(**backend)
    assert fragment in problems[f"route[0].backend[0]{key}"]


@pytest.mark.parametrize(
    "key",
    [
        "min-procs",
        "max-procs",
        "max-load-per-proc",
        "idle-timeout",
        "listen-backlog",
        "bin-environment",
        "bin-copy-environment",
        "kill-signal",
    ],
)
def test_spawn_options_only_with_bin_path(key: str) -> None:
    values: dict[str, object] = {
        "bin-environment": {"A": "b"},
        "bin-copy-environment": ["PATH"],
        "kill-signal": "SIGINT",
    }
    problems = _backend_problems(host="h", port=1, **{key: values.get(key, 2)})
    assert problems == {f"route[0].backend[0].{key}": "only applies to a spawned backend ('bin-path')"}


def test_spawn_pool_defaults_are_lighttpds() -> None:
    backend = _backend(socket="/s", **{"bin-path": "/bin/echo"})
    assert (backend.min_procs, backend.max_procs) == (4, 4)
    assert backend.spawned
    assert backend.connect_timeout == 8.0
    assert backend.idle_timeout == 60.0
    assert backend.disable_time == 1.0
    assert backend.kill_signal == signal.SIGTERM


def test_min_procs_clamped_to_max_procs() -> None:
    assert _backend(socket="/s", **{"bin-path": "/x", "max-procs": 1}).min_procs == 1
    clamped = _backend(socket="/s", **{"bin-path": "/x", "min-procs": 9, "max-procs": 2})
    assert (clamped.min_procs, clamped.max_procs) == (2, 2)
    kept = _backend(socket="/s", **{"bin-path": "/x", "min-procs": 0, "max-procs": 3})
    assert (kept.min_procs, kept.max_procs) == (0, 3)


def test_unspawned_backend_is_one_connection_target() -> None:
    backend = _backend(host="h", port=1)
    assert not backend.spawned
    # min/max-procs keep their defaults: they only mean something with bin-path,
    # and a loaded backend equals the one built in Python.
    assert backend == Backend(host="h", port=1)


def test_bin_path_array_keeps_spaces(tmp_path: Path) -> None:
    config = config_from_mapping(
        {"route": [_ws_route(backend=[{"socket": "s", "bin-path": ["my prog", "--a b"]}])]}, base_dir=tmp_path
    )
    assert config.routes[0].backends[0].bin_path == (str(tmp_path / "my prog"), "--a b")


def test_bin_environment_and_copy_environment() -> None:
    backend = _backend(
        socket="/s",
        **{"bin-path": "/x", "bin-environment": {"A": "1", "B": ""}, "bin-copy-environment": ["PATH", "HOME"]},
    )
    assert backend.bin_environment == (("A", "1"), ("B", ""))
    assert backend.bin_copy_environment == ("PATH", "HOME")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("SIGINT", signal.SIGINT),
        ("sigint", signal.SIGINT),
        ("HUP", signal.SIGHUP),
        ("term", signal.SIGTERM),
        (9, signal.SIGKILL),
    ],
)
def test_kill_signal_names(value: object, expected: int) -> None:
    assert _backend(socket="/s", **{"bin-path": "/x", "kill-signal": value}).kill_signal == expected


@pytest.mark.parametrize("value", ["SIGNOPE", "", 0, 100000, True, 1.5])
def test_kill_signal_rejects_unknown(value: object) -> None:
    problems = _backend_problems(socket="/s", **{"bin-path": "/x", "kill-signal": value})
    assert "route[0].backend[0].kill-signal" in problems


def test_backend_name_and_label() -> None:
    assert _backend(host="h", port=5).name == "h:5"
    assert _backend(socket="/s").name == "unix:/s"
    assert _backend(host="h", port=5, label="main").name == "main"


def test_route_with_pong_timeout() -> None:
    route: Route = config_from_mapping({"route": [_ws_route(**{"ping-interval": 10, "pong-timeout": 2})]}).routes[0]
    assert route.effective_pong_timeout == 2.0


# -- the shipped examples ---------------------------------------------------------------------


EXAMPLE_FILES = sorted(EXAMPLES.glob("**/*.toml"))


def test_examples_exist() -> None:
    assert EXAMPLE_FILES


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_example_configs_load(path: Path) -> None:
    config = load_config(path)
    assert config.source == str(path)
    assert config.routes
    for route in config.routes:
        for backend in route.backends:
            if backend.socket is not None:
                assert backend.socket.is_absolute()
            if backend.spawned:
                assert Path(backend.bin_path[0]).is_absolute()


@pytest.mark.parametrize(
    ("data", "key", "hint"),
    [
        pytest.param(
            {"route": [_ws_route() | {"backend": [{"hots": "127.0.0.1", "port": 1}]}]},
            "route[0].backend[0].hots",
            "did you mean 'host'?",
            id="misspelt-key",
        ),
        pytest.param({"server": {"max-conections": 3}}, "server.max-conections", "did you mean 'max-connections'?"),
        pytest.param({"server": {"max_read_idle": 3}}, "server.max_read_idle", "keys use dashes"),
        pytest.param(
            {"route": [_ws_route() | {"handler": "wstunel"}]},
            "route[0].handler",
            "did you mean 'wstunnel'?",
            id="misspelt-handler",
        ),
        pytest.param(
            {"route": [_ws_route() | {"balance": "Round-Robin"}]},
            "route[0].balance",
            "did you mean 'round-robin'?",
            id="choice-in-capitals",
        ),
    ],
)
def test_misspellings_get_a_suggestion(data: dict[str, Any], key: str, hint: str) -> None:
    assert hint in _problems(data)[key]


def test_no_suggestion_for_something_unlike_any_key() -> None:
    message = _problems({"server": {"colour": "blue"}})["server.colour"]
    assert "did you mean" not in message
    assert "allowed keys here:" in message
