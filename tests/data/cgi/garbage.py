#!/usr/bin/env python3
"""CGI test script: prints something that is not a CGI response head."""

import sys

sys.stdout.write("this is not a header line\n\nand a body\n")
