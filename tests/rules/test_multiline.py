"""rules/multiline.py: maxlines buffers and <F-MLFID> connections, bounded in count and time
(time given as ``now``). Our own annotated lines, fail2ban's forms (ejabberd's two-line
report, sshd's connection whose address comes first and failure later)."""

from __future__ import annotations

import tracemalloc

from applianced.rules.filters import Filter, Outcome
from applianced.rules.multiline import MultiLine

SKIP = r"<F-SKIPLINES>\n?(?:[^\n]*\n)*?</F-SKIPLINES>"  # <SKIPLINES> as fail2ban.py has it

# ejabberd's form: the report header on one line, the failure on the next.
TWO_LINES = Filter(
    [r"^=INFO REPORT====\nI: Failed authentication for \S+ from <HOST>$"], maxlines=2
)
# mongodb's form: a failure, lines of other work, then the end naming the address.
SPAN = Filter(
    [
        rf"^\[conn(?P<__c>\d+)\] Failed to authenticate[^\n]*{SKIP}"
        r"\[conn(?P=__c)\] end connection <HOST>"
    ],
    maxlines=5,
)
# sshd's form: the connection id in prefregex; the address on one line, the failure on another.
CONN = Filter(
    [
        r"^<F-NOFAIL>Connection from</F-NOFAIL> <HOST>",
        r"^Disconnecting: Too many authentication failures(?: for <F-USER>\S+</F-USER>)?",
        r"^<F-MLFFORGET>Connection closed</F-MLFFORGET> by <HOST>",
        r"^<F-NOFAIL>Failed publickey</F-NOFAIL> for <F-USER>\S+</F-USER> from <HOST>",
    ],
    prefregex=r"^<F-MLFID>\S+ sshd\[\d+\]: </F-MLFID><F-CONTENT>.+</F-CONTENT>$",
)


def hosts(ml: MultiLine, lines: list[tuple[object, str]], now: float = 0.0) -> list[str | None]:
    out = []
    for source, text in lines:
        outcome, found, _ = ml.feed(source, text, now)
        out.append(str(found.address) if outcome is Outcome.MATCHED and found else None)
    return out


def test_maxlines_matches_across_lines_of_one_source_only() -> None:
    ml = MultiLine(TWO_LINES)
    assert hosts(
        ml,
        [
            ("a", "=INFO REPORT===="),
            ("b", "=INFO REPORT===="),
            ("a", "I: Failed authentication for x from 192.0.2.1"),
            ("c", "I: Failed authentication for x from 192.0.2.2"),  # no header in source c
        ],
    ) == [None, None, "192.0.2.1", None]


def test_a_failure_empties_the_buffer_so_its_lines_count_once() -> None:
    ml = MultiLine(TWO_LINES)
    lines = [("a", "=INFO REPORT===="), ("a", "I: Failed authentication for x from 192.0.2.1")]
    assert hosts(ml, [*lines, ("a", "I: Failed authentication for x from 192.0.2.1")]) == [
        None,
        "192.0.2.1",
        None,
    ]


def test_skiplines_spans_other_lines_within_maxlines() -> None:
    ml = MultiLine(SPAN)
    assert hosts(
        ml,
        [
            (None, "[conn7] Failed to authenticate bob"),
            (None, "[conn8] something else"),
            (None, "[conn7] end connection 198.51.100.4:5000"),
        ],
    ) == [None, None, "198.51.100.4"]


def test_a_failure_leaves_the_lines_it_skipped_for_a_later_one() -> None:
    """slapd's form, two connections interleaved: each failure takes its own lines out of
    the buffer and leaves the other connection's (fail2ban-regex finds both too)."""
    accept = Filter(
        [
            rf"^\[conn(?P<__c>\d+)\] accept from <HOST>{SKIP}"
            r"\[conn(?P=__c)\] bind failed$"
        ],
        maxlines=10,
    )
    ml = MultiLine(accept)
    assert hosts(
        ml,
        [
            (None, "[conn1] accept from 192.0.2.41"),
            (None, "[conn2] accept from 192.0.2.42"),
            (None, "[conn1] bind failed"),
            (None, "[conn2] bind failed"),
            (None, "[conn1] bind failed"),  # its accept line is used up
        ],
    ) == [None, None, "192.0.2.41", "192.0.2.42", None]


def test_mlfid_gives_a_later_line_the_address_of_an_earlier_one() -> None:
    ml = MultiLine(CONN)
    assert hosts(
        ml,
        [
            (None, "h sshd[1]: Connection from 192.0.2.7"),  # NOFAIL: remembered, no failure
            (
                None,
                "h sshd[2]: Disconnecting: Too many authentication failures for root",
            ),  # unknown
            (None, "h sshd[1]: Disconnecting: Too many authentication failures for root"),
        ],
    ) == [None, None, "192.0.2.7"]


def test_mlfforget_forgets_the_connection() -> None:
    ml = MultiLine(CONN)
    assert hosts(
        ml,
        [
            (None, "h sshd[1]: Connection from 192.0.2.7"),
            (None, "h sshd[1]: Connection closed by 192.0.2.7"),
        ],
    ) == [None, "192.0.2.7"]
    assert ml.size == (0, 0)
    assert hosts(ml, [(None, "h sshd[1]: Disconnecting: Too many authentication failures")]) == [
        None
    ]


def test_a_second_user_on_one_connection_turns_nofail_into_a_failure() -> None:
    ml = MultiLine(CONN)
    assert hosts(
        ml,
        [
            (None, "h sshd[1]: Failed publickey for alice from 192.0.2.9"),
            (None, "h sshd[1]: Failed publickey for bob from 192.0.2.9"),
        ],
    ) == [None, "192.0.2.9"]


def test_state_expires_after_max_age() -> None:
    ml = MultiLine(CONN, max_age=60.0)
    ml.feed(None, "h sshd[1]: Connection from 192.0.2.7", 0.0)
    assert ml.size == (0, 1)
    outcome, _, _ = ml.feed(
        None, "h sshd[1]: Disconnecting: Too many authentication failures", 61.0
    )
    assert outcome is Outcome.MISSED
    two = MultiLine(TWO_LINES, max_age=60.0)
    two.feed("a", "=INFO REPORT====", 0.0)
    assert hosts(two, [("a", "I: Failed authentication for x from 192.0.2.1")], now=61.0) == [None]


def test_state_is_bounded_in_count() -> None:
    ml = MultiLine(TWO_LINES, max_sources=10)
    conn = MultiLine(CONN, max_sources=10)
    for n in range(1000):
        ml.feed(n, "=INFO REPORT====", float(n))
        conn.feed(None, f"h sshd[{n}]: Connection from 192.0.2.7", float(n))
    assert ml.size == (10, 0) and conn.size == (0, 10)
    # The most recent sources are the ones kept.
    assert hosts(ml, [(999, "I: Failed authentication for x from 192.0.2.1")], 999.0) == [
        "192.0.2.1"
    ]


def test_a_maxlines_filter_gives_the_gate_no_needles() -> None:
    """Every line of the program must reach the buffer, with the literal or without."""
    assert TWO_LINES.literals and TWO_LINES.needles == ()
    assert CONN.needles == Filter(CONN.failregex, prefregex=CONN.prefregex).needles


def test_a_buffer_keeps_the_newest_lines_within_max_text() -> None:
    """Long lines push the oldest out: the new line is never cut from what the regex sees."""
    filt = Filter(
        [r"^=INFO REPORT====\nI: Failed authentication for \S+ from <HOST>$"],
        maxlines=5,
        max_text=100,
    )
    ml = MultiLine(filt)
    for _ in range(3):
        ml.feed("a", "x" * 60, 0.0)
    ml.feed("a", "=INFO REPORT====", 0.0)
    assert hosts(ml, [("a", "I: Failed authentication for x from 192.0.2.1")]) == ["192.0.2.1"]
    assert sum(map(len, ml._buffers.get("a", (0.0, []))[1])) <= 100


def test_single_line_filters_are_not_multiline() -> None:
    assert not Filter([r"^from <HOST>$"]).multiline
    assert TWO_LINES.multiline and CONN.multiline and SPAN.multiline


def test_a_failure_before_the_address_counts_on_the_line_that_names_it() -> None:
    """sshd's form: a failure line without the address, then a disconnect (<F-NOFAIL>)
    naming it: the disconnect is the failure; a second disconnect is not."""
    filt = Filter(
        [
            r"^User <F-USER>\S+</F-USER> not allowed because account is locked",
            r"^<F-NOFAIL>Received disconnect</F-NOFAIL> from <HOST>: 11:",
        ],
        prefregex=r"^<F-MLFID>\S+ sshd\[\d+\]: </F-MLFID><F-CONTENT>.+</F-CONTENT>$",
    )
    ml = MultiLine(filt)
    assert hosts(
        ml,
        [
            (None, "h sshd[3]: Received disconnect from 192.0.2.30: 11: Bye"),  # no failure yet
            (None, "h sshd[4]: User root not allowed because account is locked"),
            (None, "h sshd[4]: Received disconnect from 192.0.2.34: 11: Bye"),
            (None, "h sshd[4]: Received disconnect from 192.0.2.34: 11: Bye"),
        ],
    ) == [None, None, "192.0.2.34", None]


def test_a_long_line_is_held_no_longer_than_a_regex_reads() -> None:
    """A regex sees the first ``max_text`` characters: a buffer holds no more of a line, so a
    flood of long lines from many sources (pids) costs sources x max_text, not x the line."""
    ml = MultiLine(TWO_LINES)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for pid in range(200):
            ml.feed(pid, "=INFO REPORT====" + "x" * (1 << 16), 0.0)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert ml.size == (200, 0)
    assert held < 200 * (TWO_LINES.max_text + 1024)
    # What the regex reads is unchanged: the header's line still completes a failure.
    assert hosts(ml, [(7, "I: Failed authentication for x from 192.0.2.1")]) == [None]
    ml.feed(8, "=INFO REPORT====", 0.0)
    assert hosts(ml, [(8, "I: Failed authentication for x from 192.0.2.1")]) == ["192.0.2.1"]
