#!/usr/bin/env python3
"""websocketd's greeter, with the query string: ws://host/?name=Ada says hello to Ada, then answers each line.

Run:  wstrio run --listen 127.0.0.1:8080 --static . -- ./greeter.py
(from this directory) and open http://127.0.0.1:8080/ (index.html).
"""

import os
import sys
import urllib.parse

query = urllib.parse.parse_qs(os.environ.get("QUERY_STRING", ""))
name = query.get("name", ["stranger"])[0]
print(f"hello {name}, from {os.environ.get('REMOTE_ADDR')}")
for line in sys.stdin:
    text = line.rstrip("\n")
    print(f"{name} said: {text}" if text else "(an empty line)")
