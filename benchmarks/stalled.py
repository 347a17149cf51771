"""Memory of stalled tunnels: wstrio against lighttpd's mod_wstunnel, in the same run.

Two directions, each with N tunnels through the server to a backend on a
unix socket:

* ``to-backend``: each client sends binary frames and the backend accepts
  but never reads, until nothing more goes in (the backend's socket buffer,
  the server, and the client's socket buffer are full);
* ``to-client``: the backend sends and the clients never read after the
  handshake.

Every tunnel is then backpressured, the server holding whatever it read and
cannot write.  The script reports, per server and direction:

* RSS before (after a warm-up tunnel), with N stalled tunnels (median of 3
  samples), the peak (``VmHWM``), and after the tunnels ended (the clients
  and the backend reset their connections);
* KiB per stalled tunnel: (RSS stalled - RSS before) / N;

and the kernel's TCP buffer memory per tunnel (``/proc/net/sockstat``,
system-wide, so the clients' buffers are in it too: what a server pushes
into its sockets instead of holding it), and the wstrio/lighttpd ratio of
each.  RSS is ``VmRSS`` in
``/proc/<pid>/status``, summed over the server and its children; the
kernel's socket buffers are not in it (the clients use 64 KiB buffers so
that the kernel holds little).

Usage::

    python benchmarks/stalled.py                 # 1,000 tunnels, both directions, both servers
    python benchmarks/stalled.py --tunnels 2000 --servers wstrio --wstrio-option "max-buffer-memory = 0"

Needs Linux; lighttpd is optional (``apt-get install lighttpd``).  Results
go to ``benchmarks/results/stalled-<time>.json`` (``--json`` elsewhere).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import platform
import resource
import selectors
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import tree  # noqa: E402  (the harness's process-tree walk)

MASK = b"\x11\x22\x33\x44"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def rss(pid: int, field: str = "VmRSS") -> int:
    """``field`` of ``pid`` and its children, KiB."""
    total = 0
    for p in tree(pid):
        with contextlib.suppress(OSError), open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
    return total


def tcp_kernel_kib() -> int:
    """The kernel's TCP buffer memory, system-wide (``/proc/net/sockstat`` "TCP: ... mem", pages), KiB."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("mem") + 1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    return 0


def stalled_backend(path: Path) -> tuple[socket.socket, list[socket.socket]]:
    """A unix-socket backend that accepts every connection and never reads (a thread of this process)."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(4096)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    return listener, held


def backend_socks(held: list[socket.socket], n: int) -> list[socket.socket]:
    """The first ``n`` backend connections, non-blocking, once all are accepted."""
    deadline = time.monotonic() + 30
    while len(held) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    socks = held[:n]
    for s in socks:
        s.setblocking(False)
    return socks


def frames(total: int, size: int) -> bytes:
    """``total`` bytes of masked binary frames with ``size``-byte payloads."""
    payload = bytes(size)  # zeros: masked, they are the mask repeated
    masked = (MASK * (size // 4 + 1))[:size]
    assert len(payload) == size
    if size < 126:
        head = bytes([0x82, 0x80 | size]) + MASK
    elif size < 65536:
        head = bytes([0x82, 0xFE]) + struct.pack("!H", size) + MASK
    else:
        head = bytes([0x82, 0xFF]) + struct.pack("!Q", size) + MASK
    one = head + masked
    return one * (total // len(one))


def open_tunnels(port: int, n: int) -> list[socket.socket]:
    socks = []
    for i in range(n):
        s = socket.socket()
        # Small buffers: the point is what the server holds, not the kernel.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(
            f"GET /ws/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        socks.append(s)
        if i % 100 == 99:
            time.sleep(0.01)
    for s in socks:
        head = b""
        s.settimeout(30)
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                raise SystemExit("the server closed a handshake")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise SystemExit(f"handshake failed: {head[:100]!r}")
        s.setblocking(False)
    return socks


def fill(socks: list[socket.socket], data: bytes, quiet: float) -> int:
    """Send ``data`` on every socket until each is done or nothing moved for ``quiet`` s; bytes sent."""
    sel = selectors.DefaultSelector()
    offset = {}
    for s in socks:
        sel.register(s, selectors.EVENT_WRITE)
        offset[s] = 0
    sent_total = 0
    last = time.monotonic()
    while offset and time.monotonic() - last < quiet:
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            try:
                n = s.send(memoryview(data)[offset[s] : offset[s] + 262144])
            except BlockingIOError:
                continue
            offset[s] += n
            sent_total += n
            last = time.monotonic()
            if offset[s] >= len(data):
                sel.unregister(s)
                del offset[s]
    sel.close()
    return sent_total


def wstrio_command(tmp: Path, port: int, backend: Path, extra: list[str]) -> list[str]:
    conf = tmp / "wstrio.toml"
    conf.write_text(
        "\n".join(
            [
                "[server]",
                f'listen = ["127.0.0.1:{port}"]',
                "max-connections = 60000",
                "max-read-idle = 600",
                "max-write-idle = 600",
                "shutdown-timeout = 1",
                *extra,
                "",
                "[[route]]",
                'path = "/ws/"',
                'handler = "wstunnel"',
                'frame-type = "binary"',
                "",
                "  [[route.backend]]",
                f"  socket = {json.dumps(str(backend))}",
                "",
            ]
        )
    )
    return [sys.executable, "-m", "wstrio", "serve", str(conf), "--log-level", "warning"]


def lighttpd_command(tmp: Path, port: int, backend: Path) -> list[str]:
    binary = shutil.which("lighttpd") or "/usr/sbin/lighttpd"
    docroot = tmp / "www"
    docroot.mkdir(exist_ok=True)
    conf = tmp / "lighttpd.conf"
    max_fds = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 65535)
    conf.write_text(
        "\n".join(
            [
                'server.modules = ( "mod_wstunnel" )',
                f'server.document-root = "{docroot}"',
                'server.bind = "127.0.0.1"',
                f"server.port = {port}",
                f'server.errorlog = "{tmp / "lighttpd-error.log"}"',
                f"server.max-fds = {max_fds}",
                f"server.max-connections = {max_fds // 2 - 16}",
                "server.max-read-idle = 600",
                "server.max-write-idle = 600",
                "server.listen-backlog = 4096",
                f'wstunnel.server = ( "/ws/" => ( ( "socket" => "{backend}" ) ) )',
                'wstunnel.frame-type = "binary"',
                "",
            ]
        )
    )
    return [binary, "-D", "-f", str(conf)]


def wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with status {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise SystemExit("the server did not listen within 20 s")


def measure(name: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    work = tmp / name
    work.mkdir(parents=True)
    backend = work / "stalled.sock"
    listener, held = stalled_backend(backend)
    port = free_port()
    if name == "wstrio":
        cmd = wstrio_command(work, port, backend, args.wstrio_option)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    else:
        cmd = lighttpd_command(work, port, backend)
        env = dict(os.environ)
    proc = subprocess.Popen(cmd, env=env)
    try:
        wait_port(port, proc)
        data = frames(args.bytes_per_tunnel, args.frame_size)
        raw = bytes(args.bytes_per_tunnel)
        warm = open_tunnels(port, 1)
        fill(warm, data, 0.5) if args.direction == "to-backend" else fill(backend_socks(held, 1), raw, 0.5)
        for s in warm:
            s.close()
        time.sleep(1.0)
        before = rss(proc.pid)
        kernel_before = tcp_kernel_kib()
        started = time.monotonic()
        socks = open_tunnels(port, args.tunnels)
        if args.direction == "to-backend":
            sent = fill(socks, data, args.quiet)
        else:
            sent = fill(backend_socks(held, args.tunnels + 1)[1:], raw, args.quiet)
        time.sleep(0.5)
        stalled = statistics.median(rss(proc.pid) for _ in range(3) if time.sleep(0.2) is None)
        kernel = tcp_kernel_kib() - kernel_before
        peak = rss(proc.pid, "VmHWM")
        # The end: the clients go, and so does the backend (a tunnel blocked
        # writing to a backend that never reads cannot see its client's
        # reset until that write fails or max-write-idle; lighttpd neither).
        for s in socks:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        for c in list(held):
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
        time.sleep(args.settle)
        after = rss(proc.pid)
        took = time.monotonic() - started
        n = args.tunnels
        result = {
            "server": name,
            "direction": args.direction,
            "tunnels": n,
            "sent_mib_per_tunnel": sent / n / 2**20,
            "rss_before_kib": before,
            "rss_stalled_kib": stalled,
            "rss_peak_kib": peak,
            "rss_after_kib": after,
            "kernel_tcp_kib_per_tunnel": kernel / n,
            "kib_per_stalled_tunnel": (stalled - before) / n,
            "kib_kept_per_tunnel_after_close": (after - before) / n,
            "seconds": took,
        }
        print(
            f"{name}: {n} stalled tunnels {args.direction} ({result['sent_mib_per_tunnel']:.2f} MiB sent each): "
            f"RSS {before / 1024:.1f} -> {stalled / 1024:.1f} MiB (peak {peak / 1024:.1f}), "
            f"{result['kib_per_stalled_tunnel']:.1f} KiB per tunnel; after close {after / 1024:.1f} MiB",
            file=sys.stderr,
        )
        return result
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        listener.close()
        for c in held:
            c.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tunnels", type=int, default=1000)
    parser.add_argument("--servers", default="wstrio,lighttpd")
    parser.add_argument("--bytes-per-tunnel", type=int, default=2 * 2**20, help="what each side tries to send")
    parser.add_argument("--frame-size", type=int, default=16384, help="payload bytes per client frame")
    parser.add_argument(
        "--directions",
        default="to-backend,to-client",
        help="to-backend: clients send, the backend never reads; to-client: the backend sends, clients never read",
    )
    parser.add_argument("--quiet", type=float, default=2.0, help="seconds without progress that mean 'stalled'")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after the tunnels ended, before 'after'")
    parser.add_argument("--wstrio-option", action="append", default=[], help="a [server] line for wstrio")
    parser.add_argument("--json", type=Path, help="default: benchmarks/results/stalled-<time>.json")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    servers = [s for s in args.servers.split(",") if s]
    if "lighttpd" in servers and not (shutil.which("lighttpd") or os.path.exists("/usr/sbin/lighttpd")):
        print("lighttpd is not installed: measuring wstrio alone", file=sys.stderr)
        servers.remove("lighttpd")
    both = servers == ["wstrio", "lighttpd"]
    results: list[dict[str, Any]] = []
    rows = [
        ("KiB per stalled tunnel", "kib_per_stalled_tunnel", 1),
        ("peak RSS, MiB", "rss_peak_kib", 1024),
        ("RSS after they ended, MiB", "rss_after_kib", 1024),
        ("kernel TCP buffers per tunnel, KiB (system-wide: clients too)", "kernel_tcp_kib_per_tunnel", 1),
    ]
    lines = [
        f"| {args.tunnels} stalled tunnels | " + " | ".join(servers) + (" | wstrio/lighttpd |" if both else " |"),
        "|---" * (len(servers) + 1 + both) + "|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for direction in args.directions.split(","):
            args.direction = direction
            got = {}
            for name in servers:
                got[name] = measure(name, args, Path(tmp) / direction)
                results.append(got[name])
            for label, key, unit in rows:
                values = [got[name][key] / unit for name in servers]
                line = f"| {direction}: {label} | " + " | ".join(f"{v:.1f}" for v in values)
                if both and values[1]:
                    line += f" | {values[0] / values[1]:.2f}"
                lines.append(line + " |")
    print("\n".join(lines))
    path = args.json or ROOT / "benchmarks" / "results" / f"stalled-{time.strftime('%Y%m%d-%H%M%S')}.json"
    meta = {
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
    }
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    path.write_text(json.dumps({"meta": meta, "args": options, "results": results, "table": lines}, indent=2) + "\n")
    print(f"results: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
