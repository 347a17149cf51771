#!/usr/bin/env python3
"""Per-connection programs: ``wstrio run -- cat`` against ``websocketd cat``, in the same run.

Two scenarios, each server started afresh per round (the order alternates):

* ``handshakes``: connections opened, answered and closed per second (each
  starts a ``cat``: the cost of a process per WebSocket), 8 at a time;
* ``32B-x20``: 32-byte round trips per second over 20 open connections.

The client is Python (``websockets``, asyncio) on the same machine, so the
absolute figures are bounded by it too; the ratio wstrio/websocketd is the
figure to read.  Needs ``websocketd`` (``apt-get install websocketd``).

    python benchmarks/process.py                  # 3 rounds of 5 s per scenario
    python benchmarks/process.py --rounds 1 --duration 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from websockets.asyncio.client import connect


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(server: str, port: int) -> subprocess.Popen[bytes]:
    if server == "wstrio":
        argv = [sys.executable, "-m", "wstrio", "run", "--log-level", "warning", "--listen", f"127.0.0.1:{port}",
                "--", "cat"]  # fmt: skip
    else:
        argv = [shutil.which("websocketd") or "websocketd", "--address=127.0.0.1", f"--port={port}",
                "--loglevel=error", "cat"]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    msg = f"{server} did not listen on {port}"
    raise RuntimeError(msg)


def stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


async def handshakes(url: str, seconds: float, concurrency: int = 8) -> float:
    done = 0
    end = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < end:
            async with connect(url, compression=None) as ws:
                await ws.send("x")
                await ws.recv()
            done += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / seconds


async def round_trips(url: str, seconds: float, connections: int = 20) -> float:
    message = "m" * 31  # 32 bytes with the newline cat gets
    done = 0
    sockets = [await connect(url, compression=None) for _ in range(connections)]
    end = time.monotonic() + seconds

    async def worker(ws: object) -> None:
        nonlocal done
        while time.monotonic() < end:
            await ws.send(message)  # type: ignore[attr-defined]
            await ws.recv()  # type: ignore[attr-defined]
            done += 1

    await asyncio.gather(*(worker(ws) for ws in sockets))
    for ws in sockets:
        await ws.close()
    return done / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    if shutil.which("websocketd") is None:
        print("websocketd is not installed (apt-get install websocketd)", file=sys.stderr)
        return 1
    results: dict[str, dict[str, list[float]]] = {"handshakes": {}, "32B-x20": {}}
    for round_number in range(args.rounds):
        order = ["wstrio", "websocketd"] if round_number % 2 == 0 else ["websocketd", "wstrio"]
        for server in order:
            port = free_port()
            process = start(server, port)
            try:
                url = f"ws://127.0.0.1:{port}/"
                asyncio.run(handshakes(url, 0.5))  # warm-up
                h = asyncio.run(handshakes(url, args.duration))
                r = asyncio.run(round_trips(url, args.duration))
            finally:
                stop(process)
            results["handshakes"].setdefault(server, []).append(h)
            results["32B-x20"].setdefault(server, []).append(r)
            print(f"round {round_number + 1}/{args.rounds} {server:10} handshakes/s {h:8.0f}  round trips/s {r:8.0f}")
    print()
    print("| scenario | wstrio | websocketd | wstrio/websocketd | per-round ratios |")
    print("|---|---|---|---|---|")
    summary = {}
    for scenario, by_server in results.items():
        ratios = [w / d for w, d in zip(by_server["wstrio"], by_server["websocketd"], strict=True)]
        summary[scenario] = {
            "wstrio": statistics.median(by_server["wstrio"]),
            "websocketd": statistics.median(by_server["websocketd"]),
            "ratio": statistics.median(ratios),
            "ratios": ratios,
        }
        s = summary[scenario]
        print(
            f"| {scenario} | {s['wstrio']:,.0f}/s | {s['websocketd']:,.0f}/s | {s['ratio']:.2f}x |"
            f" {' '.join(f'{x:.2f}' for x in ratios)} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "summary": summary}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
