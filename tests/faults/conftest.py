"""The fault-injection tier: the integration tier's fixtures and deadlines.

Backends here are killed, reset, stalled and refused at seeded random points
of a stream; every test checks, with SHA-256, that what was sent is what
arrived, or that the loss was reported (a close code, a reset), never silent.
"""

import pytest
import trio.testing

from tests.helpers import loopback_clock
from tests.integration.conftest import (  # noqa: F401  (fixtures and the deadline hook, shared)
    hub_switch,
    pytest_collection_modifyitems,
    raw,
)


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    """Real sockets throughout this tier: the virtual clock waits for real idleness (see ``loopback_clock``)."""
    return loopback_clock()
