#!/usr/bin/env python3
"""A line program for a process route: greets the client by its address, then answers each line.

Run:  wstrio run --listen 127.0.0.1:8080 -- ./greeter.py
"""

import os
import sys

print(f"hello {os.environ.get('REMOTE_ADDR')}, you asked for {os.environ.get('PATH_INFO') or '/'}")
for line in sys.stdin:
    text = line.rstrip("\n")
    print(text.upper() if text else "(an empty line)")
