#!/usr/bin/env python3
"""CGI test script: switches protocols and then echoes raw bytes until EOF.

It prints Upgrade *before* Status: 101, which lighttpd ignores (the tunnel
never starts there); wstrio reads the whole head first.  Without an upgrade
request it answers 426.  At EOF on stdin it writes "bye" and exits.
"""

import os
import sys

stdin = os.fdopen(0, "rb", buffering=0)
stdout = os.fdopen(1, "wb", buffering=0)
if "HTTP_UPGRADE" not in os.environ:
    stdout.write(b"Status: 426\nContent-Type: text/plain\n\nupgrade required\n")
    sys.exit(0)
stdout.write(b"Upgrade: " + os.environ["HTTP_UPGRADE"].encode() + b"\nStatus: 101\nX-Raw: 1\n\nhello ")
while data := stdin.read(65536):
    stdout.write(data)
stdout.write(b"bye")
