#!/usr/bin/env python3
"""wstrio benchmark harness: wstrio against lighttpd's mod_wstunnel.

Builds the C load generator and echo backend, then for every round and every
scenario starts each server afresh (with its own C echo backend on a unix
socket), pinned to the server core(s), drives it with the load generator
pinned to the other core, and records the load generator's numbers, the CPU
used by the server, its backend, the load generator and everything else on
the machine.  Servers are interleaved within each round (the order flips
every round: wstrio, lighttpd / lighttpd, wstrio / ...), medians are taken
over the rounds, and the wstrio/lighttpd ratio is computed per round and then
its median reported.

    python benchmarks/run.py                 # 3 rounds, about 5 minutes
    python benchmarks/run.py --quick         # 1 short round
    python benchmarks/run.py --profile       # also py-spy the 32 B x 100 case
    python benchmarks/run.py --workers 2 --server-cores 0,1

See docs/performance.md.  Plain Python 3.11; matplotlib is needed only for
the plot (``pip install matplotlib``), py-spy only for ``--profile``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
BUILD = BENCH / "build"
RESULTS = BENCH / "results"
PERF_DOCS = ROOT / "docs" / "perf"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------
# Scenarios


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    mode: str  # rtt | throughput | storm | idle
    connections: int = 1
    size: int = 32
    window: int = 1
    default: bool = True
    what: str = ""


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    return [
        Scenario("32B-x1", "32 B x 1", "rtt", 1, 32, what="round trips on one connection: latency-bound"),
        Scenario("32B-x10", "32 B x 10", "rtt", 10, 32, what="10 connections, one message in flight each"),
        Scenario("32B-x100", "32 B x 100", "rtt", 100, 32, what="100 connections: per-message CPU cost"),
        Scenario("64KiB-x10", "64 KiB x 10", "rtt", 10, 65536, what="bulk: copies, masking, buffer sizes"),
        Scenario(
            "storm",
            f"storm {args.storm_count}",
            "storm",
            args.storm_count,
            32,
            what="connect + handshake + one echo + CLOSE, 64 at a time",
        ),
        Scenario(
            "idle",
            f"idle {args.idle_connections}",
            "idle",
            args.idle_connections,
            32,
            what="memory per open tunnel (server RSS)",
        ),
        Scenario(
            "32B-x100-w16",
            "32 B x 100, window 16",
            "throughput",
            100,
            32,
            16,
            default=False,
            what="pipelined: 16 messages in flight per connection (not in the default set)",
        ),
    ]


# Targets of issue 8, as (scenario, metric, kind, bound).  kind "ratio>=" is
# wstrio/lighttpd measured in the same run; "abs<=" is wstrio's own value.
TARGETS_ONE_CORE = [
    ("32B-x100", "msgs_per_s", "ratio>=", 0.5),
    ("32B-x100", "p99_us", "ratio<=", 2.0),
    ("64KiB-x10", "msgs_per_s", "ratio>=", 1.0),
    ("storm", "handshakes_per_s", "ratio>=", 0.3),
    ("idle", "kib_per_conn", "abs<=", 16.0),
]
TARGETS_TWO_WORKERS = [("32B-x100", "msgs_per_s", "ratio>=", 1.0)]


# --------------------------------------------------------------------------
# Small helpers


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build(force: bool = False) -> dict[str, Path]:
    """Compile the C programs with gcc -O2 (only when the source is newer)."""
    BUILD.mkdir(exist_ok=True)
    out = {}
    cc = os.environ.get("CC", "gcc")
    for name in ("loadgen", "echo_backend"):
        src, exe = BENCH / f"{name}.c", BUILD / name
        if force or not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
            cmd = [cc, "-O2", "-Wall", "-Wextra", "-o", str(exe), str(src)]
            log("build: " + " ".join(cmd))
            subprocess.run(cmd, check=True)
        out[name] = exe
    return out


def raise_nofile(want: int = 65536) -> int:
    """Raise RLIMIT_NOFILE as far as allowed (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for new_hard in (max(hard, want), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new_hard, new_hard))
            return new_hard
        except (ValueError, OSError):
            continue
    return soft


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} before listening")
        with socket.socket() as s:
            try:
                s.connect(("127.0.0.1", port))
                return
            except OSError:
                time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


NICE = 0


def boost(pid: int) -> None:
    """Give a child (started in its own session) the harness's priority.

    With autogroup scheduling (kernel.sched_autogroup_enabled = 1, common on
    desktop and VM kernels) every session is its own scheduling group and a
    process's nice value only counts inside it, so the group's nice is set too
    (/proc/PID/autogroup).  Only processes this harness started are touched.
    """
    if not NICE:
        return
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, pid, NICE)
    with contextlib.suppress(OSError), open(f"/proc/{pid}/autogroup", "w") as f:
        f.write(str(NICE))


def pinned(cores: str | None, cmd: list[str]) -> list[str]:
    if cores and shutil.which("taskset"):
        return ["taskset", "-c", cores, *cmd]
    return cmd


def proc_children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids[ppid].append(int(entry))
    return kids


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    kids = proc_children()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, ()))
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / CLK_TCK


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def parse_cores(spec: str | None) -> set[int]:
    """``"0"``, ``"0,1"``, ``"0-3"`` -> {0, ...}; None/"" = every CPU."""
    if not spec:
        return set(range(os.cpu_count() or 1))
    out: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def machine_busy_seconds(cores: set[int]) -> float:
    """user + nice + system time of the given CPUs (process-attributable time)."""
    total = 0
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu") or line.startswith("cpu "):
                continue
            fields = line.split()
            if int(fields[0][3:]) in cores:
                total += int(fields[1]) + int(fields[2]) + int(fields[3])
    return total / CLK_TCK


def median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# --------------------------------------------------------------------------
# Processes: echo backend and the two servers


class Proc:
    """A child process with its log file; stopped on exit."""

    def __init__(
        self, cmd: list[str], logpath: Path, env: dict[str, str] | None = None, pipe_stdout: bool = False
    ) -> None:
        self.cmd = cmd
        self.logpath = logpath
        self.logfile = open(logpath, "wb")
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE if pipe_stdout else self.logfile,
            stderr=self.logfile,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        boost(self.proc.pid)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, n: int = 20) -> str:
        self.logfile.flush()
        try:
            return "\n".join(self.logpath.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                # The server's own process group (start_new_session), so
                # spawned children go too; only processes started here.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self.logfile.close()


def start_backend(exe: Path, sock: Path, cores: str | None, tmp: Path) -> Proc:
    p = Proc(pinned(cores, [str(exe), str(sock)]), tmp / f"{sock.name}.log", pipe_stdout=True)
    assert p.proc.stdout is not None
    line = p.proc.stdout.readline().decode()
    if not line.startswith("READY"):
        raise RuntimeError(f"echo backend did not start: {p.log_tail()}")
    return p


class Server:
    name = "?"

    def __init__(self, args: argparse.Namespace, exes: dict[str, Path], tmp: Path) -> None:
        self.args = args
        self.exes = exes
        self.tmp = tmp
        self.proc: Proc | None = None
        self.backend: Proc | None = None
        self.port = 0

    def start(self) -> None:
        cores = self.args.server_cores
        sock = self.tmp / f"{self.name}-echo.sock"
        self.backend = start_backend(self.exes["echo_backend"], sock, cores, self.tmp)
        self.port = free_port()
        cmd = self.command(sock)
        self.proc = Proc(pinned(cores, cmd), self.tmp / f"{self.name}.log", env=self.env())
        try:
            wait_for_port(self.port, self.proc.proc)
        except RuntimeError as exc:
            tail = self.proc.log_tail()
            self.stop()
            raise RuntimeError(f"{self.name}: {exc}\n{tail}") from None

    def command(self, sock: Path) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        return None

    def pids(self) -> list[int]:
        assert self.proc is not None
        return tree(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None
        if self.backend is not None:
            self.backend.stop()
            self.backend = None


class Wstrio(Server):
    name = "wstrio"

    def command(self, sock: Path) -> list[str]:
        lines = [
            "[server]",
            f'listen = ["127.0.0.1:{self.port}"]',
            "max-connections = 60000",
            "max-read-idle = 600",
            "shutdown-timeout = 1",
        ]
        if self.args.workers is not None:
            workers = self.args.workers if self.args.workers == "auto" else int(self.args.workers)
            lines.append(f"workers = {json.dumps(workers)}")
        lines += [
            "",
            "[[route]]",
            'path = "/ws/"',
            'handler = "wstunnel"',
            f'frame-type = "{self.args.frame_type}"',
            "",
            "  [[route.backend]]",
            f"  socket = {json.dumps(str(sock))}",
            "",
        ]
        conf = self.tmp / "wstrio.toml"
        conf.write_text("\n".join(lines))
        return [sys.executable, "-m", "wstrio", "serve", str(conf), "--log-level", "warning"]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        return env


class Lighttpd(Server):
    name = "lighttpd"

    @staticmethod
    def binary() -> str | None:
        return shutil.which("lighttpd") or ("/usr/sbin/lighttpd" if os.path.exists("/usr/sbin/lighttpd") else None)

    def command(self, sock: Path) -> list[str]:
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        max_fds = min(nofile, 65535)
        docroot = self.tmp / "www"
        docroot.mkdir(exist_ok=True)
        conf = self.tmp / "lighttpd.conf"
        conf.write_text(
            "\n".join(
                [
                    'server.modules = ( "mod_wstunnel" )',
                    f'server.document-root = "{docroot}"',
                    'server.bind = "127.0.0.1"',
                    f"server.port = {self.port}",
                    f'server.errorlog = "{self.tmp / "lighttpd-error.log"}"',
                    f"server.max-fds = {max_fds}",
                    # a tunnel takes 2 fds (client + backend)
                    f"server.max-connections = {max_fds // 2 - 16}",
                    "server.max-read-idle = 600",
                    "server.listen-backlog = 4096",
                    f'wstunnel.server = ( "/ws/" => ( ( "socket" => "{sock}" ) ) )',
                    f'wstunnel.frame-type = "{self.args.frame_type}"',
                    "",
                ]
            )
        )
        binary = self.binary()
        assert binary is not None
        return [binary, "-D", "-f", str(conf)]

    @classmethod
    def available(cls, tmp: Path) -> tuple[bool, str]:
        binary = cls.binary()
        if not binary:
            return False, "lighttpd is not installed (apt-get install lighttpd)"
        conf = tmp / "probe.conf"
        conf.write_text(
            'server.modules = ( "mod_wstunnel" )\nserver.document-root = "/tmp"\nserver.port = 1\n'
            'wstunnel.server = ( "/ws/" => ( ( "socket" => "/tmp/x.sock" ) ) )\n'
        )
        r = subprocess.run([binary, "-tt", "-f", str(conf)], capture_output=True, text=True)
        if r.returncode != 0:
            return False, f"lighttpd cannot load mod_wstunnel: {r.stderr.strip() or r.stdout.strip()}"
        version = subprocess.run([binary, "-v"], capture_output=True, text=True).stdout.strip().splitlines()[0]
        return True, version


# --------------------------------------------------------------------------
# Running the load generator


@dataclass
class Samples:
    """CPU snapshots taken at the load generator's PHASE lines."""

    t: list[float] = field(default_factory=list)
    server: list[float] = field(default_factory=list)
    backend: list[float] = field(default_factory=list)
    machine: list[float] = field(default_factory=list)
    lg_cores: list[float] = field(default_factory=list)
    harness: list[float] = field(default_factory=list)

    def take(self, server: Server) -> None:
        assert server.backend is not None
        self.t.append(time.monotonic())
        self.server.append(cpu_seconds(server.pids()))
        self.backend.append(cpu_seconds([server.backend.pid]))
        server_cores = parse_cores(server.args.server_cores)
        lg_cores = parse_cores(server.args.loadgen_cores)
        if server_cores & lg_cores:
            server_cores |= lg_cores
            lg_cores = set()
        self.machine.append(machine_busy_seconds(server_cores))
        self.lg_cores.append(machine_busy_seconds(lg_cores) if lg_cores else 0.0)
        tms = os.times()
        self.harness.append(tms.user + tms.system)


def run_loadgen(
    exe: Path,
    argv: list[str],
    cores: str | None,
    server: Server,
    on_ready: Callable[[int], dict[str, Any]] | None = None,
    timeout: float = 300.0,
) -> dict[str, Any]:
    """Run the load generator, sampling CPU at its PHASE lines."""
    cmd = pinned(cores, [str(exe), *argv])
    p = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, start_new_session=True
    )
    boost(p.pid)
    timer = threading.Timer(timeout, p.kill)
    timer.start()
    samples = Samples()
    extra: dict[str, Any] = {}
    result: dict[str, Any] | None = None
    assert p.stdout is not None
    assert p.stderr is not None
    err_stream = p.stderr
    stderr_chunks: list[str] = []
    reader = threading.Thread(target=lambda: stderr_chunks.append(err_stream.read()), daemon=True)
    reader.start()
    try:
        for line in p.stdout:
            line = line.strip()
            if line == "PHASE measure":
                samples.take(server)
            elif line == "PHASE end":
                samples.take(server)
            elif line.startswith("READY") and on_ready is not None:
                extra.update(on_ready(int(line.split()[1])))
            elif line.startswith("{"):
                result = json.loads(line)
        _, status, rusage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    finally:
        timer.cancel()
        if p.poll() is None:
            p.kill()
            p.wait()
    reader.join(5)
    stderr = "".join(stderr_chunks)
    if result is None:
        raise RuntimeError(f"load generator produced no result (status {p.returncode}): {stderr.strip()}")
    result["summary"] = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    result["exit_status"] = p.returncode
    result["loadgen_total_cpu_s"] = rusage.ru_utime + rusage.ru_stime
    if len(samples.t) >= 2:
        wall = samples.t[-1] - samples.t[0]
        d_server = samples.server[-1] - samples.server[0]
        d_backend = samples.backend[-1] - samples.backend[0]
        d_machine = samples.machine[-1] - samples.machine[0]
        d_harness = samples.harness[-1] - samples.harness[0]
        lg = result.get("cpu_user_s", 0) + result.get("cpu_sys_s", 0)
        result["server_cpu_pct"] = 100 * d_server / wall
        result["backend_cpu_pct"] = 100 * d_backend / wall
        d_lg_cores = samples.lg_cores[-1] - samples.lg_cores[0]
        if d_lg_cores:
            # separate cores: other work on the server's core(s), and on the loadgen's
            result["other_cpu_pct"] = max(0.0, 100 * (d_machine - d_server - d_backend) / wall)
            result["other_loadgen_core_pct"] = max(0.0, 100 * (d_lg_cores - lg - d_harness) / wall)
        else:
            result["other_cpu_pct"] = max(0.0, 100 * (d_machine - d_server - d_backend - lg - d_harness) / wall)
    result.update(extra)
    return result


# --------------------------------------------------------------------------
# One measurement: a fresh server, one scenario


def measure(scen: Scenario, server: Server, args: argparse.Namespace, exes: dict[str, Path]) -> dict[str, Any]:
    lg = exes["loadgen"]
    base = ["--port", str(server.port), "--path", "/ws/", "--spin-us", str(args.loadgen_spin_us)]
    if args.frame_type == "text":
        base.append("--text")
    cores = args.loadgen_cores
    if scen.mode in ("rtt", "throughput"):
        argv = [
            scen.mode,
            *base,
            "-c",
            str(scen.connections),
            "-s",
            str(scen.size),
            "-w",
            str(scen.window),
            "-d",
            str(args.duration),
            "--warmup",
            str(args.warmup),
        ]
        return run_loadgen(lg, argv, cores, server)
    if scen.mode == "storm":
        # A short unmeasured storm first (imports, first-use allocations).
        run_loadgen(lg, ["storm", *base, "-n", "50", "-d", "30"], cores, server)
        argv = ["storm", *base, "-n", str(scen.connections), "--concurrency", str(args.storm_concurrency), "-d", "120"]
        return run_loadgen(lg, argv, cores, server)
    # idle: RSS before (after a short warm-up) and with N idle tunnels.
    run_loadgen(lg, ["rtt", *base, "-c", "10", "-d", "0.3", "--warmup", "0.1"], cores, server)
    time.sleep(0.5)
    before = rss_kib(server.pids())

    def on_ready(n: int) -> dict[str, Any]:
        time.sleep(0.5)
        samples = []
        for _ in range(3):
            samples.append(rss_kib(server.pids()))
            time.sleep(0.25)
        after = statistics.median(samples)
        return {
            "rss_before_kib": before,
            "rss_after_kib": after,
            "idle_open": n,
            "kib_per_conn": (after - before) / n if n else None,
        }

    argv = ["idle", *base, "-c", str(scen.connections), "--hold", str(args.idle_hold), "--concurrency", "200"]
    return run_loadgen(lg, argv, cores, server, on_ready=on_ready)


# --------------------------------------------------------------------------
# Summaries


METRICS = {
    "rtt": [
        ("msgs_per_s", "msgs/s", "higher"),
        ("mb_per_s", "MB/s", "higher"),
        ("p50_us", "p50 us", "lower"),
        ("p99_us", "p99 us", "lower"),
    ],
    "throughput": [("msgs_per_s", "msgs/s", "higher"), ("mb_per_s", "MB/s", "higher"), ("p99_us", "p99 us", "lower")],
    "storm": [
        ("handshakes_per_s", "handshakes/s", "higher"),
        ("p50_us", "hs p50 us", "lower"),
        ("p99_us", "hs p99 us", "lower"),
    ],
    "idle": [
        ("kib_per_conn", "KiB/conn", "lower"),
        ("rss_before_kib", "RSS before KiB", "lower"),
        ("open_s", "open s", "lower"),
    ],
}
RESOURCE_METRICS = ["server_cpu_pct", "backend_cpu_pct", "cpu_pct", "busy_pct", "other_cpu_pct"]


def summarize(runs: list[dict[str, Any]], scens: list[Scenario], servers: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for scen in scens:
        entry: dict[str, Any] = {"title": scen.title, "mode": scen.mode, "metrics": {}}
        for metric, _label, _better in METRICS[scen.mode] + [(m, m, "") for m in RESOURCE_METRICS]:
            m: dict[str, Any] = {}
            per_round: dict[str, dict[int, float]] = {s: {} for s in servers}
            for r in runs:
                if r["scenario"] == scen.name and r["server"] in per_round and r.get(metric) is not None and r["valid"]:
                    per_round[r["server"]][r["round"]] = r[metric]
            for s in servers:
                vals = list(per_round[s].values())
                m[s] = {
                    "median": median(vals),
                    "min": min(vals) if vals else None,
                    "max": max(vals) if vals else None,
                    "values": vals,
                }
            if "wstrio" in servers and "lighttpd" in servers:
                ratios = [
                    per_round["wstrio"][k] / per_round["lighttpd"][k]
                    for k in per_round["wstrio"]
                    if k in per_round["lighttpd"] and per_round["lighttpd"][k]
                ]
                m["ratio"] = {
                    "median": median(ratios),
                    "values": ratios,
                    "min": min(ratios) if ratios else None,
                    "max": max(ratios) if ratios else None,
                }
            entry["metrics"][metric] = m
        out[scen.name] = entry
    return out


def fmt(v: float | None, metric: str = "") -> str:
    if v is None:
        return "-"
    if metric.endswith("_pct"):
        return f"{v:.0f}%"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def targets_for(args: argparse.Namespace) -> list[tuple[str, str, str, float]]:
    workers = args.workers
    multi = workers == "auto" or (workers is not None and int(workers) > 1)
    return TARGETS_TWO_WORKERS if multi else TARGETS_ONE_CORE


def target_status(summary: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for scen, metric, kind, bound in targets_for(args):
        if scen not in summary:
            continue
        m = summary[scen]["metrics"][metric]
        if kind == "abs<=":
            value = m.get("wstrio", {}).get("median")
            ok = value is not None and value <= bound
            gap = None if value is None else value / bound
        else:
            value = m.get("ratio", {}).get("median")
            if value is None:
                ok, gap = None, None
            elif kind == "ratio>=":
                ok, gap = value >= bound, value / bound
            else:
                ok, gap = value <= bound, value / bound
        rows.append(
            {
                "scenario": scen,
                "metric": metric,
                "kind": kind,
                "bound": bound,
                "value": value,
                "met": ok,
                "value_over_bound": gap,
            }
        )
    return rows


def table(summary: dict[str, Any], servers: list[str], args: argparse.Namespace) -> str:
    both = "wstrio" in servers and "lighttpd" in servers
    head = ["scenario", "metric", *[f"{s}" for s in servers]]
    if both:
        head += ["wstrio/lighttpd", "per-round ratios"]
    rows = [head]
    for entry in summary.values():
        scen_name = entry["title"]
        for metric, label, _better in METRICS[entry["mode"]]:
            m = entry["metrics"][metric]
            if all(m[s]["median"] is None for s in servers):
                continue
            row = [scen_name, label, *[fmt(m[s]["median"], metric) for s in servers]]
            if both:
                r = m["ratio"]
                row += [
                    f"{r['median']:.2f}x" if r["median"] is not None else "-",
                    " ".join(f"{x:.2f}" for x in r["values"]),
                ]
            rows.append(row)
            scen_name = ""
    lines = []
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for i, r in enumerate(rows):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
        if i == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def resource_table(summary: dict[str, Any], servers: list[str]) -> str:
    head = [
        "scenario",
        *[f"{s}: server / backend CPU" for s in servers],
        "loadgen CPU (total / excl. spin)",
        "other work on server core(s)",
    ]
    rows = [head]
    for entry in summary.values():
        m = entry["metrics"]
        row = [entry["title"]]
        for s in servers:
            server_cpu = fmt(m["server_cpu_pct"][s]["median"], "_pct")
            backend_cpu = fmt(m["backend_cpu_pct"][s]["median"], "_pct")
            row.append(f"{server_cpu} / {backend_cpu}")
        lg_tot = max((m["cpu_pct"][s]["max"] or 0) for s in servers)
        lg_busy = max((m["busy_pct"][s]["max"] or 0) for s in servers)
        other = max((m["other_cpu_pct"][s]["max"] or 0) for s in servers)
        row += [f"{lg_tot:.0f}% / {lg_busy:.0f}% (max)", f"{other:.0f}% (max)"]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = []
    for i, r in enumerate(rows):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
        if i == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def targets_table(rows: list[dict[str, Any]]) -> str:
    out = ["| target | measured | status |", "|---|---|---|"]
    for r in rows:
        if r["kind"] == "abs<=":
            target = f"{r['scenario']} {r['metric']} <= {r['bound']:g}"
            measured = fmt(r["value"])
        else:
            op = ">=" if r["kind"] == "ratio>=" else "<="
            target = f"{r['scenario']} {r['metric']} wstrio/lighttpd {op} {r['bound']:g}x"
            measured = f"{r['value']:.2f}x" if r["value"] is not None else "-"
        if r["met"] is None:
            status = "not measured"
        elif r["met"]:
            status = "met"
        else:
            status = f"MISSED ({r['value_over_bound']:.2f} of the bound)"
        out.append(f"| {target} | {measured} | {status} |")
    return "\n".join(out)


# --------------------------------------------------------------------------
# Plot


def plot(summary: dict[str, Any], servers: list[str], path: Path, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("plot: matplotlib is not installed (pip install matplotlib); no PNG written")
        return False
    colors = {"wstrio": "#1f77b4", "lighttpd": "#ff7f0e"}
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    fig.suptitle(title, fontsize=11)

    def bars(ax: Any, names: list[str], metric: str, ylabel: str, log_scale: bool = False) -> None:
        names = [n for n in names if n in summary]
        width = 0.8 / max(1, len(servers))
        for i, s in enumerate(servers):
            med, lo, hi = [], [], []
            for n in names:
                v = summary[n]["metrics"][metric][s]
                med.append(v["median"] or 0)
                lo.append((v["median"] or 0) - (v["min"] or 0))
                hi.append((v["max"] or 0) - (v["median"] or 0))
            xs = [k + (i - (len(servers) - 1) / 2) * width for k in range(len(names))]
            ax.bar(xs, med, width, yerr=[lo, hi], capsize=3, label=s, color=colors.get(s))
            for x, y in zip(xs, med, strict=True):
                ax.annotate(
                    fmt(y), (x, y), ha="center", va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points"
                )
        if names and "ratio" in summary[names[0]]["metrics"][metric]:
            for k, n in enumerate(names):
                r = summary[n]["metrics"][metric]["ratio"]["median"]
                if r is not None:
                    ax.annotate(
                        f"wstrio/lighttpd {r:.2f}x",
                        (k, 0),
                        xycoords=ax.get_xaxis_transform(),
                        ha="center",
                        va="top",
                        fontsize=8,
                        color="dimgray",
                        xytext=(0, -18),
                        textcoords="offset points",
                    )
        ax.set_xticks(range(len(names)), [summary[n]["title"] for n in names], fontsize=8)
        ax.set_ylabel(ylabel)
        if len(names) == 1:
            ax.set_xlim(-1.2, 1.2)
        if log_scale:
            ax.set_yscale("log")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)

    rtt: list[str] = [s for s in ("32B-x1", "32B-x10", "32B-x100", "64KiB-x10", "32B-x100-w16") if s in summary]
    bars(axes[0][0], rtt, "msgs_per_s", "messages/s (echoed)", log_scale=True)
    axes[0][0].set_title("Throughput (median, min-max bars; grey: median per-round ratio)", fontsize=9)

    ax = axes[0][1]
    names = rtt
    width = 0.8 / max(1, 2 * len(servers))
    k = 0
    for s in servers:
        for metric, alpha in (("p50_us", 1.0), ("p99_us", 0.45)):
            vals = [summary[n]["metrics"][metric][s]["median"] or 0 for n in names]
            xs = [j + (k - (2 * len(servers) - 1) / 2) * width for j in range(len(names))]
            ax.bar(xs, vals, width, label=f"{s} {metric[:3]}", color=colors.get(s), alpha=alpha)
            k += 1
    ax.set_xticks(range(len(names)), [summary[n]["title"] for n in names], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("round-trip latency, us (log)")
    ax.set_title("Latency p50 (solid) and p99 (light)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)

    if "storm" in summary:
        bars(axes[1][0], ["storm"], "handshakes_per_s", "handshakes/s")
        axes[1][0].set_title("Connection storm: handshake + echo + close", fontsize=9)
    else:
        axes[1][0].axis("off")
    if "idle" in summary:
        bars(axes[1][1], ["idle"], "kib_per_conn", "server RSS per idle tunnel, KiB")
        axes[1][1].axhline(16, color="red", linestyle="--", linewidth=1)
        axes[1][1].annotate(
            "target: 16 KiB", (-1.1, 16), color="red", fontsize=8, xytext=(0, 3), textcoords="offset points"
        )
        axes[1][1].set_title("Memory per idle tunnel", fontsize=9)
    else:
        axes[1][1].axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------
# Profile (py-spy)


def _category(leaf: str) -> str:
    if "(libc.so" in leaf or "(libpthread" in leaf:
        name = leaf.split(" ", 1)[0]
        if name in ("epoll_wait", "epoll_pwait"):
            return "waiting in epoll_wait (idle)"
        return "system calls (libc: send, recv, epoll_ctl, ...)"
    if "gc_collect" in leaf or "(gcmodule.c" in leaf:
        return "garbage collector"
    if "(libpython" in leaf or re.search(r"\(\w+\.c\)$", leaf):
        return "interpreter / C extension code"
    m = re.search(r"\(([^)]*)\)$", leaf)
    src = m.group(1) if m else leaf
    if "site-packages/" in src:
        src = src.split("site-packages/", 1)[1]
    for prefix, label in (
        ("wstrio/", "wstrio (Python)"),
        ("trio/", "trio (Python)"),
        ("wsproto/", "wsproto"),
        ("h11/", "h11"),
        ("outcome/", "outcome"),
        ("contextlib", "contextlib"),
        ("<attrs generated", "attrs-generated methods"),
    ):
        if src.startswith(prefix):
            return label
    return "other Python"


def summarize_collapsed(path: Path, top: int = 25) -> str:
    """Self and inclusive time per function from py-spy's raw (collapsed) output."""
    self_t: dict[str, int] = defaultdict(int)
    self_line: dict[str, int] = defaultdict(int)
    incl_t: dict[str, int] = defaultdict(int)
    cats: dict[str, int] = defaultdict(int)
    total = 0
    strip = re.compile(r":\d+\)$")
    for line in path.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack:
            continue
        n = int(count_s)
        raw = stack.split(";")
        frames = [strip.sub(")", f) for f in raw]
        total += n
        leaf = frames[-1]
        self_t[leaf] += n
        # the innermost Python frame with its line number
        py = next((f for f in reversed(raw) if re.search(r"\.py:\d+\)$", f)), None)
        if py:
            self_line[py] += n
        for f in set(frames):
            incl_t[f] += n
        cats[_category(leaf)] += n
    if not total:
        return "no samples"

    def pct(n: int) -> str:
        return f"{100 * n / total:5.1f}%"

    out = [f"{total} samples", "", "Where the time goes (by the frame on top of the stack):"]
    out += [f"  {pct(n)}  {c}" for c, n in sorted(cats.items(), key=lambda kv: -kv[1])]
    out += ["", "Top functions by self time:"]
    out += [f"  {pct(n)}  {f}" for f, n in sorted(self_t.items(), key=lambda kv: -kv[1])[:top]]
    out += ["", "Top functions by inclusive time (anywhere on the stack; the always-present outer frames left out):"]
    out += [f"  {pct(n)}  {f}" for f, n in sorted(incl_t.items(), key=lambda kv: -kv[1]) if n < 0.97 * total][:top]
    out += ["", "Innermost Python line (the line that was running or called into C):"]
    out += [f"  {pct(n)}  {f}" for f, n in sorted(self_line.items(), key=lambda kv: -kv[1])[:15]]
    return "\n".join(out)


def profile(args: argparse.Namespace, exes: dict[str, Path], tmp: Path) -> dict[str, Any]:
    pyspy = shutil.which("py-spy")
    if not pyspy:
        log("profile: py-spy is not installed (pip install py-spy)")
        return {}
    PERF_DOCS.mkdir(parents=True, exist_ok=True)
    stem = PERF_DOCS / "profile-32B-x100"
    scen_dir = tmp / "profile"
    scen_dir.mkdir(exist_ok=True)
    server = Wstrio(args, exes, scen_dir)
    server.start()
    result: dict[str, Any] = {}
    try:
        assert server.proc is not None
        pid = server.proc.pid
        d = args.profile_duration
        records = [("raw", f"{stem}.txt"), ("flamegraph", f"{stem}.svg")]
        argv = [
            "rtt",
            "--port",
            str(server.port),
            "--quiet",
            "-c",
            "100",
            "-s",
            "32",
            "-d",
            str(len(records) * (d + 1.5) + 1),
            "--warmup",
            "1",
        ]
        box: dict[str, Any] = {}
        t = threading.Thread(
            target=lambda: box.update(run_loadgen(exes["loadgen"], argv, args.loadgen_cores, server)), daemon=True
        )
        t.start()
        time.sleep(1.5)
        for fmt_name, out in records:
            cmd = [
                pyspy,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(int(d)),
                "--rate",
                str(args.profile_rate),
                "--format",
                fmt_name,
                "--output",
                out,
                "--idle",
            ]
            if args.profile_native:
                cmd.append("--native")
            log("profile: " + " ".join(cmd))
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0 and "--native" in cmd:
                log(f"profile: py-spy --native failed ({r.stderr.strip()}); trying without --native")
                cmd.remove("--native")
                r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                log(f"profile: py-spy failed ({r.returncode}): {r.stderr.strip()}")
                return {}
        t.join()
        summary = summarize_collapsed(Path(f"{stem}.txt"))
        Path(f"{stem}-summary.txt").write_text(
            f"wstrio, 32 B x 100 connections, py-spy {args.profile_rate} Hz for {d} s\n"
            f"throughput while profiled: {box.get('msgs_per_s', 0):,.0f} msgs/s\n\n{summary}\n"
        )
        result = {
            "raw": f"{stem}.txt",
            "svg": f"{stem}.svg",
            "summary": f"{stem}-summary.txt",
            "msgs_per_s_while_profiled": box.get("msgs_per_s"),
            "text": summary,
        }
        print("\nProfile of wstrio, 32 B x 100 (py-spy):\n" + summary)
    finally:
        server.stop()
    return result


# --------------------------------------------------------------------------
# Main


def repo_commit() -> str | None:
    head = ROOT / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            ref_path = ROOT / ".git" / ref[5:]
            if ref_path.exists():
                return ref_path.read_text().strip()
            packed = (ROOT / ".git" / "packed-refs").read_text()
            for line in packed.splitlines():
                if line.endswith(ref[5:]):
                    return line.split()[0]
            return None
        return ref
    except OSError:
        return None


def meta(args: argparse.Namespace, lighttpd_version: str | None, nofile: int) -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        sys.path.insert(0, str(ROOT))
        import trio

        from wstrio import __version__ as wv

        trio_v = trio.__version__
    except Exception:
        wv, trio_v = "?", "?"
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "trio": trio_v,
        "wstrio": wv,
        "commit": repo_commit(),
        "lighttpd": lighttpd_version,
        "nofile": nofile,
        "args": {k: v for k, v in vars(args).items()},
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    p.add_argument("--quick", action="store_true", help="1 short round (smoke test, numbers are rough)")
    p.add_argument("--duration", type=float, default=4.0, help="measured seconds per rtt scenario (default 4)")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first (default 1)")
    p.add_argument(
        "--scenarios",
        default="default",
        help="comma-separated names, 'default' or 'all' (names: 32B-x1, 32B-x10, 32B-x100, "
        "64KiB-x10, storm, idle, 32B-x100-w16)",
    )
    p.add_argument("--servers", default="wstrio,lighttpd", help="comma-separated (default wstrio,lighttpd)")
    p.add_argument("--workers", default=None, help="pass 'workers = N' (or auto) into wstrio's [server]")
    p.add_argument("--server-cores", default="0", help="cores for the servers and their backends (default 0)")
    p.add_argument("--loadgen-cores", default="1", help="cores for the load generator (default 1)")
    p.add_argument(
        "--loadgen-spin-us",
        type=float,
        default=200,
        help="load generator busy-polls this long before sleeping (default 200; 0 = never)",
    )
    p.add_argument("--frame-type", choices=["binary", "text"], default="binary")
    p.add_argument("--storm-count", type=int, default=2000)
    p.add_argument("--storm-concurrency", type=int, default=64)
    p.add_argument("--idle-connections", type=int, default=5000)
    p.add_argument("--idle-hold", type=float, default=3.0)
    p.add_argument("--profile", action="store_true", help="also profile wstrio at 32 B x 100 with py-spy")
    p.add_argument("--profile-only", action="store_true", help="only the py-spy profile, no benchmark")
    p.add_argument("--profile-duration", type=float, default=8.0)
    p.add_argument("--profile-rate", type=int, default=250)
    p.add_argument(
        "--profile-native",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="py-spy --native: C frames too (system calls, GC); default on",
    )
    p.add_argument(
        "--plot",
        default=None,
        help="PNG path ('' = no plot; default: next to the JSON results; the docs' figure is "
        + str(PERF_DOCS / "benchmark.png")
        + ")",
    )
    p.add_argument("--json", default=None, help="results path (default benchmarks/results/<timestamp>.json)")
    p.add_argument(
        "--nice",
        type=int,
        default=-20,
        help="niceness for the harness and everything it starts (default -20, needs root/CAP_SYS_NICE; "
        "keeps other work on the machine from stealing the benchmark's cores)",
    )
    p.add_argument("--rebuild", action="store_true", help="recompile the C programs")
    p.add_argument("--keep-temp", action="store_true", help="keep the temporary directory (configs, logs)")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds = 1
        args.duration = min(args.duration, 1.5)
        args.warmup = min(args.warmup, 0.5)
        args.idle_connections = min(args.idle_connections, 1000)
        args.storm_count = min(args.storm_count, 500)
        args.idle_hold = min(args.idle_hold, 2.0)
        args.profile_duration = min(args.profile_duration, 3.0)
    if args.workers is not None and args.workers != "auto":
        int(args.workers)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    nofile = raise_nofile()
    global NICE
    try:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)  # inherited by every child
        NICE = args.nice
    except OSError as exc:
        log(f"warning: cannot set niceness {args.nice} ({exc}); other work may disturb the numbers")
    need = args.idle_connections * 2 + 200
    if nofile < need:
        log(
            f"warning: RLIMIT_NOFILE is {nofile}; {args.idle_connections} idle tunnels need about {need} fds "
            f"in the server (raise it with `ulimit -n`); reducing the idle scenario"
        )
        args.idle_connections = max(100, (nofile - 200) // 2)
    exes = build(args.rebuild)
    tmp = Path(tempfile.mkdtemp(prefix="wstrio-bench-"))
    wanted = [s.strip() for s in args.servers.split(",") if s.strip()]
    lighttpd_version = None
    if "lighttpd" in wanted:
        ok, probe = Lighttpd.available(tmp)
        if ok:
            lighttpd_version = probe
        else:
            log(f"lighttpd: {probe}; reporting wstrio alone")
            wanted.remove("lighttpd")
    server_classes = {"wstrio": Wstrio, "lighttpd": Lighttpd}
    servers = [s for s in ("wstrio", "lighttpd") if s in wanted]
    all_scens = scenarios(args)
    if args.scenarios == "default":
        scens = [s for s in all_scens if s.default]
    elif args.scenarios == "all":
        scens = all_scens
    else:
        names = [n.strip() for n in args.scenarios.split(",")]
        unknown = set(names) - {s.name for s in all_scens}
        if unknown:
            log(f"unknown scenarios: {sorted(unknown)}")
            return 2
        scens = [s for s in all_scens if s.name in names]
    info = meta(args, lighttpd_version, nofile)
    log(
        f"machine: {info['cpu']}, {info['cpus']} CPUs, kernel {info['kernel']}; python {info['python']}, "
        f"trio {info['trio']}, wstrio {info['wstrio']}; {lighttpd_version or 'no lighttpd'}"
    )
    log(
        f"pinning: servers + backends on cores {args.server_cores}, load generator on {args.loadgen_cores}; "
        f"RLIMIT_NOFILE {nofile}"
    )

    runs: list[dict[str, Any]] = []
    started = time.monotonic()
    prof: dict[str, Any] = {}
    try:
        if not args.profile_only:
            for rnd in range(args.rounds):
                order = servers if rnd % 2 == 0 else list(reversed(servers))
                for scen in scens:
                    for name in order:
                        run_dir = tmp / f"r{rnd}-{scen.name}-{name}"
                        run_dir.mkdir()
                        server = server_classes[name](args, exes, run_dir)
                        rec: dict[str, Any] = {"round": rnd, "scenario": scen.name, "server": name}
                        try:
                            server.start()
                            rec.update(measure(scen, server, args, exes))
                        except Exception as exc:
                            rec["error"] = str(exc)
                        finally:
                            if server.proc is not None and server.proc.proc.poll() is not None:
                                rec["server_died"] = server.proc.proc.returncode
                            server.stop()
                        problems = []
                        if rec.get("error"):
                            problems.append(rec["error"])
                        if rec.get("errors"):
                            problems.append(
                                f"{rec['errors']} connection errors ({rec.get('err_corrupt', 0)} corrupt echoes)"
                            )
                        if rec.get("timed_out"):
                            problems.append("load generator timed out")
                        if rec.get("server_died") is not None:
                            problems.append(f"server exited with {rec['server_died']}")
                        rec["valid"] = not problems
                        rec["problems"] = problems
                        runs.append(rec)
                        summary_line = rec.get("summary", "")
                        extra = ""
                        if scen.mode == "idle" and rec.get("kib_per_conn") is not None:
                            extra = (
                                f"; RSS {rec['rss_before_kib']} -> {rec['rss_after_kib']:.0f} KiB, "
                                f"{rec['kib_per_conn']:.1f} KiB/conn"
                            )
                        cpu = ""
                        if "server_cpu_pct" in rec:
                            cpu = (
                                f" [server {rec['server_cpu_pct']:.0f}%, backend {rec['backend_cpu_pct']:.0f}%, "
                                f"other work on the server core(s) {rec['other_cpu_pct']:.0f}%]"
                            )
                        log(
                            f"round {rnd + 1}/{args.rounds} {scen.title:<22} {name:<8} "
                            f"{summary_line.removeprefix('loadgen ')}{extra}{cpu}"
                            + ("" if rec["valid"] else "  INVALID: " + "; ".join(problems))
                        )
        if args.profile or args.profile_only:
            prof = profile(args, exes, tmp)
    finally:
        if not args.keep_temp:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"temporary files kept in {tmp}")
    elapsed = time.monotonic() - started
    if args.profile_only:
        return 0

    summary = summarize(runs, scens, servers)
    targets = target_status(summary, args) if "wstrio" in servers else []
    cores = args.server_cores
    headline = (
        f"{' vs '.join(n if n == 'wstrio' else 'lighttpd mod_wstunnel' for n in servers)}: "
        f"medians of {args.rounds} round(s); server on core(s) {cores}, "
        f"load generator on {args.loadgen_cores}; workers={args.workers or 1}"
    )
    print()
    print(headline)
    print(table(summary, servers, args))
    print()
    print("CPU use during the measured interval (median % of one core; loadgen and other load: max over runs):")
    print(resource_table(summary, servers))
    if (targets and "lighttpd" in servers) or any(t["kind"] == "abs<=" for t in targets):
        print()
        print("Targets (issue 8):")
        print(targets_table(targets))
    invalid = [r for r in runs if not r["valid"]]
    if invalid:
        print(f"\n{len(invalid)} run(s) were invalid and left out of the medians:")
        for r in invalid:
            print(f"  round {r['round'] + 1} {r['scenario']} {r['server']}: {'; '.join(r['problems'])}")
    noisy = [r for r in runs if r.get("other_cpu_pct", 0) > 10]
    if noisy:
        print(
            f"\nnote: in {len(noisy)} run(s) other processes used more than 10% of the server's core(s); "
            "compare ratios, not absolute figures."
        )
    print(f"\n{len(runs)} runs in {elapsed:.0f} s")

    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    json_path = Path(args.json) if args.json else RESULTS / f"{stamp}.json"
    doc = {
        "meta": info,
        "scenarios": [s.__dict__ for s in scens],
        "servers": servers,
        "runs": runs,
        "summary": summary,
        "targets": targets,
        "profile": prof,
        "elapsed_s": elapsed,
        "table": table(summary, servers, args),
        "resource_table": resource_table(summary, servers),
        "targets_table": targets_table(targets) if targets else "",
    }
    json_path.write_text(json.dumps(doc, indent=1, default=str))
    print(f"results: {json_path}")
    if args.plot is None:
        args.plot = str(json_path.with_suffix(".png"))
    if args.plot:
        if plot(summary, servers, Path(args.plot), headline + f"  ({info['date']}, {info['cpu']})"):
            print(f"plot: {args.plot}")
    return 1 if invalid and len(invalid) == len(runs) else 0


if __name__ == "__main__":
    sys.exit(main())
