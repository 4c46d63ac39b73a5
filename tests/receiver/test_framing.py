"""RFC 6587 stream framing: both framings, split and coalesced input, oversize and lost frames."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from applianced.receiver.framing import FrameError, Framer

MAX = 64


def feed_all(framer: Framer, chunks: Iterable[bytes]) -> list[bytes | FrameError]:
    out: list[bytes | FrameError] = []
    for chunk in chunks:
        out += framer.feed(chunk)
    return out


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def counted(*frames: bytes) -> bytes:
    return b"".join(b"%d %s" % (len(f), f) for f in frames)


def is_oversize(item: bytes | FrameError) -> bool:
    return isinstance(item, FrameError) and not item.fatal


# --- non-transparent framing (LF) --------------------------------------------------------------


def test_lf_coalesced_frames_in_one_feed() -> None:
    """Several LF-terminated frames in one feed come back in order, without their LF."""
    assert Framer(MAX).feed(b"<13>a\n<13>b\n<13>c\n") == [b"<13>a", b"<13>b", b"<13>c"]


def test_lf_frame_split_across_feeds() -> None:
    """A frame is returned only once its LF has arrived, whatever the split."""
    framer = Framer(MAX)
    assert framer.feed(b"<13>hel") == []
    assert framer.feed(b"lo\n<13>wor") == [b"<13>hello"]
    assert framer.feed(b"ld\n") == [b"<13>world"]
    assert framer.pending == 0


def test_lf_byte_by_byte() -> None:
    """Feeding one byte at a time gives the same frames as one feed."""
    stream = b"<13>one\r\n<13>two\n\n<13>three\x00"
    assert feed_all(Framer(MAX), bytewise(stream)) == [b"<13>one", b"<13>two", b"<13>three"]


def test_lf_crlf_nul_and_blank_lines() -> None:
    """CR before the trailer is dropped, NUL also ends a frame, blank frames vanish."""
    stream = b"\r\n\n<13>a\r\n\r\n<13>b\x00\x00<13>c\n\n"
    assert Framer(MAX).feed(stream) == [b"<13>a", b"<13>b", b"<13>c"]


def test_lf_keeps_interior_cr() -> None:
    """Only a CR right before the trailer is framing; others belong to the message."""
    assert Framer(MAX).feed(b"<13>a\rb\r\r\n") == [b"<13>a\rb\r"]


def test_lf_frame_of_exactly_max_size_passes() -> None:
    """A frame of max_size octets, with or without CR, is delivered, even split before LF."""
    body = b"x" * MAX
    assert Framer(MAX).feed(body + b"\n") == [body]
    framer = Framer(MAX)
    assert framer.feed(body + b"\r") == []
    assert framer.feed(b"\n") == [body]


def test_lf_oversize_then_good_frame_in_one_feed() -> None:
    """An over-long line is a non-fatal error and the next line still comes through."""
    out = Framer(MAX).feed(b"x" * (MAX + 1) + b"\n<13>good\n")
    assert len(out) == 2 and is_oversize(out[0])
    assert out[1] == b"<13>good"


def test_lf_oversize_across_feeds_is_not_buffered() -> None:
    """A long line is dropped through its LF while holding at most max_size octets."""
    framer = Framer(MAX)
    out = framer.feed(b"<13>" + b"x" * MAX)
    assert len(out) == 1 and is_oversize(out[0])
    for _ in range(1000):
        assert framer.feed(b"y" * 1000) == []
        assert framer.pending == 0
    assert framer.feed(b"tail\n<13>good\n<13>pa") == [b"<13>good"]
    assert framer.pending == len(b"<13>pa")


def test_lf_partial_frame_never_holds_more_than_max_size() -> None:
    """Byte by byte, the partial line held never exceeds max_size + 1 (the CR)."""
    framer = Framer(MAX)
    peak = 0
    for byte in bytewise(b"<13>" + b"z" * (3 * MAX) + b"\n<13>ok\n"):
        framer.feed(byte)
        peak = max(peak, framer.pending)
    assert peak <= MAX + 1


def test_lf_leading_blanks_before_detection() -> None:
    """Whitespace before the first frame does not decide the framing, even a feed of it."""
    framer = Framer(MAX)
    assert framer.feed(b"  \r\n") == []
    assert framer.feed(b"<13>a\n") == [b"<13>a"]


def test_lf_mode_never_fatal() -> None:
    """In LF mode a digit-led frame after the first is just a frame."""
    assert Framer(MAX).feed(b"<13>a\n12 b\n") == [b"<13>a", b"12 b"]


# --- octet counting ----------------------------------------------------------------------------


def test_counted_coalesced_frames_in_one_feed() -> None:
    """Several counted frames in one feed come back in order, without their counts."""
    stream = counted(b"<13>a", b"<13>bb", b"<13>ccc")
    assert Framer(MAX).feed(stream) == [b"<13>a", b"<13>bb", b"<13>ccc"]


def test_counted_frames_are_transparent() -> None:
    """A counted frame may hold LF, NUL and anything else: only the count delimits it."""
    frame = b"<13>line one\nline two\x00\r\n"
    assert Framer(MAX).feed(counted(frame, b"<13>next")) == [frame, b"<13>next"]


def test_counted_split_in_count_and_body() -> None:
    """Splits inside the count, after the SP, and inside the body are all reassembled."""
    framer = Framer(MAX)
    assert framer.feed(b"1") == []
    assert framer.feed(b"0") == []
    assert framer.feed(b" <13>") == []
    assert framer.feed(b"hello!1") == [b"<13>hello!"]
    assert framer.feed(b"0 <13>world!") == [b"<13>world!"]
    assert framer.pending == 0


def test_counted_byte_by_byte() -> None:
    """Feeding one byte at a time gives the same frames as one feed."""
    stream = counted(b"<13>one", b"<13>two\n", b"<13>three")
    assert feed_all(Framer(MAX), bytewise(stream)) == [b"<13>one", b"<13>two\n", b"<13>three"]


def test_counted_tolerates_blanks_between_frames() -> None:
    """Stray LF/CR/SP/NUL between counted frames (some senders add a LF) are skipped."""
    stream = b"\n 5 <13>a\n\r\n5 <13>b\x00 0 5 <13>c"
    assert Framer(MAX).feed(stream) == [b"<13>a", b"<13>b", b"<13>c"]


def test_counted_oversize_then_good_frame_in_one_feed() -> None:
    """A count over max_size is a non-fatal error; exactly that many octets are skipped."""
    big = b"<13>" + b"\n5 x" * MAX  # looks like frames inside: must be skipped, not parsed
    out = Framer(MAX).feed(counted(big, b"<13>good"))
    assert out == [
        FrameError(f"frame of {len(big)} octets over the size limit", False, True),
        b"<13>good",
    ]


def test_counted_oversize_across_feeds_is_skipped_without_buffering() -> None:
    """A 1 MB counted frame is discarded as it arrives, and the frame after it is whole."""
    framer = Framer(MAX)
    out = framer.feed(b"1000000 <13>")
    assert len(out) == 1 and is_oversize(out[0])
    left = 1000000 - len(b"<13>")
    while left > 4096:
        assert framer.feed(b"9 " * 2048) == []
        assert framer.pending == 0
        left -= 4096
    assert framer.feed(b"z" * left + counted(b"<13>good") + b"3") == [b"<13>good"]
    assert framer.pending == 1


def test_counted_frame_of_exactly_max_size_passes() -> None:
    """A counted frame of exactly max_size octets is delivered."""
    body = b"y" * MAX
    assert Framer(MAX).feed(counted(body)) == [body]


@pytest.mark.parametrize("garbage", [b"12x <13>a", b"<13>a\n", b"1234567890 <13>a", b"-1 x"])
def test_counted_garbage_is_fatal(garbage: bytes) -> None:
    """A count that is not a number (or has over 9 digits) loses the framing: fatal, then mute."""
    framer = Framer(MAX)
    assert framer.feed(b"3 <1>") == [b"<1>"]
    out = framer.feed(garbage)
    assert len(out) == 1
    assert isinstance(out[0], FrameError) and out[0].fatal
    assert framer.feed(counted(b"<13>after")) == []


def test_counted_garbage_after_good_frames_in_the_same_feed() -> None:
    """Frames before the point where framing is lost are still delivered, in order."""
    out = Framer(MAX).feed(counted(b"<13>a", b"<13>b") + b"oops 3 <1>")
    assert out[:2] == [b"<13>a", b"<13>b"]
    assert len(out) == 3 and isinstance(out[2], FrameError) and out[2].fatal


def test_counted_overlong_count_is_fatal_before_its_space_arrives() -> None:
    """Ten digits without a SP are already fatal: the framer does not wait for more."""
    framer = Framer(MAX)
    assert framer.feed(b"123456789") == []
    out = framer.feed(b"0")
    assert len(out) == 1 and isinstance(out[0], FrameError) and out[0].fatal


def test_oversize_is_flagged_and_lost_framing_is_not() -> None:
    """The listener counts FrameError.oversize: set for skipped big frames, not for fatal ones."""
    out = Framer(MAX).feed(b"12345678901234 x")
    assert isinstance(out[0], FrameError) and out[0].fatal and not out[0].oversize
    out = Framer(MAX).feed(b"%d " % (MAX + 1) + b"x" * (MAX + 1) + b"3 abc")
    assert isinstance(out[0], FrameError) and out[0].oversize and not out[0].fatal
    assert out[1] == b"abc"


def test_mode_is_fixed_by_the_first_frame() -> None:
    """Octet counting, once detected, stays: a '<' where a count belongs is fatal."""
    out = Framer(MAX).feed(b"5 <13>a<13>b\n")
    assert out[0] == b"<13>a"
    assert isinstance(out[1], FrameError) and out[1].fatal


def test_max_size_must_be_positive() -> None:
    """A framer that could accept no frame is a programming error."""
    with pytest.raises(ValueError, match="max_size"):
        Framer(0)


# --- properties --------------------------------------------------------------------------------

SMALL = 16
LINE = st.binary(max_size=SMALL * 2).map(lambda b: b"<" + b.replace(b"\n", b"").replace(b"\0", b""))
LF_STREAM = st.lists(
    st.tuples(LINE, st.sampled_from([b"\n", b"\r\n", b"\x00", b"\n\n"])), max_size=12
).map(lambda frames: b"".join(line + end for line, end in frames))
# Few distinct bytes, so that counts, blanks, trailers and garbage meet often.
TOKENS = st.lists(
    st.sampled_from([b"1", b"9", b"0", b" ", b"\n", b"\r", b"\x00", b"<", b"x"]), max_size=60
).map(b"".join)
COUNTED_STREAM = st.lists(st.binary(max_size=SMALL * 2), max_size=12).map(
    lambda frames: b"".join(b"%d %s" % (len(f), f) for f in frames)
)


def _split(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(stream)) for c in cuts})
    return [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]


@given(
    st.one_of(LF_STREAM, COUNTED_STREAM, TOKENS, st.binary(max_size=200)),
    st.lists(st.integers(0, 400), max_size=30),
)
def test_any_chunking_gives_the_same_frames(stream: bytes, cuts: list[int]) -> None:
    """Feeding a stream in random chunks yields exactly what feeding it whole yields."""
    whole = Framer(SMALL).feed(stream)
    assert feed_all(Framer(SMALL), _split(stream, cuts)) == whole


@given(st.lists(st.binary(max_size=SMALL), max_size=12), st.lists(st.integers(0, 400)))
def test_counted_round_trip(frames: list[bytes], cuts: list[int]) -> None:
    """Counted frames within the limit come back exactly (empty ones skipped), any chunking."""
    stream = b"".join(b"%d %s" % (len(f), f) for f in frames)
    assert feed_all(Framer(SMALL), _split(stream, cuts)) == [f for f in frames if f]


@given(st.binary(max_size=500), st.lists(st.integers(0, 600)))
def test_pending_stays_bounded(stream: bytes, cuts: list[int]) -> None:
    """Whatever arrives, the framer never holds more than max_size plus a count and its SP."""
    framer = Framer(SMALL)
    for chunk in _split(stream, cuts):
        framer.feed(chunk)
        assert framer.pending <= SMALL + 10


# --- the end of the connection -------------------------------------------------------------------


def test_end_returns_the_last_lf_frame_without_its_trailer() -> None:
    """A line the peer did not end before closing is a frame; a CR before the end is dropped."""
    framer = Framer(MAX)
    assert framer.feed(b"<13>a\n<13>b\r") == [b"<13>a"]
    assert framer.end() == b"<13>b"


@pytest.mark.parametrize("data", [b"", b"\r\n \n", b"<13>a\n", b"<13>a\n\r", b"5 <13>a"])
def test_end_with_nothing_pending_is_none(data: bytes) -> None:
    framer = Framer(MAX)
    framer.feed(data)
    assert framer.end() is None


def test_end_inside_a_counted_frame_is_a_frame_error() -> None:
    framer = Framer(MAX)
    assert framer.feed(b"9 <13>a") == []
    error = framer.end()
    assert isinstance(error, FrameError) and not error.fatal and "closed" in error.reason


def test_end_after_oversize_or_failure_is_none() -> None:
    """What was dropped was already reported: an oversize line being skipped, a lost count."""
    big = Framer(MAX)
    assert big.feed(b"x" * (MAX + 5)) != []
    assert big.end() is None
    lost = Framer(MAX)
    lost.feed(b"12x <13>a")
    assert lost.end() is None
