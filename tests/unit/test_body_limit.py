"""The request-body limit's arithmetic (``max-request-body-size``), without I/O."""

from __future__ import annotations

import pytest

from wstrio._errors import HttpError
from wstrio._sansio.http.body import BodyLimit, RequestBodyTooLarge


def test_declared_length_over_the_limit_is_413_with_connection_close() -> None:
    limit = BodyLimit(100)
    limit.check_declared(None)
    limit.check_declared(100)
    with pytest.raises(RequestBodyTooLarge, match=r"Content-Length 101 .* max-request-body-size \(100 bytes\)") as info:
        limit.check_declared(101)
    assert isinstance(info.value, HttpError)
    assert info.value.status == 413
    assert info.value.headers == ((b"connection", b"close"),)


def test_counted_body_passes_up_to_the_limit() -> None:
    limit = BodyLimit(100)
    limit.count(60)
    limit.count(40)
    assert limit.received == 100
    with pytest.raises(RequestBodyTooLarge, match=r"more than max-request-body-size \(100 bytes\)"):
        limit.count(1)


def test_zero_is_no_limit() -> None:
    limit = BodyLimit(0)
    limit.check_declared(1 << 62)
    limit.count(1 << 40)
    limit.count(1 << 40)
    assert limit.received == 2 << 40
