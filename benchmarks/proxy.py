"""Throughput through wstrio's reverse proxy compared with a direct connection.

Issue 4 asks that upgrade pass-through do no per-message work beyond moving
bytes, measured as throughput through the proxy against a direct
connection.  This runs, interleaved and for several rounds:

* **direct**: load generator -> wstrio (wstunnel) -> C echo backend;
* **proxied**: load generator -> wstrio (``proxy``, ``upgrade = true``) ->
  the same kind of wstrio (wstunnel) -> C echo backend.

Everything but the load generator is pinned to the server core(s), so the
proxied setup pays for the extra process on the same core: the ratio
proxied/direct shows what the relay costs.  Uses run.py's helpers and C
programs.

    python benchmarks/proxy.py              # 3 rounds
    python benchmarks/proxy.py --quick      # 1 short round
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # the harness, next to this file


class Direct(run.Wstrio):
    name = "direct"


class Proxied(run.Wstrio):
    """A wstrio proxy in front of a wstrio wstunnel server; both count as the server."""

    name = "proxied"

    def start(self) -> None:
        cores = self.args.server_cores
        sock = self.tmp / "proxied-echo.sock"
        self.backend = run.start_backend(self.exes["echo_backend"], sock, cores, self.tmp)
        back_port = run.free_port()
        self.port = back_port
        back_cmd = run.Wstrio.command(self, sock)  # a wstunnel server on back_port
        (self.tmp / "back.toml").write_text((self.tmp / "wstrio.toml").read_text())
        back_cmd[back_cmd.index(str(self.tmp / "wstrio.toml"))] = str(self.tmp / "back.toml")
        self.back = run.Proc(run.pinned(cores, back_cmd), self.tmp / "back.log", env=self.env())
        run.wait_for_port(back_port, self.back.proc)
        self.port = run.free_port()
        front = self.tmp / "front.toml"
        front.write_text(
            "\n".join(
                [
                    "[server]",
                    f'listen = ["127.0.0.1:{self.port}"]',
                    "max-connections = 60000",
                    "max-read-idle = 600",
                    "shutdown-timeout = 1",
                    "",
                    "[[route]]",
                    'path = "/"',
                    'handler = "proxy"',
                    "upgrade = true",
                    "",
                    "  [[route.backend]]",
                    '  host = "127.0.0.1"',
                    f"  port = {back_port}",
                    "",
                ]
            )
        )
        cmd = [sys.executable, "-m", "wstrio", "serve", str(front), "--log-level", "warning"]
        self.proc = run.Proc(run.pinned(cores, cmd), self.tmp / "front.log", env=self.env())
        run.wait_for_port(self.port, self.proc.proc)

    def pids(self) -> list[int]:
        return [*super().pids(), *run.tree(self.back.pid)]

    def stop(self) -> None:
        super().stop()
        if getattr(self, "back", None) is not None:
            self.back.stop()
            self.back = None


SCENARIOS = [
    run.Scenario("32B-x100", "32 B x 100", "rtt", 100, 32),
    run.Scenario("64KiB-x10", "64 KiB x 10", "rtt", 10, 65536),
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", default=None)
    cli = p.parse_args()
    args = run.parse_args(["--quick"] if cli.quick else [])
    rounds = 1 if cli.quick else cli.rounds
    run.raise_nofile()
    exes = run.build()
    results: dict[str, dict[str, list[float]]] = {s.name: {"direct": [], "proxied": []} for s in SCENARIOS}
    with tempfile.TemporaryDirectory(prefix="wstrio-proxy-bench-") as tmp:
        for r in range(rounds):
            for scen in SCENARIOS:
                order = [Direct, Proxied] if r % 2 == 0 else [Proxied, Direct]
                for cls in order:
                    where = Path(tmp) / f"{cls.name}-{r}-{scen.name}"
                    where.mkdir()
                    server = cls(args, exes, where)
                    server.start()
                    try:
                        out = run.measure(scen, server, args, exes)
                    finally:
                        server.stop()
                    rate = float(out.get("msgs_per_s") or 0.0)
                    results[scen.name][cls.name].append(rate)
                    run.log(f"round {r + 1}/{rounds} {scen.title:12} {cls.name:8} {rate:,.0f} msgs/s")
    print("\nwstrio proxy (upgrade pass-through) in front of wstrio, against wstrio directly")
    print("| scenario | direct msgs/s | proxied msgs/s | proxied/direct | per-round ratios |")
    print("|---|---|---|---|---|")
    doc: dict[str, Any] = {}
    for scen in SCENARIOS:
        d, pr = results[scen.name]["direct"], results[scen.name]["proxied"]
        ratios = [b / a for a, b in zip(d, pr, strict=True) if a]
        doc[scen.name] = {"direct": d, "proxied": pr, "ratios": ratios}
        print(
            f"| {scen.title} | {statistics.median(d):,.0f} | {statistics.median(pr):,.0f} "
            f"| {statistics.median(ratios):.2f}x | {' '.join(f'{x:.2f}' for x in ratios)} |"
        )
    if cli.json:
        Path(cli.json).write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
