#!/usr/bin/env python3
"""A line echo: each message comes back.  Run:  wstrio run --listen 127.0.0.1:8080 -- ./echo.py"""

import sys

for line in sys.stdin:
    sys.stdout.write(line)
