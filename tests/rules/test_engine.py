"""The engine's evidence: each counted failure is kept as the line the sender wrote."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from ipaddress import ip_address, ip_network

from applianced.rules.decision import Found, Lookup, Offence
from applianced.rules.engine import Engine, split_evidence
from applianced.rules.filters import Filter
from applianced.rules.jail import Jail, jail_filter
from tests.helpers import SSHD_REGEX, jail_conf, message, ssh_failure


def test_evidence_keeps_each_message_s_own_utc_offset() -> None:
    """The same instant written in two offsets (two senders' time zones, or both sides of a
    DST change) compare equal as datetimes; the evidence still shows each as written."""
    engine = Engine([Jail(jail_conf(maxretry=2), Filter(SSHD_REGEX))])
    utc = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    paris = utc.astimezone(timezone(timedelta(hours=1)))
    assert utc == paris
    found = []
    for stamp in (utc, paris):
        msg = replace(message(ssh_failure("192.0.2.7")), timestamp=stamp)
        found += engine.feed(msg, 1_800_000_000.0)
    (offence,) = found
    assert isinstance(offence, Offence)
    assert [line.split(" ")[1] for line in offence.lines] == [
        "2026-11-22T09:00:00+00:00",
        "2026-11-22T10:00:00+01:00",
    ]


def test_a_multi_line_jail_buffers_per_sender_program_and_pid() -> None:
    """A maxlines filter (a fail2ban one: it reads " host app[pid]: msg") sees the lines of
    one (sender, program, pid) together, never another sender's or pid's."""
    conf = jail_conf(
        failregex=(r"^\s*\S+ sshd\[\d+\]: begin\n\s*\S+ sshd\[\d+\]: failed from <HOST>$",),
        match_on="line",
        maxlines=2,
        maxretry=1,
    )
    jail = Jail(conf, jail_filter(conf))
    engine = Engine([jail])
    assert engine.gate(b"sshd") == ()  # every line of the program reaches the buffer
    feed = [
        ("begin", "192.0.2.250", "1"),
        ("failed from 192.0.2.1", "192.0.2.251", "1"),  # another sender: no begin there
        ("failed from 192.0.2.2", "192.0.2.250", "2"),  # another pid
        ("failed from 192.0.2.3", "192.0.2.250", "1"),
    ]
    got = []
    for text, sender, pid in feed:
        m = replace(message(text, sender=sender), procid=pid)
        got.extend(str(o.address) for o in engine.feed(m, 10.0) if isinstance(o, Offence))
    assert got == ["192.0.2.3"]


def test_a_name_in_a_usedns_warn_jail_is_a_lookup_that_warns() -> None:
    conf = jail_conf(use_dns=True, usedns="warn")
    engine = Engine([Jail(conf, jail_filter(conf))])
    (lookup,) = engine.feed(message(ssh_failure("mx.example.org")), 0.0)
    assert isinstance(lookup, Lookup) and lookup.warn and lookup.host == "mx.example.org"


def test_a_log_found_jail_reports_each_counted_failure_before_its_offence() -> None:
    """`log_found`: one Found per failure counted, with the sender and the line, the last
    one ahead of the offence it completes; none for an ignored address, none when off."""
    loud = Jail(jail_conf(maxretry=2, log_found=True, ignoreip=(ip_network("192.0.2.9"),)),
                Filter(SSHD_REGEX))  # fmt: skip
    quiet = Jail(jail_conf("quiet", maxretry=2), Filter(SSHD_REGEX))
    engine = Engine([loud, quiet])
    now = 1_800_000_000.0
    first = engine.feed(replace(message(ssh_failure("192.0.2.7")), sender="198.51.100.2"), now)
    assert first == [
        Found(
            "sshd", ip_address("192.0.2.7"), "198.51.100.2", message(ssh_failure("192.0.2.7")).line
        )
    ]
    second = engine.feed(replace(message(ssh_failure("192.0.2.7")), sender=None), now)
    assert [type(item) for item in second] == [Found, Offence, Offence]
    assert isinstance(second[0], Found) and second[0].sender == "file"
    assert engine.feed(message(ssh_failure("192.0.2.9")), now) == []


def test_split_evidence_gives_the_sender_and_the_rest() -> None:
    assert split_evidence("[192.0.2.1] 2026-11-22T09:00:00+00:00 mx sshd[1]: x") == (
        "192.0.2.1",
        "2026-11-22T09:00:00+00:00 mx sshd[1]: x",
    )
    assert split_evidence("(line not kept)") == ("", "(line not kept)")
    assert split_evidence("[no closing bracket") == ("", "[no closing bracket")


def test_a_message_that_reaches_a_jail_and_matches_nothing_is_counted_per_program() -> None:
    """``unmatched`` counts, per jail and per program as the jail names it (a glob stands for
    every program it reads, so the count's keys are bounded by the config), the messages the
    jail read and found no failure in; a failure, an ignored one or an unread program is not
    counted there."""
    conf = jail_conf(programs=("sshd", "postfix/*"), ignoreip=(ip_network("192.0.2.0/24"),))
    engine = Engine([Jail(conf, Filter(SSHD_REGEX))])
    engine.feed(message("Accepted key for bob"), 1.0)
    engine.feed(message("Connection closed"), 2.0)
    engine.feed(message("connect from x", app="postfix/smtpd"), 3.0)
    engine.feed(message("removed", app="postfix/submission/qmgr"), 4.0)
    engine.feed(message(ssh_failure("203.0.113.7")), 5.0)
    engine.feed(message(ssh_failure("192.0.2.7")), 6.0)
    engine.feed(message("x", app="dovecot"), 7.0)
    stats = engine.jails["sshd"].stats
    assert stats.unmatched == {"sshd": 2, "postfix/*": 2}
    assert (stats.matched, stats.ignored) == (1, 1)


def test_a_multi_line_jail_counts_its_misses_as_unmatched_too() -> None:
    """A line a multi-line jail reads and finds no failure in (nor one completed by the lines
    before it) is unmatched there, as in a single-line jail."""
    filt = Filter(
        [r"=INFO REPORT====\n[^\n]*: Failed authentication for \S+ from <HOST>$"], maxlines=2
    )
    engine = Engine([Jail(jail_conf(), filt)])
    engine.feed(message("=INFO REPORT===="), 1.0)
    engine.feed(message("Failed authentication for x from 203.0.113.7"), 2.0)
    engine.feed(message("something else"), 3.0)
    stats = engine.jails["sshd"].stats
    assert stats.unmatched == {"sshd": 2} and stats.matched == 1


def test_a_jail_reading_every_program_counts_its_misses_under_star() -> None:
    engine = Engine([Jail(jail_conf(programs=()), Filter(SSHD_REGEX))])
    engine.feed(message("a", app="x"), 1.0)
    engine.feed(message("b", app="y"), 2.0)
    assert engine.jails["sshd"].stats.unmatched == {"*": 2}
