"""Fixtures of the memory tier."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from tests.streams_support import MODES, Mode, Transport, start_transport


@pytest.fixture(params=MODES)
async def transport(request: pytest.FixtureRequest, nursery: trio.Nursery) -> AsyncIterator[Transport]:
    """Memory streams, plain sockets (hub off), or sockets in the hub (see tests/streams_support.py)."""
    mode: Mode = request.param
    transport = await start_transport(mode, nursery)
    try:
        yield transport
    finally:
        transport.close()
