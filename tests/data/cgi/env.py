#!/usr/bin/env python3
"""CGI test script: the request environment as JSON (plus the working directory)."""

import json
import os
import sys

body = json.dumps({"environ": dict(os.environ), "cwd": os.getcwd()}).encode()
sys.stdout.buffer.write(b"Content-Type: application/json\r\nX-Test: env\r\n\r\n" + body)
