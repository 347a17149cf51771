"""Embedding wstrio in a Trio application: a WebSocket endpoint served by your own code.

Run it with ``python examples/embed.py`` and connect to ws://127.0.0.1:8765/shout/
(e.g. ``python -m websockets ws://127.0.0.1:8765/shout/``): every line you
send comes back in capitals.  The application keeps running its own tasks
next to the server; Ctrl-C stops both, and open WebSockets get CLOSE 1001.
"""

from __future__ import annotations

import logging

import trio

import wstrio


async def shout(stream: trio.abc.Stream, request: wstrio.Request) -> None:
    """The backend: the tunnel's payload bytes in, bytes out."""
    async for chunk in stream:
        await stream.send_all(bytes(chunk).upper())


async def main() -> None:
    config = wstrio.ServerConfig(
        listen=(wstrio.ListenAddress("tcp", "127.0.0.1", 8765),),
        routes=(wstrio.Route(handler="wstunnel", path="/shout/", backends=(wstrio.Backend(app=shout),)),),
    )
    async with trio.open_nursery() as nursery:
        server = await nursery.start(wstrio.serve, config)
        logging.info("WebSocket endpoint on %s", server.url("/shout/", scheme="ws"))
        # ... start the rest of your application here, e.g.:
        # nursery.start_soon(my_app_task)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    try:
        trio.run(main)
    except KeyboardInterrupt:
        pass
