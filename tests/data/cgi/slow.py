#!/usr/bin/env python3
"""CGI test script: never answers; leaves its pid in $PID_DIR/slow.pid first."""

import os
import pathlib
import time

path = pathlib.Path(os.environ["PID_DIR"], "slow.pid")
path.with_suffix(".tmp").write_text(str(os.getpid()))
path.with_suffix(".tmp").rename(path)
while True:
    time.sleep(60)
