"""Embedding wstrio in a Trio application: a WebSocket endpoint served by your own code.

Run it with ``python examples/embed.py`` and connect to ws://127.0.0.1:8765/shout/
(for example with ``pip install websockets``, then
``python -m websockets ws://127.0.0.1:8765/shout/``): every line you send comes
back in capitals.  The application keeps running its own tasks next to the
server; Ctrl-C (or SIGTERM) stops both, and open WebSockets get CLOSE 1001.
"""

import signal

import trio

import wstrio


async def shout(stream: trio.abc.Stream, request: wstrio.Request) -> None:
    async for chunk in stream:  # payload bytes from the client
        await stream.send_all(bytes(chunk).upper())  # become frames to the client


async def main() -> None:
    config = wstrio.ServerConfig(
        listen=(wstrio.ListenAddress("tcp", "127.0.0.1", 8765),),
        routes=(wstrio.Route(handler="wstunnel", path="/shout/", backends=(wstrio.Backend(app=shout),)),),
    )
    # Ctrl-C as a signal Trio delivers, not a KeyboardInterrupt raised
    # anywhere: the server gets to close its WebSockets properly.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(wstrio.serve, config)
            print("listening on", server.url("/shout/", scheme="ws"), flush=True)
            # nursery.start_soon(the_rest_of_your_app)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()  # open WebSockets get CLOSE 1001


if __name__ == "__main__":
    trio.run(main)
