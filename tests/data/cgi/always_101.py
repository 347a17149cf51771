#!/usr/bin/env python3
"""CGI test script: always switches protocols, then writes its environment as JSON and exits.

The Sec-WebSocket-Accept is computed from HTTP_SEC_WEBSOCKET_KEY when there
is one (wstrio checks it for HTTP/2 WebSockets).
"""

import base64
import hashlib
import json
import os
import sys

key = os.environ.get("HTTP_SEC_WEBSOCKET_KEY", "")
accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
head = f"Status: 101\nUpgrade: websocket\nSec-WebSocket-Accept: {accept}\nX-Always: 101\n\n"
sys.stdout.buffer.write(head.encode() + json.dumps(dict(os.environ)).encode())
