"""Syslog parsing: one frame or datagram (bytes) -> SyslogMessage.

Owns the wire grammars: RFC 5424, RFC 3164 and the lenient variants real senders emit (no
hostname, an ISO timestamp, no PRI). Sans-io: no sockets, no clock (the receipt time is passed
in), no logging; bad input raises ParseError. Called by the listeners for every message (the hot
path: precompiled regexes, one match per message; the common RFC 3164 shape by a pattern of its
own, on the bytes) and by ``appliancectl parse``. ``parse_routed`` is the routing gate: it builds
nothing for a message of the common shape that no jail can match (one no jail reads, or one
without any literal its jails' failregexes need); other shapes are parsed, then dropped for
the same reasons.

Control characters are escaped the way rsyslog writes them (``escape_controls``) before any
field is built, so that no field and no filter sees a raw LF, CR, NUL or other control: a
filter's ``.*`` or ``$`` cannot stop at one planted in text an attacker controls (the routing
gate reads a raw header only when it holds none). The daemon and ``appliancectl test-filter``
both read messages through here, so both see the same text.

Over 400 lines and kept whole: the grammars share the escaping, the timestamps and the common
shape's pattern; the framing (RFC 6587) is ``framing.py``'s.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import UTC, datetime
from enum import Enum

from applianced.errors import ParseError
from applianced.rules.message import SyslogMessage

__all__ = ["Dropped", "escape_controls", "message_fields", "parse", "parse_routed", "shape"]

# RFC 3164 4.3.3: a message without a PRI gets facility 1 (user), severity 5 (notice).
_DEFAULT_PRI = 13

# RFC 5424 6.2.1: PRI = "<" PRIVAL ">"; PRIVAL = 1*3DIGIT ; range 0 .. 191
# Any digit run is matched so that "<999>" and "<0013>" are rejected rather than read as text.
_PRI = re.compile(r"<([0-9]+)>")

# RFC 5424 6.2.3 (RFC 3339): FULL-DATE "T" PARTIAL-TIME TIME-OFFSET
#   TIME-SECFRAC = "." 1*6DIGIT; TIME-OFFSET = "Z" / TIME-NUMOFFSET ("+"/"-" hh ":" mm)
# Longer fractions are accepted (and truncated); a missing offset means UTC.
_ISO = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"(?:Z|[+-][0-9]{2}:[0-9]{2})?"
)

# RFC 5424 6: SYSLOG-MSG = HEADER SP STRUCTURED-DATA [SP MSG]
#   HEADER = PRI VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID
#   VERSION = NONZERO-DIGIT 0*2DIGIT
#   each header field is NILVALUE ("-") or 1*nPRINTUSASCII (no SP): HOSTNAME 1*255,
#   APP-NAME 1*48, PROCID 1*128, MSGID 1*32 (_FIELD_LIMITS); a longer one is a ParseError
#   that names it (truncating it could route the message to the wrong jails)
#   STRUCTURED-DATA = NILVALUE / 1*SD-ELEMENT
#   SD-ELEMENT = "[" SD-ID *(SP SD-PARAM) "]"
#   SD-PARAM = PARAM-NAME "=" %d34 PARAM-VALUE %d34   ; '"' '\' ']' escaped as \" \\ \]
#   SD-ID, PARAM-NAME = 1*32PRINTUSASCII except '=', SP, ']', %d34 (a longer one makes the SD
#   malformed: see _parse_5424)
# Possessive quantifiers keep a hostile 64 KiB SD linear.
_FIELD_LIMITS = (("HOSTNAME", 255), ("APP-NAME", 48), ("PROCID", 128), ("MSGID", 32))
_SD_NAME = r'[^= \]"]{1,32}+'
_SD_ELEMENT = rf'\[{_SD_NAME}(?: {_SD_NAME}="(?:[^"\\]++|\\.)*+")*+\]'
_RFC5424_HEADER = r"[1-9][0-9]{0,2} ([^ ]++)" + "".join(
    rf" ([^ ]{{1,{limit}}}+)" for _, limit in _FIELD_LIMITS
)
_RFC5424 = re.compile(rf"{_RFC5424_HEADER} (-|(?:{_SD_ELEMENT})++)", re.ASCII | re.DOTALL)
_RFC5424_HEADER_ONLY = re.compile(_RFC5424_HEADER + " ")
# A VERSION and its SP right after the PRI; "1 " is nearly every RFC 5424 message.
_VERSION = re.compile(r"[1-9][0-9]{0,2} ")

# RFC 3164 4.1.2: TIMESTAMP = Mmm SP dd SP hh:mm:ss, a one-digit day padded with a space.
# Also seen: an unpadded day, a year before the time (network gear), fractional seconds, and an
# RFC 3339 timestamp in its place (rsyslog's RSYSLOG_ForwardFormat).
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS = {name: number for number, name in enumerate(_MONTH_NAMES, 1)}
_BSD_TS = (
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) {1,2}([0-9]{1,2}) (?:([0-9]{4}) )?"
    r"([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,6})[0-9]*)?"
)
# The hot path captures the timestamp whole (one group instead of seven) and converts its text
# through a cache; _BSD_PARTS takes it apart on a cache miss only.
_BSD_PARTS = re.compile(_BSD_TS, re.ASCII)
_BSD_WHOLE = re.sub(r"\((?!\?)", "(?:", _BSD_TS)
# RFC 3164 4.1.3: MSG = TAG CONTENT; in practice TAG ["[" PID "]"] ":" SP CONTENT, where TAG may
# hold '/', '-' and '.' (postfix/submission/smtpd). The colon must end a token, so that an IPv6
# address is never read as a TAG.
_TAG = r"([^ \[\]:]++)(?:\[([^\] ]*+)\])?+:(?: |\Z)"
_TAG_SHAPE = r"[^ \[\]:]++(?:\[[^\] ]*+\])?+:(?: |\Z)"
# After the timestamp the first token is the HOSTNAME unless it already parses as a TAG.
_RFC3164 = re.compile(
    rf"(?:({_BSD_WHOLE})|({_ISO}))(?: |\Z)(?:(?!{_TAG_SHAPE})([^ ]++)(?: |\Z))?(?:{_TAG})?",
    re.ASCII | re.DOTALL,
)
_TAG_ONLY = re.compile(_TAG, re.ASCII)

# The shape nearly every mail server sends: [<PRI>]Mmm dd hh:mm:ss HOST TAG[PID]: MSG. Parsed by
# this simpler pattern first, on the bytes (the general path below costs twice as much); it also
# gives the routing gate the app-name before anything is decoded or built. Every message it
# matches, the general path reads into the same fields (a property test pins it): a valid PRI
# that is not RFC 5424's "1 ", a BSD timestamp without year or fraction, a HOST that cannot be a
# TAG (no ':', '[' or ']'), then the TAG and its ": ". Its pieces decode on their own as the
# whole would: each ends at an ASCII byte, which no UTF-8 sequence spans. Its header holds no
# control character, nor C2 (the lead byte of the C1 controls): escaping leaves it as it is, so
# the gate can read the TAG before the message is escaped, and the match stays valid after.
_COMMON = re.compile(
    rb"(?:<((?:[0-9]{1,2}|0[0-9]{2}|1[0-8][0-9]|19[01]))>)?"
    + rb"((?:"
    + "|".join(_MONTH_NAMES).encode()
    + rb") {1,2}[0-9]{1,2} [0-9]{2}:[0-9]{2}:[0-9]{2}) "
    + rb"([^ \[\]:\x00-\x1f\x7f\xc2]++) ([^ \[\]:\x00-\x1f\x7f\xc2]++)"
    + rb"(?:\[([^\] \x00-\x1f\x7f\xc2]*+)\])?+: ",
)
_COMMON_APP = 4  # the TAG's group
_COMMON_PID = 5

_BOM = "\ufeff"
_TRAILING = b"\n\r\x00"  # cut from the end of a message: line ends and NUL terminators

# The control characters escaped as rsyslog does ("#" and three octal digits, LF -> "#012"): C0
# but TAB, DEL, and C1 (U+0080..U+009F, in UTF-8 the two bytes C2 80..C2 9F; the same bytes that
# are not UTF-8 decode to U+FFFD, no control). TAB stays: it ends no line, and filters read it as
# the whitespace it is ("\s"), as fail2ban does. A message without one (nearly every message) is
# known by a table that maps each control byte, and C2, to NUL: no NUL after it, no control (a
# third of the cost of a deletion or of a regex search). C2 also starts harmless letters
# (U+00A0..U+00BF), which then go through the substitution in vain.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]|\xc2[\x80-\x9f]")
_TO_NUL = bytes(
    0 if (byte < 0x20 and byte != 0x09) or byte in (0x7F, 0xC2) else byte for byte in range(256)
)


def escape_controls(data: bytes) -> bytes:
    """``data`` with every control character but TAB written as rsyslog writes it: "#" and the
    three octal digits of its code point (LF -> "#012", NUL -> "#000", U+0085 -> "#205");
    ``data`` itself when it holds none."""
    if 0 not in data.translate(_TO_NUL):
        return data
    return _CONTROL.sub(_octal, data)


def _octal(m: re.Match[bytes]) -> bytes:
    # The code point is the last byte: the control itself, or the second byte of C2 80..C2 9F.
    return b"#%03o" % m.group()[-1]


def _clean(data: bytes) -> bytes:
    """A message as every parse reads it: trailing line ends and NULs cut, controls escaped."""
    return escape_controls(data.rstrip(_TRAILING))


def parse(
    data: bytes,
    reference: datetime,
    sender: str | None = None,
    transport: str | None = None,
    received_at: float = 0.0,
) -> SyslogMessage:
    """Parse one syslog message; raise ParseError when it cannot be read at all.

    ``reference`` is the receipt time (aware, UTC); it only supplies the year RFC 3164 timestamps
    lack. ``sender``, ``transport`` and ``received_at`` (POSIX seconds) are the listener's
    stamp, passed in so the message is built once (a copy would cost more than the parse).
    """
    data = _clean(data)
    stamp = (sender, transport, received_at)
    m = _COMMON.match(data)
    if m is None:
        return _parse_any(data.decode("utf-8", "replace"), reference, stamp)
    return _common(m, data, reference, stamp)


class Dropped(Enum):
    """Why :func:`parse_routed` built no message."""

    UNREAD = "no jail reads its program"
    HOPELESS = "it holds none of the literals its jails' failregexes need"


def parse_routed(
    data: bytes,
    gate: Callable[[bytes], tuple[bytes, ...] | None],
    reference: datetime,
    sender: str | None = None,
    transport: str | None = None,
    received_at: float = 0.0,
    gate_other_shapes: bool = True,
) -> SyslogMessage | Dropped:
    """:func:`parse`, behind the routing gate that builds nothing for a message of the common
    shape that no jail can match: its program no jail reads, or it holds none of the byte
    strings ``gate`` names for that program (a failregex's required literal is in the text
    only if its UTF-8 bytes are in the escaped message). A message of another shape (RFC
    5424 among them) is parsed whole, since only then is its app-name known, and then dropped
    the same ways: UNREAD when no jail reads that program (asked with its UTF-8 bytes, b""
    for none), HOPELESS when its traditional line (" host app[pid]: msg", which holds the MSG
    and is what a fail2ban filter reads) holds none of the literals: that line is built from
    the fields and need not be in the frame, so only a frame without any literal is dropped,
    and only once its line is found to hold none either. ``gate_other_shapes=False`` returns
    a message of another shape ungated: ``test-filter`` reads a line without a host name
    field (``pop3-login: Info: ...``) as a program's own log line, not by the word the parser
    took for its program."""
    data = data.rstrip(_TRAILING)
    stamp = (sender, transport, received_at)
    m = _COMMON.match(data)
    if m is None:
        data = escape_controls(data)
        message = _parse_any(data.decode("utf-8", "replace"), reference, stamp)
        if not gate_other_shapes:
            return message
        app = message.app_name
        needles = gate(app.encode() if app else b"")
        if needles is None:
            return Dropped.UNREAD
        # A literal in the frame may be in the line; only a frame without any is worth the
        # line's building (the literals may span the fields it joins). Loops, not any(): a
        # generator costs more than the search.
        for needle in needles:
            if needle in data:
                return message
        if needles:
            line = (" " + message.line).encode()
            for needle in needles:
                if needle in line:
                    return message
            return Dropped.HOPELESS
        return message
    needles = gate(m.group(_COMMON_APP))
    if needles is None:
        return Dropped.UNREAD
    # Escaping changes nothing the match covers (see _COMMON): m still reads the escaped bytes.
    data = escape_controls(data)
    # "app[]:" is read as "app:" (no PID), so the line a fail2ban filter reads is not then a
    # substring of the message: no verdict on such a message without parsing it.
    if needles and m.group(_COMMON_PID) != b"":
        for needle in needles:
            if needle in data:
                break
        else:
            return Dropped.HOPELESS
    return _common(m, data, reference, stamp)


_Stamp = tuple[str | None, str | None, float]


def _common(m: re.Match[bytes], data: bytes, reference: datetime, stamp: _Stamp) -> SyslogMessage:
    digits, bsd, host, app, procid = m.groups()
    pri = _DEFAULT_PRI if digits is None else int(digits)
    # Positional: facility, severity, timestamp, hostname, app_name, procid, msgid, SD, msg,
    # then sender, transport, received_at (keywords cost 0.4 us a message on this path).
    return SyslogMessage(
        pri >> 3,
        pri & 7,
        _bsd_timestamp(bsd.decode("ascii"), reference),
        host.decode("utf-8", "replace"),
        app.decode("utf-8", "replace"),
        procid.decode("utf-8", "replace") if procid else None,
        None,
        None,
        data[m.end() :].decode("utf-8", "replace"),
        *stamp,
    )


def _parse_any(text: str, reference: datetime, stamp: _Stamp) -> SyslogMessage:
    """Every shape :func:`parse` accepts, the common one included."""
    if text.startswith("<") and (m := _PRI.match(text)) is not None:
        digits = m.group(1)
        if len(digits) > 3 or int(digits) > 191:
            raise ParseError(f"PRI out of range 0..191: <{digits[:6]}>")
        pri = int(digits)
        pos = m.end()
        if _is_5424(text, pos):
            return _parse_5424(text, pos, pri, stamp)
        has_pri = True
    else:
        pri, pos, has_pri = _DEFAULT_PRI, 0, False
    return _parse_3164(text, pos, pri, has_pri, reference, stamp)


def _is_5424(text: str, pos: int) -> bool:
    """Whether the text after a PRI (at ``pos``) is RFC 5424: VERSION 1, or another VERSION the
    grammar allows when a whole header follows ("<13>42 bytes lost" stays RFC 3164 text, as it
    always was)."""
    if text.startswith("1 ", pos):
        return True
    # A VERSION's SP is among the next three characters: an RFC 3339 timestamp ("2026-")
    # is told apart without a regex.
    return (
        " " in text[pos + 1 : pos + 4]
        and _VERSION.match(text, pos) is not None
        and _RFC5424_HEADER_ONLY.match(text, pos) is not None
    )


def shape(data: bytes) -> str:
    """Which grammar :func:`parse` reads ``data`` by, in words (``appliancectl explain``)."""
    text = _clean(data).decode("utf-8", "replace")
    pri = _PRI.match(text) if text.startswith("<") else None
    pos = 0 if pri is None else pri.end()
    if pri is not None and _is_5424(text, pos):
        return "RFC 5424"
    bsd = _RFC3164.match(text, pos)
    if bsd is not None:
        stamp = "an RFC 3339 timestamp" if bsd.group(1) is None else "a BSD timestamp"
        return f"RFC 3164 with {stamp}" + ("" if pri else ", no PRI")
    if pri is not None:
        return "a PRI without a timestamp (RFC 3164 4.3.3): TAG and text"
    return "no syslog header: the text kept whole as the message"


def _parse_5424(text: str, pos: int, pri: int, stamp: _Stamp) -> SyslogMessage:
    m = _RFC5424.match(text, pos)
    end = -1 if m is None else m.end()
    if m is not None and (end == len(text) or text[end] == " "):
        ts, host, app, procid, msgid, sd = m.groups()
        msg = text[end + 1 :]
    else:
        # A header with a malformed STRUCTURED-DATA: keep the text rather than lose the message.
        m = _RFC5424_HEADER_ONLY.match(text, pos)
        if m is None:
            raise _header_error(text, pos)
        ts, host, app, procid, msgid = m.groups()
        sd = "-"
        msg = text[m.end() :]
    if msg.startswith(_BOM):
        msg = msg[1:]
    elif msg.startswith(" "):
        # rsyslog's RSYSLOG_SyslogProtocol23Format writes "%STRUCTURED-DATA% %msg%", and the msg
        # of a message it read as RFC 3164 keeps the SP that followed the TAG's ":" (its
        # traditional templates write "%syslogtag%%msg:::sp-if-no-1st-sp%%msg%" for that reason;
        # mmrm1stspace and remove.msgFirstSpace drop it): "- -  imap-login: ...". By the
        # grammar that SP is the MSG's first character, but it separated the TAG and is no part
        # of what the program wrote; anchored filters ("^imap-login") would never match it.
        msg = msg[1:]
    # Positional (field order of SyslogMessage): keywords cost 0.4 us a message on this path.
    return SyslogMessage(
        pri >> 3,
        pri & 7,
        None if ts == "-" else _iso_datetime(ts),
        None if host == "-" else host,
        None if app == "-" else app,
        None if procid == "-" else procid,
        None if msgid == "-" else msgid,
        None if sd == "-" else sd,
        msg,
        *stamp,
    )


def _header_error(text: str, pos: int) -> ParseError:
    """Why an RFC 5424 header does not read: a field longer than the RFC allows, or too few."""
    fields = text[pos:].split(" ", 6)[2:6]
    for (name, limit), value in zip(_FIELD_LIMITS, fields, strict=False):
        if len(value) > limit:
            return ParseError(
                f"RFC 5424 {name} of {len(value)} characters, over the {limit} RFC 5424 "
                f"allows: {value[:40]}..."
            )
    return ParseError("truncated RFC 5424 header")


def _parse_3164(
    text: str, pos: int, pri: int, has_pri: bool, reference: datetime, stamp: _Stamp
) -> SyslogMessage:
    timestamp: datetime | None = None
    host = app = procid = None
    m = _RFC3164.match(text, pos)
    if m is not None:
        bsd, iso, host, app, procid = m.groups()
        timestamp = _bsd_timestamp(bsd, reference) if bsd is not None else _iso_datetime(iso)
        msg = text[m.end() :]
    elif has_pri:
        # No timestamp: most likely "TAG: MSG" straight after the PRI.
        t = _TAG_ONLY.match(text, pos)
        if t is not None:
            app, procid = t.groups()
            pos = t.end()
        msg = text[pos:]
    else:
        # Neither PRI nor timestamp: arbitrary text, kept whole.
        msg = text
    # Positional: facility, severity, timestamp, hostname, app_name, procid, msgid, SD, msg,
    # then sender, transport, received_at.
    return SyslogMessage(
        pri >> 3, pri & 7, timestamp, host, app, procid or None, None, None, msg, *stamp
    )


def _iso_datetime(text: str) -> datetime | None:
    """An RFC 3339 timestamp, aware (UTC when it names no offset); None when invalid."""
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        # RFC 5424 allows a leap second (":60"), which datetime cannot hold.
        try:
            ts = datetime.fromisoformat(text.upper().replace(":60", ":59", 1))
        except ValueError:
            return None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


# Messages come in bursts sharing a timestamp (one a second per sender), and building the
# datetime was the costliest step of a parse: a cache hit on the text costs a tenth of it. The
# reference is part of the key; the listeners hand the same object for a whole second.
@functools.lru_cache(maxsize=1024)
def _bsd_timestamp(stamp: str, reference: datetime) -> datetime | None:
    """An RFC 3164 timestamp in UTC, in the year that puts it nearest to ``reference``."""
    parts = _BSD_PARTS.fullmatch(stamp)
    if parts is None:  # never: the caller's regex matched the same grammar
        return None
    mon, day, year, hh, mm, ss, frac = parts.groups()
    month = _MONTHS[mon]
    if year is not None:
        return _bsd_in_year(int(year), month, day, hh, mm, ss, frac)
    if -4 <= month - reference.month <= 4:
        # Less than half a year apart whatever the days: the receipt year is the nearest.
        ts = _bsd_in_year(reference.year, month, day, hh, mm, ss, frac)
        if ts is not None:
            return ts
    # Near New Year, or 29 February outside a leap year: the nearest year where the date exists.
    candidates = [
        c
        for y in (reference.year - 1, reference.year, reference.year + 1)
        if (c := _bsd_in_year(y, month, day, hh, mm, ss, frac)) is not None
    ]
    return min(candidates, key=lambda c: abs(c - reference), default=None)


def _bsd_in_year(
    year: int, month: int, day: str, hh: str, mm: str, ss: str, frac: str | None
) -> datetime | None:
    us = int(frac.ljust(6, "0")) if frac else 0
    try:
        return datetime(year, month, int(day), int(hh), int(mm), int(ss), us, tzinfo=UTC)
    except ValueError:  # 31 November, 25:00:00, 29 February in a common year
        return None


def message_fields(msg: SyslogMessage) -> dict[str, object]:
    """The parsed fields as plain JSON-ready values (timestamp as ISO 8601), for --json output."""
    return {
        "facility": msg.facility,
        "severity": msg.severity,
        "timestamp": msg.timestamp.isoformat() if msg.timestamp is not None else None,
        "hostname": msg.hostname,
        "app_name": msg.app_name,
        "procid": msg.procid,
        "msgid": msg.msgid,
        "structured_data": msg.structured_data,
        "msg": msg.msg,
    }
