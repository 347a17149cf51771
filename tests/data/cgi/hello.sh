#!/bin/sh
# CGI test script in shell, run directly (it must be executable).
printf 'Content-Type: text/plain\r\nX-Script: hello.sh\r\n\r\n'
printf 'hello from sh: method=%s query=%s path_info=%s\n' "$REQUEST_METHOD" "$QUERY_STRING" "$PATH_INFO"
