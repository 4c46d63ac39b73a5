"""The sans-io syslog parser: RFC 5424, RFC 3164 and the lenient forms, from the data files."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from applianced.errors import ParseError
from applianced.receiver import parse as parse_module
from applianced.receiver.parse import (
    Dropped,
    escape_controls,
    message_fields,
    parse,
    parse_routed,
)
from applianced.rules.jail import ProgramSelector
from applianced.rules.message import SyslogMessage

DATA = Path(__file__).parent.parent / "data"
REF = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
FIELDS = [
    "facility",
    "severity",
    "timestamp",
    "hostname",
    "app_name",
    "procid",
    "msgid",
    "structured_data",
    "msg",
]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def _wire_rows() -> list[Any]:
    rows = [json.loads(line) for line in (DATA / "syslog-wire.jsonl").read_text().splitlines()]
    return [pytest.param(row["wire"], row["expect"], id=row["desc"]) for row in rows]


def _bad_cases() -> list[Any]:
    """The literal cases of syslog-bad.txt, each named by the comment above it."""
    cases, comment = [], ""
    for line in (DATA / "syslog-bad.txt").read_text().splitlines():
        if line.startswith("#"):
            comment = line.lstrip("# ")
        elif line:
            cases.append(pytest.param(line.encode(), id=comment[:40] or line))
    return cases


BAD = {line.values[0]: line for line in _bad_cases()}


# --- the data files ----------------------------------------------------------------------------


@pytest.mark.parametrize(("wire", "expect"), _wire_rows())
def test_wire_corpus(wire: str, expect: dict[str, object]) -> None:
    """Every field a row of syslog-wire.jsonl expects is what the parser returns."""
    fields = message_fields(parse(wire.encode(), REF))
    assert {key: fields[key] for key in expect} == expect


@pytest.mark.parametrize("data", _bad_cases())
def test_bad_corpus_never_crashes(data: bytes) -> None:
    """Each literal case of syslog-bad.txt gives a message or a ParseError, nothing else."""
    try:
        assert isinstance(parse(data, REF), SyslogMessage)
    except ParseError as e:
        assert str(e)


def test_bad_corpus_holds_the_cases_pinned_below() -> None:
    """syslog-bad.txt still holds the literal cases whose outcome the tests below pin."""
    assert set(BAD) == {
        b"just some text",
        b"<999>Nov 22 10:00:01 mx app: x",
        b"<34>1 2026-11-22T10:00:01Z",
    }


def test_text_without_pri_or_timestamp_is_kept_whole() -> None:
    """Plain text becomes a default-PRI (user.notice) message whose msg is the whole text."""
    msg = parse(b"just some text", REF)
    assert (msg.facility, msg.severity) == (1, 5)
    assert (msg.timestamp, msg.hostname, msg.app_name, msg.procid) == (None, None, None, None)
    assert msg.msg == "just some text"


def test_pri_out_of_range_is_rejected() -> None:
    """A PRI over 191 is a ParseError naming the PRI."""
    with pytest.raises(ParseError, match="PRI"):
        parse(b"<999>Nov 22 10:00:01 mx app: x", REF)


def test_truncated_rfc5424_header_is_rejected() -> None:
    """An RFC 5424 header that stops after the timestamp is a ParseError."""
    with pytest.raises(ParseError, match="truncated"):
        parse(b"<34>1 2026-11-22T10:00:01Z", REF)


def test_invalid_utf8_is_replaced() -> None:
    """Bytes that are not UTF-8 become U+FFFD and the rest of the message survives."""
    msg = parse(b"<38>Nov 22 10:00:01 mx sshd[1]: user \xff\xfe\xc3 from 203.0.113.7", REF)
    assert msg.app_name == "sshd"
    assert msg.msg == "user \ufffd\ufffd\ufffd from 203.0.113.7"


def test_control_characters_inside_are_escaped_and_trailing_line_ends_go() -> None:
    """Interior C0 controls (TAB aside), DEL and C1 controls become '#' and three octal digits
    of their code point, as rsyslog writes them; trailing NUL, CR and LF are cut."""
    wire = (
        b"<38>Nov 22 10:00:01 mx sshd[1]: a\nb\rc\x00d\x1be\x7ff\xc2\x85g\xc2\x9fh\ti\x01\r\n\x00"
    )
    msg = parse(wire, REF)
    assert msg.msg == "a#012b#015c#000d#033e#177f#205g#237h\ti#001"


@pytest.mark.parametrize(
    ("wire", "field", "expected"),
    [
        (b"<38>Nov 22 10:00:01 m\nx sshd[1]: x", "hostname", "m#012x"),
        (b"<38>Nov 22 10:00:01 mx ss\x00hd[1]: x", "app_name", "ss#000hd"),
        (b"<38>1 2026-11-22T10:00:01Z mx sshd 1 - - a\rb", "msg", "a#015b"),
        (
            b'<38>1 2026-11-22T10:00:01Z mx sshd 1 - [x@1 k="\n"] a',
            "structured_data",
            '[x@1 k="#012"]',
        ),
        (b"<38>2026-11-22T10:00:01Z mx sshd: a\x0bb", "msg", "a#013b"),
        (b"no header at all\x1c here", "msg", "no header at all#034 here"),
    ],
)
def test_control_characters_are_escaped_in_every_field_and_shape(
    wire: bytes, field: str, expected: str
) -> None:
    """Escaping comes before the header is read: no shape and no field keeps a raw control."""
    assert getattr(parse(wire, REF), field) == expected


def test_c1_controls_are_escaped_only_where_utf8_decodes_them() -> None:
    """U+0080..U+009F (UTF-8 C2 80..C2 9F) are escaped like C0; the same bytes that are not
    UTF-8 become U+FFFD, which is no control; other Latin-1 letters stay as they are."""
    msg = parse(b"<38>Nov 22 10:00:01 mx sshd[1]: \xe0\xc2\x85 \x85 \xc2 \xc2\xa0 \xc3\xa9", REF)
    assert msg.msg == "\ufffd#205 \ufffd \ufffd \xa0 \xe9"


def test_escaping_is_idempotent_and_leaves_clean_bytes_alone() -> None:
    """Escaped text has no control left to escape; clean bytes come back as the same object."""
    clean = b"Failed password for root from 203.0.113.7 port 22 ssh2 \xc2\xa0\t"
    assert escape_controls(clean) is clean
    once = escape_controls(b"a\nb\x00\xc2\x85")
    assert once == b"a#012b#000#205"
    assert escape_controls(once) is once


def test_64_kib_message_parses() -> None:
    """A 64 KiB message is parsed whole: the size limit belongs to the framer and listener."""
    body = "x" * (64 * 1024)
    msg = parse(f"<38>Nov 22 10:00:01 mx sshd[1]: {body}".encode(), REF)
    assert msg.msg == body


def test_64_kib_hostile_structured_data_is_not_slow() -> None:
    """A 64 KiB unterminated SD-ELEMENT falls back to text (and does not backtrack for long)."""
    sd = '[a@1 k="' + "\\]" * 32 * 1024
    msg = parse(f"<13>1 - mx app - - {sd}".encode(), REF)
    assert msg.structured_data is None
    assert msg.msg == sd


# --- PRI ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "facility", "severity"),
    [(b"<0>", 0, 0), (b"<191>", 23, 7), (b"<13>", 1, 5), (b"<007>", 0, 7)],
)
def test_pri_splits_into_facility_and_severity(wire: bytes, facility: int, severity: int) -> None:
    """PRI = facility * 8 + severity, over the whole 0..191 range."""
    msg = parse(wire + b"Nov 22 10:00:01 mx app: x", REF)
    assert (msg.facility, msg.severity) == (facility, severity)


@pytest.mark.parametrize("pri", [b"<192>", b"<1000>", b"<0013>"])
def test_pri_beyond_three_digits_or_191_is_rejected(pri: bytes) -> None:
    """PRIVAL is 1*3DIGIT in 0..191; anything else after '<' digits '>' is a ParseError."""
    with pytest.raises(ParseError):
        parse(pri + b"Nov 22 10:00:01 mx app: x", REF)


def test_plain_log_file_line_gets_default_pri() -> None:
    """A log-file line (no PRI) is RFC 3164 with PRI 13: facility user, severity notice."""
    msg = parse(b"Nov 22 10:00:01 mx postfix/smtpd[1234]: warning: unknown[203.0.113.7]", REF)
    assert (msg.facility, msg.severity) == (1, 5)
    assert (msg.hostname, msg.app_name, msg.procid) == ("mx", "postfix/smtpd", "1234")
    assert msg.msg == "warning: unknown[203.0.113.7]"
    assert msg.timestamp == datetime(2026, 11, 22, 10, 0, 1, tzinfo=UTC)


def test_result_is_not_stamped() -> None:
    """sender, transport and received_at are left for the listener to stamp."""
    msg = parse(b"<38>Nov 22 10:00:01 mx sshd[1]: x", REF)
    assert (msg.sender, msg.transport, msg.received_at) == (None, None, 0.0)


# --- RFC 3164: hostname, TAG, PID --------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "hostname", "app_name", "procid", "text"),
    [
        (b"<30>Nov 22 10:03:01 kerio-connect: Relay x", None, "kerio-connect", None, "Relay x"),
        (b"<30>Nov 22 10:03:01 sshd[42]: Failed x", None, "sshd", "42", "Failed x"),
        (b"<30>Nov 22 10:03:01 mx dovecot: imap-login: x", "mx", "dovecot", None, "imap-login: x"),
        (
            b"<30>Nov 22 10:03:01 mx postfix/submission/smtpd[2001]: x",
            "mx",
            "postfix/submission/smtpd",
            "2001",
            "x",
        ),
        (b"<30>Nov 22 10:03:01 2001:db8::1 sshd[1]: x", "2001:db8::1", "sshd", "1", "x"),
        (b"<30>Nov 22 10:03:01 mx free text", "mx", None, None, "free text"),
        (b"<30>Nov 22 10:03:01 mx app:", "mx", "app", None, ""),
        (b"<30>Nov 22 10:03:01 mx app[]: x", "mx", "app", None, "x"),
        (b"<30>Nov 22 10:03:01 mx", "mx", None, None, ""),
        (b"<30>Nov 22 10:03:01", None, None, None, ""),
    ],
)
def test_rfc3164_hostname_and_tag(
    wire: bytes, hostname: str | None, app_name: str | None, procid: str | None, text: str
) -> None:
    """The first token is the HOSTNAME unless it is already a TAG ('app:' or 'app[pid]:')."""
    msg = parse(wire, REF)
    assert (msg.hostname, msg.app_name, msg.procid, msg.msg) == (hostname, app_name, procid, text)


def test_pri_without_timestamp_reads_tag() -> None:
    """PRI then 'TAG[PID]: MSG' with no timestamp: best effort, no timestamp, no hostname."""
    msg = parse(b"<13>sshd[7]: Failed password", REF)
    assert (msg.timestamp, msg.hostname, msg.app_name, msg.procid) == (None, None, "sshd", "7")
    assert msg.msg == "Failed password"


def test_pri_without_timestamp_or_tag_keeps_the_rest() -> None:
    """PRI then free text: app_name None and msg is everything after the PRI."""
    msg = parse(b"<13>garbage here", REF)
    assert (msg.timestamp, msg.hostname, msg.app_name) == (None, None, None)
    assert msg.msg == "garbage here"


def test_single_digit_day_padded_or_not() -> None:
    """'Nov  2' (RFC 3164 padding) and 'Nov 2' (common mistake) are the same day."""
    padded = parse(b"<13>Nov  2 07:05:09 mx a: x", REF)
    unpadded = parse(b"<13>Nov 2 07:05:09 mx a: x", REF)
    assert padded.timestamp == unpadded.timestamp == datetime(2026, 11, 2, 7, 5, 9, tzinfo=UTC)
    assert padded.hostname == unpadded.hostname == "mx"


def test_bsd_timestamp_with_year_and_fraction() -> None:
    """Network gear's 'Mmm dd yyyy hh:mm:ss.fff' keeps its own year and the fraction."""
    msg = parse(b"<13>Nov 22 2024 10:00:01.25 fw app: x", REF)
    assert msg.timestamp == datetime(2024, 11, 22, 10, 0, 1, 250000, tzinfo=UTC)
    assert msg.hostname == "fw"


def test_impossible_bsd_date_gives_no_timestamp() -> None:
    """31 November has no datetime: timestamp None, the rest still parsed."""
    msg = parse(b"<13>Nov 31 10:00:01 mx app: x", REF)
    assert msg.timestamp is None
    assert (msg.hostname, msg.app_name, msg.msg) == ("mx", "app", "x")


# --- timestamps: year inference and time zones -------------------------------------------------


@pytest.mark.parametrize(
    ("stamp", "received", "expected_year"),
    [
        ("Dec 31 23:59:59", datetime(2027, 1, 1, 0, 0, 5, tzinfo=UTC), 2026),
        ("Jan  1 00:00:01", datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC), 2027),
        ("Nov 22 10:00:01", datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC), 2026),
        ("Jul 15 00:00:00", datetime(2026, 1, 15, 0, 0, 0, tzinfo=UTC), 2026),
        ("Jul 20 00:00:00", datetime(2026, 1, 15, 0, 0, 0, tzinfo=UTC), 2025),
        ("Feb 29 12:00:00", datetime(2029, 1, 10, tzinfo=UTC), 2028),
    ],
)
def test_year_is_the_one_nearest_to_receipt(
    stamp: str, received: datetime, expected_year: int
) -> None:
    """RFC 3164 has no year: the one putting the timestamp nearest the receipt time is chosen."""
    msg = parse(f"<13>{stamp} mx app: x".encode(), received)
    assert msg.timestamp is not None
    assert msg.timestamp.year == expected_year


def test_year_inference_is_nearest_for_every_month() -> None:
    """For each month and receipt month, no other year is nearer than the chosen one."""
    for received_month in range(1, 13):
        received = datetime(2026, received_month, 15, 12, tzinfo=UTC)
        for month in MONTHS:
            for day in (1, 28):
                ts = parse(f"<13>{month} {day:2d} 00:00:00 h a: x".encode(), received).timestamp
                assert ts is not None
                distance = abs(ts - received)
                for other in (ts.year - 1, ts.year + 1):
                    assert abs(ts.replace(year=other) - received) >= distance


def test_bsd_timestamp_is_aware_utc() -> None:
    """RFC 3164 timestamps carry no zone: they are taken as UTC, never naive."""
    msg = parse(b"<13>Nov 22 10:00:01 mx app: x", REF)
    assert msg.timestamp is not None
    assert msg.timestamp.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2026-11-22T10:00:01Z", datetime(2026, 11, 22, 10, 0, 1, tzinfo=UTC)),
        ("2026-11-22T10:00:01+01:00", datetime(2026, 11, 22, 9, 0, 1, tzinfo=UTC)),
        ("2026-11-22T10:00:01.003-05:30", datetime(2026, 11, 22, 15, 30, 1, 3000, tzinfo=UTC)),
        ("2026-11-22T10:00:01.123456789Z", datetime(2026, 11, 22, 10, 0, 1, 123456, tzinfo=UTC)),
        ("2026-11-22T23:59:60Z", datetime(2026, 11, 22, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_rfc5424_time_zones_and_fractions(stamp: str, expected: datetime) -> None:
    """RFC 5424 timestamps keep their offset and fraction; a leap second is clamped to :59."""
    msg = parse(f"<13>1 {stamp} mx app - - -".encode(), REF)
    assert msg.timestamp == expected
    assert msg.timestamp is not None and msg.timestamp.tzinfo is not None


def test_offset_is_kept_not_converted() -> None:
    """'+01:00' stays '+01:00' in the message (display), while comparing equal to UTC."""
    msg = parse(b"<38>2026-11-22T10:00:01.123456+01:00 mx sshd[999]: x", REF)
    assert message_fields(msg)["timestamp"] == "2026-11-22T10:00:01.123456+01:00"


def test_iso_timestamp_without_offset_in_rfc3164_is_utc() -> None:
    """An ISO timestamp with no offset in an RFC 3164 message is taken as UTC."""
    msg = parse(b"<38>2026-11-22T10:00:01 mx sshd[9]: x", REF)
    assert msg.timestamp == datetime(2026, 11, 22, 10, 0, 1, tzinfo=UTC)
    assert (msg.hostname, msg.app_name, msg.procid) == ("mx", "sshd", "9")


def test_unreadable_rfc5424_timestamp_is_none() -> None:
    """A nonsense RFC 5424 TIMESTAMP is dropped (display only), not the message."""
    msg = parse(b"<13>1 yesterday mx app - - - x", REF)
    assert msg.timestamp is None
    assert (msg.hostname, msg.msg) == ("mx", "x")


# --- RFC 5424 ----------------------------------------------------------------------------------


def test_rfc5424_absent_msg_is_empty() -> None:
    """No MSG after the STRUCTURED-DATA gives msg ''."""
    assert parse(b'<13>1 - mx app 12 ID47 [a@1 k="v"]', REF).msg == ""
    assert parse(b"<13>1 - mx app 12 ID47 - ", REF).msg == ""


def test_rfc5424_bom_only_at_the_start_is_stripped() -> None:
    """The UTF-8 BOM that marks MSG-UTF8 is removed; one later in the text is content."""
    msg = parse("<13>1 - mx app - - - \ufeffa\ufeffb".encode(), REF)
    assert msg.msg == "a\ufeffb"


def test_rfc5424_structured_data_kept_raw_with_escapes() -> None:
    """Several SD-ELEMENTs with escaped ']' '"' and '\\' come back exactly as sent."""
    sd = r'[a@1 k="x\]y\"z\\" j=""][b@1][c@1 k="] unescaped"]'
    msg = parse(f"<13>1 - mx app - - {sd} the text".encode(), REF)
    assert msg.structured_data == sd
    assert msg.msg == "the text"


def test_rfc5424_malformed_sd_keeps_the_text() -> None:
    """A broken STRUCTURED-DATA is not fatal: SD None, the text after MSGID becomes msg."""
    msg = parse(b'<13>1 - mx app - - [no-close k="v" message', REF)
    assert msg.structured_data is None
    assert msg.msg == '[no-close k="v" message'
    no_sd = parse(b"<13>1 - mx app - - message without sd", REF)
    assert (no_sd.structured_data, no_sd.msg) == (None, "message without sd")


@pytest.mark.parametrize("wire", [b"<13>1 ", b"<13>1 - - - - -", b"<13>1 - mx app 1"])
def test_rfc5424_short_headers_are_rejected(wire: bytes) -> None:
    """Fewer than the six header fields plus SD is a truncated header."""
    with pytest.raises(ParseError):
        parse(wire, REF)


@pytest.mark.parametrize("version", ["2", "9", "10", "99", "999"])
def test_rfc5424_every_version_the_grammar_allows_is_rfc5424(version: str) -> None:
    """VERSION = NONZERO-DIGIT 0*2DIGIT: 2 or 999 is read as RFC 5424 as 1 is, not as text."""
    msg = parse(f"<13>{version} - mx sshd 42 - - Failed password".encode(), REF)
    assert (msg.hostname, msg.app_name, msg.procid, msg.msg) == (
        "mx",
        "sshd",
        "42",
        "Failed password",
    )


@pytest.mark.parametrize(
    "wire", [b"<13>42 bytes lost", b"<13>1000 - mx sshd - - - x", b"<13>01 - mx a - - - x"]
)
def test_a_number_that_is_no_version_or_starts_no_header_stays_rfc3164_text(wire: bytes) -> None:
    """A VERSION other than 1 counts only with a whole header after it; 1000 and 01 are none."""
    assert parse(wire, REF).msgid is None


@pytest.mark.parametrize(
    ("field", "limit", "wire"),
    [
        ("HOSTNAME", 255, "<13>1 - {} app - - - x"),
        ("APP-NAME", 48, "<13>1 - mx {} - - - x"),
        ("PROCID", 128, "<13>1 - mx app {} - - x"),
        ("MSGID", 32, "<13>1 - mx app - {} - x"),
    ],
)
def test_rfc5424_field_lengths_are_the_rfc_s(field: str, limit: int, wire: str) -> None:
    """A header field of its RFC 5424 length parses; one character more is a ParseError that
    names the field and its limit (never truncated: a cut APP-NAME would pick other jails)."""
    assert parse(wire.format("a" * limit).encode(), REF).msg == "x"
    with pytest.raises(
        ParseError, match=f"RFC 5424 {field} of {limit + 1} characters, over the {limit}"
    ):
        parse(wire.format("a" * (limit + 1)).encode(), REF)


def test_rfc5424_sd_name_over_32_characters_makes_the_sd_malformed() -> None:
    """SD-ID and PARAM-NAME are 1*32: a longer one is no STRUCTURED-DATA, kept as text."""
    ok = parse(f'<13>1 - mx app - - [{"i" * 32} {"p" * 32}="v"] x'.encode(), REF)
    assert (ok.structured_data, ok.msg) == (f'[{"i" * 32} {"p" * 32}="v"]', "x")
    long_id = parse(f"<13>1 - mx app - - [{'i' * 33}] x".encode(), REF)
    assert (long_id.structured_data, long_id.msg) == (None, f"[{'i' * 33}] x")
    long_param = parse(f'<13>1 - mx app - - [i {"p" * 33}="v"] x'.encode(), REF)
    assert long_param.structured_data is None


def test_rfc5424_msg_loses_the_one_space_rsyslog_keeps_after_the_tag() -> None:
    """rsyslog's RSYSLOG_SyslogProtocol23Format sends "-  MSG" (its msg keeps the SP after the
    legacy TAG): one SP goes, as the SP after "TAG:" goes in RFC 3164; a second one stays."""
    assert parse(b"<13>1 - mx dovecot - - -  imap-login: x", REF).msg == "imap-login: x"
    assert parse(b"<13>1 - mx dovecot - - -   two", REF).msg == " two"


def test_rfc5424_fields_and_message_fields() -> None:
    """message_fields gives exactly the nine parsed fields, timestamp in ISO 8601."""
    msg = parse(b"<165>1 2026-11-22T10:00:01.003Z mx.example.org evntslog - ID47 - hi", REF)
    assert message_fields(msg) == {
        "facility": 20,
        "severity": 5,
        "timestamp": "2026-11-22T10:00:01.003000+00:00",
        "hostname": "mx.example.org",
        "app_name": "evntslog",
        "procid": None,
        "msgid": "ID47",
        "structured_data": None,
        "msg": "hi",
    }
    assert list(message_fields(msg)) == FIELDS
    assert json.dumps(message_fields(msg))


# --- properties --------------------------------------------------------------------------------

PREFIXES = st.sampled_from(
    [
        b"",
        b"<",
        b"<13>",
        b"<191>",
        b"<13>1 ",
        b"<13>1 - - - - - ",
        b"<13>Nov 22 10:00:01 ",
        b"<13>2026-11-22T10:00:01Z ",
        b"Nov  2 10:00:01 mx ",
        b'<13>1 - h a p m [x@1 k="',
    ]
)


@given(st.binary(max_size=300))
def test_any_bytes_give_a_message_or_parse_error(data: bytes) -> None:
    """Arbitrary bytes never raise anything but ParseError."""
    with contextlib.suppress(ParseError):
        parse(data, REF)


@given(PREFIXES, st.binary(max_size=200))
def test_syslog_like_bytes_give_a_message_or_parse_error(prefix: bytes, tail: bytes) -> None:
    """Bytes that start like syslog (so reach every branch) never raise but ParseError."""
    try:
        msg = parse(prefix + tail, REF)
    except ParseError:
        return
    assert msg.timestamp is None or msg.timestamp.tzinfo is not None
    assert 0 <= msg.facility <= 23 and 0 <= msg.severity <= 7


_CONTROLS = {*map(chr, range(0x20)), "\x7f", *map(chr, range(0x80, 0xA0))} - {"\t"}


@given(PREFIXES, st.binary(max_size=200))
@example(b"<13>Nov 22 10:00:01 mx ", b"sshd\x00[1]: \xc2\x85\n")
def test_no_parsed_field_holds_a_control_character(prefix: bytes, tail: bytes) -> None:
    """Whatever the bytes, no text a filter or an operator reads holds a control but TAB."""
    try:
        msg = parse(prefix + tail, REF)
    except ParseError:
        return
    for value in (msg.hostname, msg.app_name, msg.procid, msg.msgid, msg.structured_data, msg.msg):
        assert value is None or not _CONTROLS.intersection(value), value


TOKEN = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="[]:"),
    min_size=1,
    max_size=20,
)


@given(
    pri=st.integers(0, 191),
    when=st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2098, 12, 31)),
    host=st.one_of(st.none(), TOKEN),
    tag=TOKEN,
    pid=st.one_of(st.none(), st.integers(1, 99999).map(str)),
    text=st.text(max_size=80).map(lambda s: s.rstrip("\r\n\x00")),
)
def test_rfc3164_round_trip(
    pri: int, when: datetime, host: str | None, tag: str, pid: str | None, text: str
) -> None:
    """A well-formed RFC 3164 message, with or without hostname, parses back to its parts (the
    text with its control characters escaped)."""
    when = when.replace(microsecond=0, tzinfo=UTC)
    stamp = f"{when:%b} {when.day:2d} {when:%H:%M:%S}"
    head = f"{host} " if host else ""
    wire = f"<{pri}>{stamp} {head}{tag}{f'[{pid}]' if pid else ''}: {text}"
    msg = parse(wire.encode(), when + timedelta(seconds=30))
    assert (msg.facility, msg.severity, msg.timestamp) == (pri >> 3, pri & 7, when)
    escaped = escape_controls(text.encode()).decode()
    assert (msg.hostname, msg.app_name, msg.procid, msg.msg) == (host, tag, pid, escaped)


# --- the common shape: a fast path that must read every message as the general path does -----

# A header near the common shape: each piece is valid, except one or two drawn from that piece's
# edge cases, so that the examples fall on both sides of every condition of _COMMON_SHAPE.
_TOKEN = st.text(st.sampled_from("aZ9/-._é\ufffd"), min_size=1, max_size=4)
_ODD_TOKEN = st.one_of(
    st.just(""),
    st.builds("{}{}{}".format, _TOKEN, st.sampled_from(":[] \x00\n"), st.text("a:", max_size=2)),
)
_PIECES: dict[str, tuple[st.SearchStrategy[str], st.SearchStrategy[str]]] = {
    "pri": (
        st.sampled_from(["", "<13>", "<0>", "<013>", "<191>", "<000>"]),
        st.sampled_from(["<192>", "<999>", "<0013>", "<>", "<1", "<13", "<1>1 "]),
    ),
    "month": (st.sampled_from(MONTHS), st.sampled_from(["Foo", "nov", "", "Nov2"])),
    "day": (
        st.sampled_from([" 22", " 1", " 01", "  1"]),
        st.sampled_from(["   1", " 123", "", " x", "22", "  22"]),
    ),
    "time": (
        st.sampled_from([" 00:00:00", " 23:59:59"]),
        st.sampled_from([" 99:99:99", " 00:00:00.123", " 2026 00:00:00", " 0:00:00", " 00:00"]),
    ),
    "host": (_TOKEN.map(lambda t: f" {t}"), _ODD_TOKEN.map(lambda t: f" {t}")),
    "tag": (_TOKEN.map(lambda t: f" {t}"), _ODD_TOKEN.map(lambda t: f" {t}")),
    "pid": (
        st.sampled_from(["", "[1]", "[]", "[a:b]"]),
        st.sampled_from(["[1 2]", "[", "[x]y", "[\x00]", "]", "[1]]"]),
    ),
    "sep": (st.just(": "), st.sampled_from([":", " ", ":\n", ": \x00", "", "::", ":  "])),
}


@st.composite
def _near_common(draw: st.DrawFn) -> bytes:
    odd = draw(st.sets(st.sampled_from(list(_PIECES)), max_size=2))
    head = "".join(draw(_PIECES[name][name in odd]) for name in _PIECES)
    junk = draw(st.sampled_from([b"", b"\xff", b"\xc3", b"\x00", b"\r\n", b"\xe2\x82"]))
    return (head + draw(st.text(max_size=10))).encode() + junk


_NEAR_COMMON = _near_common()
_ROUTER_STAMP = ("192.0.2.1", "udp", 7.0)


def _general(data: bytes) -> SyslogMessage:
    """The message as the general path (no fast path) reads it."""
    text = parse_module._clean(data).decode("utf-8", "replace")
    return parse_module._parse_any(text, REF, _ROUTER_STAMP)


@settings(max_examples=1000)
@given(_NEAR_COMMON)
@example(b"Nov 22 00:00:00 a: b: x")
@example(b"Nov 22 00:00:00 a[1]: b: x")
@example(b"Nov 22 00:00:00 a] b: x")
@example(b"<192>Nov 22 00:00:00 mx sshd: x")
@example(b"<0013>Nov 22 00:00:00 mx sshd: x")
@example(b"<013>Nov 22 00:00:00 mx sshd: x")
@example(b"Nov   1 00:00:00 mx sshd: x")
@example(b"Nov 22 00:00:00 mx sshd[1 2]: x")
@example(b"Nov 22 2026 00:00:00 mx sshd: x")
@example(b"Nov 22 00:00:00.5 mx sshd: x")
@example(b"Nov 22 00:00:00 mx sshd:")
@example(b"Nov 22 00:00:00 mx sshd:x")
@example(b"Nov 22 00:00:00 m\x00x sshd: x")
@example(b"Nov 22 00:00:00 mx ss\x00hd: x")
@example(b"Nov 22 00:00:00 mx\xff s\xc3: x")
@example(b"Nov 31 99:99:99 mx sshd: x")
def test_common_shape_is_read_as_the_general_path_reads_it(data: bytes) -> None:
    """Whatever the fast path accepts, the general path gives the very same message."""
    try:
        expected = _general(data)
    except ParseError:
        with pytest.raises(ParseError):
            parse(data, REF, *_ROUTER_STAMP)
        return
    assert parse(data, REF, *_ROUTER_STAMP) == expected


@settings(max_examples=300)
@given(
    _NEAR_COMMON,
    st.lists(st.sampled_from(["sshd", "postfix/*", "a*", "a/[a-]", "é"])),
    st.lists(st.sampled_from(["", "a", "é", ": a", "Z9 ", "[1]: ", "a: "]), max_size=2),
)
def test_the_routing_gate_drops_only_what_no_jail_can_match(
    data: bytes, programs: list[str], literals: list[str]
) -> None:
    """parse_routed, the gate of the listeners and of test-filter: a message it drops is one
    whose parsed app-name no jail reads, or whose MSG and traditional line (what a filter
    reads) hold none of the literals; any other comes back as parse() reads it (or raises as
    parse() does)."""
    selects = ProgramSelector(programs)
    needles = tuple(lit.encode() for lit in literals if lit)

    def gate(tag: bytes) -> tuple[bytes, ...] | None:
        return needles if selects(tag.decode("utf-8", "replace")) else None

    try:
        expected = parse(data, REF, *_ROUTER_STAMP)
    except ParseError:
        with pytest.raises(ParseError):
            parse_routed(data, gate, REF, *_ROUTER_STAMP)
        return
    routed = parse_routed(data, gate, REF, *_ROUTER_STAMP)
    if routed is Dropped.UNREAD:
        assert not selects(expected.app_name)
    elif routed is Dropped.HOPELESS:
        assert selects(expected.app_name) and needles
        texts = (expected.msg, " " + expected.line)
        assert not any(n.decode() in t for n in needles for t in texts)
    else:
        assert routed == expected


def test_common_shape_covers_the_usual_mail_log_line() -> None:
    """The fast path is taken for the lines mail servers send (else it would be dead weight)."""
    wire = b"<22>Nov 22 00:00:01 mx postfix/smtpd[62708]: connect from unknown[198.18.146.155]"
    unread = parse_routed(b"Nov  2 00:00:01 mx dovecot: imap-login: x", lambda t: None, REF)
    assert unread is Dropped.UNREAD
    expected = SyslogMessage(
        facility=2,
        severity=6,
        timestamp=datetime(2026, 11, 22, 0, 0, 1, tzinfo=UTC),
        hostname="mx",
        app_name="postfix/smtpd",
        procid="62708",
        msgid=None,
        structured_data=None,
        msg="connect from unknown[198.18.146.155]",
    )
    assert parse(wire, REF) == expected
    assert parse(wire, REF, *_ROUTER_STAMP) == _general(wire)
    for other in (b"<22>1 2026-11-22T00:00:01Z mx sshd 1 - - x", b"Nov 22 00:00:01 sshd: x"):
        # Another shape is parsed whole, then gated by its program: only then is it known.
        assert parse_routed(other, lambda tag: None, REF) is Dropped.UNREAD
        assert parse_routed(other, lambda tag: () if tag == b"sshd" else None, REF) == parse(
            other, REF
        )
    assert parse_routed(wire, lambda tag: () if tag == b"postfix/smtpd" else None, REF) == expected
    assert parse_routed(wire, lambda tag: () if tag == b"sshd" else None, REF) is Dropped.UNREAD
    assert parse_routed(wire, lambda tag: (b"reject:",), REF) is Dropped.HOPELESS
    assert parse_routed(wire, lambda tag: (b"reject:", b"connect"), REF) == expected
