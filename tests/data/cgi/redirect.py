#!/usr/bin/env python3
"""CGI test script: answers the redirect named by the query string.

?local          Location: /cgi/env.py?from=redirect   (local redirect, RFC 3875 6.2.2)
?loop           Location: /cgi/redirect.py?loop       (a local redirect loop)
?client         Location: http://example.com/next     (client redirect, 302)
?status         Status: 301 + Location: /cgi/env.py   (not local: a Status is given)
"""

import os
import sys

heads = {
    "local": "Location: /cgi/env.py?from=redirect\n\n",
    "loop": "Location: /cgi/redirect.py?loop\n\n",
    "client": "Location: http://example.com/next\n\n",
    "status": "Status: 301 Moved\nLocation: /cgi/env.py\nContent-Type: text/plain\n\nmoved\n",
}
sys.stdout.write(heads[os.environ["QUERY_STRING"]])
