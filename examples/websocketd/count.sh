#!/bin/sh
# websocketd's classic example: count to 10, one message per line.
# Run:  wstrio run --listen 127.0.0.1:8080 -- ./count.sh
# (from this directory), then in a browser's console:
#   ws = new WebSocket('ws://127.0.0.1:8080/'); ws.onmessage = e => console.log(e.data)
for i in 1 2 3 4 5 6 7 8 9 10; do
    echo "$i"
    sleep 0.5
done
