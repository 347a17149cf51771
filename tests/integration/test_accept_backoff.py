"""Out of file descriptors at accept() (issue 13, defect 3): back off, log once per episode.

Before, the accept loop logged an ERROR every 100 ms for as long as
``accept()`` failed with EMFILE.  Now it backs off (doubling up to 2 s) and
logs the start and the end of the episode, once each; the clients that
waited are served after it.  The listener here fails on purpose; the clock
is Trio's autojump clock.
"""

from __future__ import annotations

import errno
import logging

import pytest
import trio
import trio.testing

import wstrio
from tests.helpers import make_config
from wstrio.testing import MemoryListener


class ExhaustedListener(MemoryListener):
    """A memory listener whose accept() fails with EMFILE ``failures`` times first."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.attempts = 0

    async def accept(self) -> trio.abc.Stream:
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            await trio.lowlevel.checkpoint()
            raise OSError(errno.EMFILE, "Too many open files")
        return await super().accept()


async def test_emfile_is_logged_once_per_episode_and_clients_are_served_after(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wstrio")
    listener = ExhaustedListener(failures=200)
    config = make_config({"server": {}})
    await nursery.start(lambda task_status: wstrio.serve_listeners(config, [listener], task_status=task_status))
    started = trio.current_time()
    client = await listener.connect()  # waits until accept() works again
    await client.send_all(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    response = await client.receive_some(65536)
    assert response.startswith(b"HTTP/1.1 404 ")
    assert listener.failures == 0
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "Too many open files" in errors[0].getMessage()
    ended = [r.getMessage() for r in caplog.records if "accepting again" in r.getMessage()]
    assert len(ended) == 1
    assert "200 failed accepts" in ended[0]
    # Backing off: 200 failures took far longer than 200 x the first delay
    # (virtual time: the autojump clock, nothing slept for real).
    assert trio.current_time() - started > 100 * 2 * 0.05
