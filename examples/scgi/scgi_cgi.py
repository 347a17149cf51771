#!/usr/bin/env python3
"""scgi_cgi.py - run CGI programs for SCGI requests, like lighttpd's scgi-cgi.

wstrio spawns it (``bin-path``) with its listening socket as standard input
(fd 0).  For every connection it reads the SCGI request (a netstring of
environment variables), runs the program named by ``SCRIPT_FILENAME`` with
that environment, in the program's directory, and pipes bytes both ways as
they come:

* connection -> program stdin: the ``CONTENT_LENGTH`` body bytes, then EOF.
  When the request asked for a protocol switch (``HTTP_UPGRADE`` is set)
  everything the connection carries goes on until its EOF instead, so a
  program that answers ``Status: 101`` (such as the seed's ``ws_echo.py``)
  keeps talking to the client;
* program stdout -> connection, until the program closes it; then the
  connection is closed.  The program's stderr is this process's stderr.

The program must be executable (``chmod +x``), as with lighttpd's scgi-cgi.
It gets the request's environment only, plus this process's ``PATH`` when
the request has none (so ``#!/usr/bin/env python3`` works).  If the
connection goes away before the program is done, the program is terminated.

Run by hand instead, it listens on the unix socket named on the command
line: ``scgi_cgi.py /tmp/scgi.sock``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

MAX_HEADER = 1 << 20
READ_SIZE = 65536


def read_request(conn: socket.socket) -> tuple[dict[bytes, bytes], bytes]:
    """The SCGI environment and the body bytes that came with it."""
    buf = b""
    while b":" not in buf:
        chunk = conn.recv(READ_SIZE)
        if not chunk:
            raise EOFError("connection closed before the SCGI header")
        buf += chunk
        if b":" not in buf and len(buf) > len(str(MAX_HEADER)):
            raise ValueError("SCGI netstring length is missing or too long")
    length_text, _, rest = buf.partition(b":")
    length = int(length_text)
    if length > MAX_HEADER:
        raise ValueError(f"SCGI header of {length} bytes is too large")
    while len(rest) <= length:
        chunk = conn.recv(READ_SIZE)
        if not chunk:
            raise EOFError("connection closed inside the SCGI header")
        rest += chunk
    content, comma, body = rest[:length], rest[length : length + 1], rest[length + 1 :]
    if comma != b"," or not content.endswith(b"\0"):
        raise ValueError("malformed SCGI netstring")
    items = content[:-1].split(b"\0")
    return dict(zip(items[0::2], items[1::2], strict=True)), body


def feed_stdin(conn: socket.socket, process: subprocess.Popen[bytes], first: bytes, env: dict[bytes, bytes]) -> None:
    """Connection -> program stdin; then watch for the connection going away."""
    assert process.stdin is not None
    upgrade = b"HTTP_UPGRADE" in env
    remaining = int(env.get(b"CONTENT_LENGTH", b"0") or b"0")
    data = first
    try:
        while True:
            if not upgrade:
                data = data[:remaining]
                remaining -= len(data)
            if data:
                process.stdin.write(data)
            if not upgrade and remaining <= 0:
                break
            data = conn.recv(READ_SIZE)
            if not data:
                break
    except OSError:
        pass
    finally:
        try:
            process.stdin.close()
        except OSError:
            pass
    # The request is in.  If the connection now ends while the program
    # still runs, nobody is listening any more: stop it.
    try:
        while conn.recv(READ_SIZE):
            pass
    except OSError:
        pass
    if process.poll() is None and not upgrade:
        process.terminate()


def serve(conn: socket.socket) -> None:
    with conn:
        try:
            env, first = read_request(conn)
        except (OSError, EOFError, ValueError) as exc:
            print(f"scgi_cgi.py: bad request: {exc}", file=sys.stderr)
            return
        script = env.get(b"SCRIPT_FILENAME")
        if not script:
            conn.sendall(b"Status: 500\r\nContent-Type: text/plain\r\n\r\nno SCRIPT_FILENAME\n")
            return
        if b"PATH" not in env and b"PATH" in os.environb:
            env[b"PATH"] = os.environb[b"PATH"]
        try:
            process = subprocess.Popen(
                [script],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                cwd=os.path.dirname(script) or None,
                env=env,
                bufsize=0,
            )
        except OSError as exc:
            print(f"scgi_cgi.py: cannot run {script!r}: {exc}", file=sys.stderr)
            conn.sendall(b"Status: 502\r\nContent-Type: text/plain\r\n\r\ncannot run the program\n")
            return
        feeder = threading.Thread(target=feed_stdin, args=(conn, process, first, env), daemon=True)
        feeder.start()
        assert process.stdout is not None
        try:
            while data := os.read(process.stdout.fileno(), READ_SIZE):
                conn.sendall(data)
        except OSError:
            process.terminate()
        finally:
            process.stdout.close()
            # Let the program exit before the connection closes, so the
            # feeder does not take the close for a client that went away.
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            feeder.join()


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
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
