#!/usr/bin/env python3
"""A line-echo backend in Python, like the seed's echo.pl.

Spawned by wstrio (``bin-path``), it accepts connections on the listening
socket wstrio hands it as standard input (fd 0), one thread per client, and
writes every line back as soon as it is complete.

Run by hand instead (``python3 echo.py /tmp/echo.sock``), it listens on the
unix socket named on the command line.
"""

import os
import socket
import sys
import threading


def serve_client(conn: socket.socket) -> None:
    with conn, conn.makefile("rb", buffering=0) as reader:
        for line in iter(reader.readline, b""):
            conn.sendall(line)


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
        threading.Thread(target=serve_client, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
