#!/usr/bin/env python3
"""CGI test script: complains on stderr and exits with status 3 without answering."""

import sys

sys.stderr.write("crash.py: something went wrong\nsecond line")
sys.exit(3)
