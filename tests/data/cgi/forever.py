#!/usr/bin/env python3
"""CGI test script: streams a line every 20 ms forever; leaves its pid in $PID_DIR/forever.pid first."""

import os
import pathlib
import sys
import time

path = pathlib.Path(os.environ["PID_DIR"], "forever.pid")
path.with_suffix(".tmp").write_text(str(os.getpid()))
path.with_suffix(".tmp").rename(path)
sys.stdout.write("Content-Type: text/plain\n\n")
while True:
    sys.stdout.write("still here\n")
    sys.stdout.flush()
    time.sleep(0.02)
