#!/usr/bin/env python3
"""CGI test script: a 101 without an Upgrade header (a 502 for the client)."""

import sys

sys.stdout.write("Status: 101\nConnection: upgrade\n\n")
