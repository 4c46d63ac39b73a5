"""Syslog over a stream (RFC 6587): bytes as they arrive -> whole frames.

Owns the framing state of one TCP connection: which of the two RFC 6587 framings the sender uses
(detected once, from the first non-blank byte), the partial frame, and the skipping of frames
over the size limit. Sans-io: ``feed`` takes bytes and returns frames and errors; the stream
(``streams.py``) owns the socket, parses the frames and closes the connection on a fatal error.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FrameError", "Framer"]

# Before the first frame, and between counted frames, senders put stray line ends and padding.
_BLANK = b" \t\r\n\x00"
_DIGITS = b"0123456789"
# RFC 6587 3.4.1: MSG-LEN = NONZERO-DIGIT *DIGIT. Nine digits are already ~1 GB: a longer count
# means the stream is not octet-counted syslog, or we lost our place in it.
_MAX_COUNT_DIGITS = 9
_CR = 13


@dataclass(frozen=True, slots=True)
class FrameError:
    """A frame that was dropped; when ``fatal``, framing is lost and the connection must close.
    ``oversize``: the frame was longer than the size limit (skipped, the stream goes on)."""

    reason: str
    fatal: bool
    oversize: bool = False


class Framer:
    """Splits one connection's byte stream into syslog frames of at most ``max_size`` octets.

    RFC 6587 3.4.1 octet counting:          SYSLOG-FRAME = MSG-LEN SP SYSLOG-MSG
    RFC 6587 3.4.2 non-transparent framing: SYSLOG-FRAME = SYSLOG-MSG TRAILER ; TRAILER = LF
    (NUL is accepted as a TRAILER too, and a CR before it is dropped). The first non-blank byte
    of the connection decides: a digit means octet counting. Frames are returned without count or
    trailer; empty frames are skipped. A frame over ``max_size`` is discarded without being
    buffered, and reported as a non-fatal FrameError.
    """

    def __init__(self, max_size: int) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be at least 1 octet, not {max_size}")
        self._max = max_size
        self._buf = bytearray()  # the start of a frame not yet complete
        self._counted: bool | None = None  # octet counting? None until the first non-blank byte
        self._skip = 0  # octets of an oversize counted frame still to discard
        self._discarding = False  # inside an oversize LF frame: drop through the next trailer
        self._scanned = 0  # LF mode: self._buf holds no trailer before this offset
        self._failed = False

    @property
    def pending(self) -> int:
        """Octets held for an incomplete frame: at most max_size plus its octet count."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes | FrameError]:
        """The frames that ``data`` completes, in order, and a FrameError for each dropped one.

        After a fatal FrameError the framer stays failed and ignores whatever else arrives.
        """
        out: list[bytes | FrameError] = []
        if self._failed:
            return out
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return out
            data = data[self._skip :]
            self._skip = 0
        if self._discarding:
            end = _find_trailer(data, 0)
            if end < 0:
                return out
            data = data[end + 1 :]
            self._discarding = False
        if self._buf:
            self._buf += data
            pos = self._scan(self._buf, out)
            del self._buf[:pos]
        else:
            # Nothing pending, the usual case: scan the caller's bytes without copying them.
            pos = self._scan(data, out)
            self._buf += memoryview(data)[pos:]
        return out

    def end(self) -> bytes | FrameError | None:
        """What is left when the connection closes: the last LF-framed frame, sent without its
        trailer; a FrameError for an octet-counted frame cut short; None when nothing is
        pending (or what was pending was already reported: oversize, framing lost)."""
        pending = bytes(self._buf)
        self._buf.clear()
        if self._failed or not pending.strip(_BLANK):
            return None
        if self._counted:
            return FrameError("connection closed inside an octet-counted frame", False)
        # At most max_size octets and a CR: the scan reports and drops anything longer.
        return pending[:-1] if pending[-1] == _CR else pending

    def _scan(self, buf: bytes | bytearray, out: list[bytes | FrameError]) -> int:
        """Append the frames complete in ``buf`` to ``out``; return how many octets it used."""
        pos = 0
        if self._counted is None:
            pos = _skip_blanks(buf, 0)
            if pos == len(buf):
                return pos
            self._counted = buf[pos] in _DIGITS
        # Frames are copied out of a view: one copy, whether buf is bytes or bytearray.
        with memoryview(buf) as view:
            if self._counted:
                return self._scan_counted(buf, view, pos, out)
            return self._scan_lines(buf, view, pos, out)

    def _scan_counted(
        self, buf: bytes | bytearray, view: memoryview, pos: int, out: list[bytes | FrameError]
    ) -> int:
        size = len(buf)
        while True:
            if pos < size and buf[pos] in _BLANK:
                pos = _skip_blanks(buf, pos)
            if pos == size:
                return pos
            limit = pos + _MAX_COUNT_DIGITS + 1
            sp = buf.find(b" ", pos, limit)
            count = bytes(buf[pos : sp if sp >= 0 else limit])
            if not count.isdigit() or sp < 0:
                if sp < 0 and len(count) <= _MAX_COUNT_DIGITS and count.isdigit():
                    return pos  # the count is still arriving
                self._fail(out, count)
                return size
            length = int(count)
            start = sp + 1
            if length > self._max:
                out.append(FrameError(f"frame of {length} octets over the size limit", False, True))
                if size - start < length:
                    self._skip = length - (size - start)
                    return size
                pos = start + length
            elif size - start < length:
                return pos
            else:
                pos = start + length
                if length:
                    out.append(view[start:pos].tobytes())

    def _scan_lines(
        self, buf: bytes | bytearray, view: memoryview, pos: int, out: list[bytes | FrameError]
    ) -> int:
        size = len(buf)
        search = max(pos, self._scanned)
        # Each trailer byte is searched for again only once the scan has passed the last one
        # found, and never once known absent: many frames in one feed, or a frame arriving
        # byte by byte, stay linear.
        lf = buf.find(b"\n", search)
        nul = buf.find(b"\x00", search)
        while True:
            if 0 <= lf < search:
                lf = buf.find(b"\n", search)
            if 0 <= nul < search:
                nul = buf.find(b"\x00", search)
            end = lf if nul < 0 or 0 <= lf < nul else nul
            if end < 0:
                break
            stop = end - 1 if end > pos and buf[end - 1] == _CR else end
            if stop - pos > self._max:
                out.append(_LINE_OVERSIZE)
            elif stop > pos:
                out.append(view[pos:stop].tobytes())
            pos = search = end + 1
        pending = size - pos
        # A frame of exactly max_size octets may still be waiting for the LF after its CR.
        if pending > self._max + 1 or (pending == self._max + 1 and buf[size - 1] != _CR):
            out.append(_LINE_OVERSIZE)
            self._discarding = True
            self._scanned = 0
            return size
        self._scanned = pending
        return pos

    def _fail(self, out: list[bytes | FrameError], count: bytes) -> None:
        # The reason quotes the count up to its first wrong byte only, so that it does not
        # depend on how the stream was chunked. No "size" in it: the listener counts reasons
        # naming it as oversize frames.
        wrong = next((i for i, byte in enumerate(count) if byte not in _DIGITS), None)
        if wrong is None:
            reason = f"octet count {count[: _MAX_COUNT_DIGITS + 1]!r}... has over 9 digits"
        else:
            reason = f"octet count {count[: wrong + 1]!r} is not a number"
        out.append(FrameError(f"{reason}: framing lost", True))
        self._failed = True


_LINE_OVERSIZE = FrameError("line over the size limit", False, True)


def _skip_blanks(buf: bytes | bytearray, pos: int) -> int:
    size = len(buf)
    while pos < size and buf[pos] in _BLANK:
        pos += 1
    return pos


def _find_trailer(data: bytes, pos: int) -> int:
    """Offset of the first LF or NUL at or after ``pos``; -1 when there is none."""
    lf = data.find(b"\n", pos)
    nul = data.find(b"\x00", pos, lf if lf >= 0 else len(data))
    return nul if nul >= 0 else lf
