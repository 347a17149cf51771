"""Unit tests for the HTTP/2 flood budget (wstrio._sansio.http.h2budget).

Frames are made by hyperframe and h2's own client, so the scanner is checked
against real encodings, split at every offset.
"""

from __future__ import annotations

import h2.config
import h2.connection
import pytest
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from wstrio._sansio.http.h2budget import (
    BURST,
    DATA_SENT_CREDIT,
    PREFACE_SIZE,
    RATE,
    RESPONSE_CREDIT,
    FrameHead,
    FrameScanner,
    H2Budget,
    frame_cost,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
PING = PingFrame(0, opaque_data=b"12345678").serialize()


def serialize(*frames: Frame) -> bytes:
    return b"".join(f.serialize() for f in frames)


def head_of(frame: Frame) -> FrameHead:
    (head,) = FrameScanner().feed(frame.serialize())
    return head


# -- FrameScanner --------------------------------------------------------------------


MIXED = serialize(
    SettingsFrame(0, settings={1: 4096, 3: 100}),
    HeadersFrame(1, b"\x82\x86\x84", flags=["END_HEADERS"]),
    DataFrame(1, b"x" * 300, flags=["PADDED"], pad_length=7),
    DataFrame(1, b"", flags=["END_STREAM"]),
    PingFrame(0, opaque_data=b"abcdefgh"),
    DataFrame(3, b"", flags=["PADDED"], pad_length=200),
    WindowUpdateFrame(0, window_increment=99),
)
MIXED_TYPES = [0x4, 0x1, 0x0, 0x0, 0x6, 0x0, 0x8]


def test_scanner_finds_every_frame_in_one_chunk() -> None:
    heads = FrameScanner().feed(MIXED)
    assert [h.type for h in heads] == MIXED_TYPES
    assert [h.data_length for h in heads if h.type == 0] == [300, 0, 0]
    assert heads[0].start == 0
    assert heads[1].start == 9 + 12


@pytest.mark.parametrize("step", [1, 2, 5, 9, 10, 13, 64])
def test_scanner_finds_the_same_frames_in_any_chunking(step: int) -> None:
    scanner = FrameScanner(skip=PREFACE_SIZE)
    data = PREFACE + MIXED
    heads: list[FrameHead] = []
    starts: list[int] = []
    for i in range(0, len(data), step):
        for head in scanner.feed(data[i : i + step]):
            heads.append(head)
            starts.append(i + head.start)  # back to an offset in the whole stream
    assert [h.type for h in heads] == MIXED_TYPES
    assert [h.data_length for h in heads if h.type == 0] == [300, 0, 0]
    whole = FrameScanner(skip=PREFACE_SIZE).feed(data)
    assert starts == [h.start for h in whole]


def test_scanner_reads_stream_ids_without_the_reserved_bit() -> None:
    raw = bytearray(RstStreamFrame(5).serialize())
    raw[5] |= 0x80
    (head,) = FrameScanner().feed(raw)
    assert (head.type, head.stream_id, head.length) == (0x3, 5, 4)


# -- what a frame costs --------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        (SettingsFrame(0, settings={1: 4096}), "SETTINGS"),
        (SettingsFrame(0, flags=["ACK"]), "SETTINGS"),
        (PingFrame(0, opaque_data=b"12345678"), "PING"),
        (PingFrame(0, flags=["ACK"], opaque_data=b"12345678"), "PING"),
        (RstStreamFrame(1), "RST_STREAM"),
        (WindowUpdateFrame(1, window_increment=1), "WINDOW_UPDATE"),
        (PriorityFrame(3, depends_on=0), "PRIORITY"),
        (DataFrame(1, b""), "empty DATA"),
        (DataFrame(1, b"", flags=["PADDED"], pad_length=10), "empty DATA"),
        (ContinuationFrame(1, b""), "empty CONTINUATION"),
    ],
)
def test_unproductive_frames_cost(frame: Frame, kind: str) -> None:
    assert frame_cost(head_of(frame)) == (1.0, kind)


@pytest.mark.parametrize(
    "frame",
    [
        DataFrame(1, b"x"),
        DataFrame(1, b""),  # replaced below: END_STREAM
        DataFrame(1, b"x", flags=["PADDED"], pad_length=10),
        HeadersFrame(1, b"\x82", flags=["END_HEADERS"]),
        ContinuationFrame(1, b"\x82", flags=["END_HEADERS"]),
        GoAwayFrame(0, last_stream_id=0),
    ],
)
def test_frames_that_carry_something_are_free(frame: Frame) -> None:
    if isinstance(frame, DataFrame) and not frame.data and "PADDED" not in frame.flags:
        frame.flags.add("END_STREAM")  # an empty DATA that ends the stream is legitimate
    assert frame_cost(head_of(frame)) == (0.0, None)


def test_settings_cost_grows_with_their_entries() -> None:
    few = frame_cost(head_of(SettingsFrame(0, settings={1: 1, 2: 0, 3: 100, 4: 65535})))[0]
    many = SettingsFrame(0)
    raw = many.serialize()[:9] + b"\x00\x01\x00\x00\x10\x00" * 800
    raw = (len(raw) - 9).to_bytes(3, "big") + raw[3:]
    (head,) = FrameScanner().feed(raw)
    assert few == 1.0
    assert frame_cost(head)[0] == 1.0 + 800 // 8


def test_unknown_extension_frames_cost() -> None:
    raw = b"\x00\x00\x02\x10\x00\x00\x00\x00\x01ab"  # PRIORITY_UPDATE-like type 0x10
    (head,) = FrameScanner().feed(raw)
    assert frame_cost(head) == (1.0, "frame type 0x10")


# -- the bucket ----------------------------------------------------------------------


def test_a_ping_flood_is_cut_at_the_frame_that_exhausts_the_budget() -> None:
    budget = H2Budget(now=0.0)
    flood = PREFACE + PING * 2000
    allowed = budget.received(flood, 0.0)
    assert budget.exhausted == "PING"
    # Exactly the PINGs the bucket held went through, the rest never reach h2.
    assert allowed == PREFACE_SIZE + len(PING) * int(BURST)
    assert budget.received(PING, 0.0) == 0


def test_the_bucket_refills_at_its_rate_but_not_above_its_burst() -> None:
    budget = H2Budget(now=0.0, burst=10, rate=2)
    budget.received(PREFACE, 0.0)
    assert budget.received(PING * 10, 0.0) == 10 * len(PING)
    assert budget.tokens(0.0) == 0
    assert budget.tokens(2.5) == 5
    assert budget.tokens(1000.0) == 10
    assert budget.received(PING * 10, 1000.0) == 10 * len(PING)
    assert budget.exhausted is None
    assert budget.received(PING, 1000.0) == 0
    assert budget.exhausted == "PING"


def test_a_steady_trickle_below_the_rate_never_exhausts() -> None:
    budget = H2Budget(now=0.0)
    budget.received(PREFACE, 0.0)
    for second in range(10_000):
        budget.received(PING * int(RATE), float(second))
    assert budget.exhausted is None


def test_useful_work_earns_credit_but_cannot_be_banked() -> None:
    budget = H2Budget(now=0.0, burst=100, rate=0)
    budget.received(PREFACE + PING * 100, 0.0)
    assert budget.tokens(0.0) == 0
    budget.sent(serialize(HeadersFrame(1, b"\x88", flags=["END_HEADERS"])), 0.0, provoked=False)
    assert budget.tokens(0.0) == RESPONSE_CREDIT
    budget.sent(serialize(DataFrame(1, b"x" * 100), DataFrame(1, b"", flags=["END_STREAM"])), 0.0, provoked=False)
    assert budget.tokens(0.0) == RESPONSE_CREDIT + DATA_SENT_CREDIT
    budget.received(serialize(DataFrame(1, b"y" * 10240)), 0.0)
    assert budget.tokens(0.0) == RESPONSE_CREDIT + DATA_SENT_CREDIT + 10
    for _ in range(1000):
        budget.sent(serialize(HeadersFrame(1, b"\x88", flags=["END_HEADERS"])), 0.0, provoked=False)
    assert budget.tokens(0.0) == 100


def test_resets_wstrio_sends_count_only_when_the_client_provoked_them() -> None:
    budget = H2Budget(now=0.0, burst=3, rate=0)
    resets = serialize(*(RstStreamFrame(i, error_code=5) for i in range(1, 20, 2)))
    budget.sent(resets, 0.0, provoked=False)
    assert budget.exhausted is None
    budget.sent(resets, 0.0, provoked=True)
    assert budget.exhausted == "RST_STREAM sent"


def test_rapid_resets_cost_on_top_of_their_frames() -> None:
    budget = H2Budget(now=0.0, burst=10, rate=0)
    budget.received(PREFACE, 0.0)
    for stream_id in range(1, 10, 2):
        assert budget.received(RstStreamFrame(stream_id).serialize(), 0.0)
        assert budget.rapid_reset(0.0)
    assert not budget.rapid_reset(0.0)
    assert budget.exhausted == "rapid reset"


def test_credit_stops_after_exhaustion() -> None:
    budget = H2Budget(now=0.0, burst=1, rate=0)
    budget.received(PREFACE + PING * 2, 0.0)
    budget.earn(100, 0.0)
    assert budget.tokens(0.0) < 0
    assert budget.received(DataFrame(1, b"x").serialize(), 0.0) == 0


def test_a_legitimate_h2_client_costs_almost_nothing() -> None:
    # h2's own client: preface, SETTINGS, a connection WINDOW_UPDATE, then
    # 500 requests with bodies and the ACK of the server's SETTINGS.
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.increment_flow_control_window(1 << 24)
    budget = H2Budget(now=0.0, burst=BURST, rate=0)
    budget.received(client.data_to_send(), 0.0)
    spent_at_start = BURST - budget.tokens(0.0)
    for n in range(500):
        stream_id = 1 + 2 * n
        client.send_headers(stream_id, [(":method", "POST"), (":path", "/"), (":scheme", "http"), (":authority", "x")])
        client.send_data(stream_id, b"body", end_stream=True)
        assert budget.received(client.data_to_send(), 0.0)
    assert spent_at_start == 2  # SETTINGS and WINDOW_UPDATE
    assert budget.exhausted is None
    assert budget.tokens(0.0) >= BURST - 2  # the bodies earned a little back


@pytest.mark.parametrize(("burst", "rate"), [(0, 1), (-1, 1), (10, -1)])
def test_nonsense_budgets_are_refused(burst: float, rate: float) -> None:
    with pytest.raises(ValueError, match="burst > 0 and rate >= 0"):
        H2Budget(now=0.0, burst=burst, rate=rate)
