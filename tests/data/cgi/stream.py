#!/usr/bin/env python3
"""CGI test script: a conversation over a streamed request and response body.

For each line of the request body it writes "got <line>" at once (no
Content-Length, so the client gets a chunked body) and flushes, so the client
can send its next line only after it saw the answer to the previous one.
"""

import os
import sys

sys.stdout.buffer.write(b"Content-Type: text/plain\n\n")
sys.stdout.buffer.flush()
remaining = int(os.environ["CONTENT_LENGTH"])
while remaining > 0:
    line = sys.stdin.buffer.readline(remaining)
    if not line:
        break
    remaining -= len(line)
    sys.stdout.buffer.write(b"got " + line)
    sys.stdout.buffer.flush()
sys.stdout.buffer.write(b"done\n")
