#!/bin/sh
# CGI test script: leaves a background process behind and tells its pid.
sleep 300 &
printf 'Content-Type: text/plain\n\n%s\n' "$!"
