#!/usr/bin/env python3
"""fcgi_cgi.py - run CGI programs for FastCGI requests, like lighttpd's fcgi-cgi.

wstrio spawns it (``bin-path``) with its listening socket as standard input
(fd 0), the FastCGI convention.  For every FastCGI request (role RESPONDER)
it runs the program named by ``SCRIPT_FILENAME`` with the request's
``FCGI_PARAMS`` as its environment, in the program's directory, and pipes
bytes both ways as they come, in FastCGI records:

* ``FCGI_STDIN`` content -> program stdin; the empty ``FCGI_STDIN`` record
  closes it.  The program starts as soon as the parameters are in: it does
  **not** wait for the end of ``FCGI_STDIN`` (fcgiwrap does, which is why a
  program answering ``Status: 101``, such as the seed's ``ws_echo.py``,
  cannot work behind it);
* program stdout -> ``FCGI_STDOUT`` records, program stderr ->
  ``FCGI_STDERR`` records (wstrio logs them), and at the end
  ``FCGI_END_REQUEST`` with the exit status.

One request at a time per connection (``FCGI_MPXS_CONNS`` is 0; a second
``FCGI_BEGIN_REQUEST`` meanwhile gets ``FCGI_CANT_MPX_CONN``);
``FCGI_KEEP_CONN`` is honoured; ``FCGI_ABORT_REQUEST``, or the connection
going away, terminates the program; ``FCGI_GET_VALUES`` is answered.

The program must be executable (``chmod +x``).  It gets the request's
environment only, plus this process's ``PATH`` when the request has none.

Run by hand instead, it listens on the unix socket named on the command
line: ``fcgi_cgi.py /tmp/fcgi.sock``.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import threading

VERSION = 1
BEGIN_REQUEST, ABORT_REQUEST, END_REQUEST, PARAMS, STDIN, STDOUT, STDERR = 1, 2, 3, 4, 5, 6, 7
GET_VALUES, GET_VALUES_RESULT, UNKNOWN_TYPE = 9, 10, 11
RESPONDER = 1
KEEP_CONN = 1
REQUEST_COMPLETE, CANT_MPX_CONN, UNKNOWN_ROLE = 0, 1, 3
HEADER = struct.Struct(">BBHHBx")
READ_SIZE = 65536


class Connection:
    """One FastCGI connection: record reading (one reader) and writing (locked)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb")
        self.lock = threading.Lock()

    def read_record(self) -> tuple[int, int, bytes] | None:
        """``(type, request id, content)``; ``None`` at EOF."""
        header = self.reader.read(HEADER.size)
        if len(header) < HEADER.size:
            return None
        version, rtype, request_id, length, padding = HEADER.unpack(header)
        if version != VERSION:
            raise ValueError(f"FastCGI version {version}")
        content = self.reader.read(length + padding)
        if len(content) < length + padding:
            return None
        return rtype, request_id, content[:length]

    def send(self, rtype: int, request_id: int, content: bytes = b"") -> None:
        """Send ``content`` as records of ``rtype`` (an empty record if it is empty)."""
        out = bytearray()
        for start in range(0, max(len(content), 1), 65535):
            part = content[start : start + 65535]
            padding = -len(part) % 8
            out += HEADER.pack(VERSION, rtype, request_id, len(part), padding) + part + bytes(padding)
        with self.lock:
            self.sock.sendall(out)

    def end_request(self, request_id: int, app_status: int, protocol_status: int) -> None:
        self.send(END_REQUEST, request_id, struct.pack(">IB3x", app_status & 0xFFFFFFFF, protocol_status))


def decode_pairs(data: bytes) -> dict[bytes, bytes]:
    pairs: dict[bytes, bytes] = {}
    pos = 0

    def length() -> int:
        nonlocal pos
        if data[pos] < 0x80:
            pos += 1
            return data[pos - 1]
        pos += 4
        return int.from_bytes(data[pos - 4 : pos], "big") & 0x7FFFFFFF

    while pos < len(data):
        name_len = length()
        value_len = length()
        name = data[pos : pos + name_len]
        pos += name_len
        pairs[name] = data[pos : pos + value_len]
        pos += value_len
    return pairs


def encode_pairs(pairs: dict[bytes, bytes]) -> bytes:
    out = bytearray()
    for name, value in pairs.items():
        for item in (name, value):
            out += bytes((len(item),)) if len(item) < 0x80 else (len(item) | 0x80000000).to_bytes(4, "big")
        out += name + value
    return bytes(out)


def answer_management(conn: Connection, rtype: int, content: bytes) -> None:
    if rtype == GET_VALUES:
        known = {b"FCGI_MAX_CONNS": b"100", b"FCGI_MAX_REQS": b"100", b"FCGI_MPXS_CONNS": b"0"}
        wanted = decode_pairs(content)
        conn.send(GET_VALUES_RESULT, 0, encode_pairs({k: known[k] for k in wanted if k in known}))
    else:
        conn.send(UNKNOWN_TYPE, 0, bytes((rtype,)) + bytes(7))


def pump_output(conn: Connection, request_id: int, rtype: int, fd: int) -> None:
    """Program output (stdout or stderr) -> records, as it comes."""
    try:
        while data := os.read(fd, READ_SIZE):
            conn.send(rtype, request_id, data)
    except OSError:
        pass


def pump_input(conn: Connection, request_id: int, process: subprocess.Popen[bytes], keep_conn: bool) -> None:
    """Records -> program stdin until the empty FCGI_STDIN; aborts and hang-ups stop the program."""
    assert process.stdin is not None
    stdin_open = True
    try:
        while True:
            record = conn.read_record()
            if record is None:
                break  # the web server went away
            rtype, rid, content = record
            if rid == 0:
                answer_management(conn, rtype, content)
            elif rid != request_id:
                if rtype == BEGIN_REQUEST:
                    conn.end_request(rid, 0, CANT_MPX_CONN)
            elif rtype == ABORT_REQUEST:
                break
            elif rtype == STDIN and stdin_open:
                if not content:
                    stdin_open = False
                    process.stdin.close()
                    if keep_conn:
                        return  # the next records belong to the next request
                    continue
                try:
                    process.stdin.write(content)
                except OSError:
                    pass  # the program stopped reading; drop the rest
    except (OSError, ValueError):
        pass
    if process.poll() is None:
        process.terminate()
    try:
        process.stdin.close()
    except OSError:
        pass


def run_request(conn: Connection, request_id: int, keep_conn: bool) -> bool:
    """Read the parameters, run the program, stream it; False when the connection is done."""
    params = bytearray()
    while True:
        record = conn.read_record()
        if record is None:
            return False
        rtype, rid, content = record
        if rid == 0:
            answer_management(conn, rtype, content)
        elif rid == request_id and rtype == PARAMS:
            if not content:
                break
            params += content
        elif rid == request_id and rtype == ABORT_REQUEST:
            conn.end_request(request_id, 0, REQUEST_COMPLETE)
            return keep_conn
    env = decode_pairs(bytes(params))
    script = env.get(b"SCRIPT_FILENAME", b"")
    if b"PATH" not in env and b"PATH" in os.environb:
        env[b"PATH"] = os.environb[b"PATH"]
    try:
        process = subprocess.Popen(
            [script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=os.path.dirname(script) or None,
            env=env,
            bufsize=0,
        )
    except OSError as exc:
        conn.send(STDERR, request_id, f"fcgi_cgi.py: cannot run {script!r}: {exc}\n".encode())
        conn.send(STDOUT, request_id, b"Status: 502\r\nContent-Type: text/plain\r\n\r\ncannot run the program\n")
        conn.send(STDOUT, request_id)
        conn.end_request(request_id, 1, REQUEST_COMPLETE)
        return keep_conn
    assert process.stdout is not None
    assert process.stderr is not None
    stdin_thread = threading.Thread(target=pump_input, args=(conn, request_id, process, keep_conn), daemon=True)
    stderr_thread = threading.Thread(
        target=pump_output, args=(conn, request_id, STDERR, process.stderr.fileno()), daemon=True
    )
    stdin_thread.start()
    stderr_thread.start()
    try:
        pump_output(conn, request_id, STDOUT, process.stdout.fileno())
        stderr_thread.join()
        status = process.wait()
        conn.send(STDOUT, request_id)
        conn.end_request(request_id, status if status >= 0 else 128 - status, REQUEST_COMPLETE)
    except OSError:
        return False
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait()
        process.stdout.close()
        process.stderr.close()
    if keep_conn:
        stdin_thread.join()
        return True
    return False


def serve(sock: socket.socket) -> None:
    conn = Connection(sock)
    with sock:
        try:
            while True:
                record = conn.read_record()
                if record is None:
                    return
                rtype, request_id, content = record
                if request_id == 0:
                    answer_management(conn, rtype, content)
                    continue
                if rtype != BEGIN_REQUEST:
                    continue  # a stray record of a request that is over
                role, flags = struct.unpack(">HB5x", content)
                keep_conn = bool(flags & KEEP_CONN)
                if role != RESPONDER:
                    conn.end_request(request_id, 0, UNKNOWN_ROLE)
                elif not run_request(conn, request_id, keep_conn):
                    return
                if not keep_conn:
                    return
        except (OSError, ValueError) as exc:
            print(f"fcgi_cgi.py: {exc}", file=sys.stderr)
        finally:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.reader.close()


def main() -> None:
    if len(sys.argv) > 1:
        path = sys.argv[1]
        if os.path.exists(path):
            os.unlink(path)
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(path)
        listener.listen()
    else:
        listener = socket.socket(fileno=0)  # the socket wstrio passed as stdin
    while True:
        sock, _ = listener.accept()
        threading.Thread(target=serve, args=(sock,), daemon=True).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
