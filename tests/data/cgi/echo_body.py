#!/usr/bin/env python3
"""CGI test script: echoes CONTENT_LENGTH bytes of the request body (or stdin to EOF without it)."""

import os
import sys

length = os.environ.get("CONTENT_LENGTH", "")
data = sys.stdin.buffer.read(int(length)) if length else sys.stdin.buffer.read()
sys.stdout.buffer.write(b"Content-Type: application/octet-stream\nContent-Length: %d\n\n" % len(data) + data)
