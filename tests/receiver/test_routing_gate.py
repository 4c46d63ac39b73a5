"""The listeners' routing gate: given ``gate`` (Engine.gate), a message of the common shape
that no jail can match (no jail reads its program, or it holds none of their filters'
literals) is counted as received and never reaches the sink; what a jail may match, and every
message of another shape, is parsed and handed on as before."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from ipaddress import ip_network
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from applianced.conf.load import load_config
from applianced.conf.schema import ListenerConf
from applianced.receiver.edge import ReceiverStats
from applianced.receiver.parse import parse, parse_routed
from applianced.receiver.udp import SyslogUDP
from applianced.rules.engine import Engine
from applianced.rules.filters import Filter
from applianced.rules.jail import Jail, jail_filter
from applianced.rules.message import SyslogMessage
from tests.helpers import jail_conf
from tests.rules.test_filters import ALL_ROWS

REF = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
SHIPPED = Path(__file__).resolve().parents[2] / "applianced/conf/defaults/appliance.toml"
SHIPPED_ENGINE = Engine(
    [Jail(replace(conf, enabled=True), jail_filter(conf)) for conf in load_config(SHIPPED).jails]
)
CONF = ListenerConf("udp", "127.0.0.1", 0, (ip_network("127.0.0.0/8"),), 8192)
SENDER = ("127.0.0.1", 40000)


def _listener(reads: bool) -> tuple[SyslogUDP, list[SyslogMessage], ReceiverStats]:
    engine = Engine([Jail(jail_conf(), Filter([r"^Failed \S+ from <HOST>"]))])  # reads sshd
    got: list[SyslogMessage] = []
    stats = ReceiverStats()
    proto = SyslogUDP(CONF, got.append, stats, Clock(), engine.gate if reads else None)
    return proto, got, stats


def test_a_program_no_jail_reads_is_received_but_not_handed_on() -> None:
    proto, got, stats = _listener(reads=True)
    proto.datagramReceived(b"<22>Nov 22 10:00:01 mx postfix/qmgr[1]: 4A2B: removed", SENDER)
    proto.datagramReceived(
        b"<38>Nov 22 10:00:01 mx sshd[2]: Failed password from 192.0.2.7", SENDER
    )
    assert [m.app_name for m in got] == ["sshd"]
    assert (stats.received, stats.received_udp, stats.parse_errors) == (2, 2, 0)
    assert (stats.gated_unread, stats.gated_no_literal) == (1, 0)


def test_rfc5424_of_a_program_no_jail_reads_counts_as_rfc3164_does() -> None:
    """Three RFC 5424 messages from a program no jail reads are gated_unread, as the same
    message in RFC 3164 is (they used to reach the engine, counted nowhere)."""
    proto, got, stats = _listener(reads=True)
    for _ in range(3):
        proto.datagramReceived(b"<22>1 2026-11-22T10:00:01Z mx postfix/qmgr 1 - - removed", SENDER)
    proto.datagramReceived(b"<22>Nov 22 10:00:01 mx postfix/qmgr[1]: 4A2B: removed", SENDER)
    proto.datagramReceived(
        b"<38>1 2026-11-22T10:00:01Z mx sshd 2 - - Failed x from 192.0.2.7", SENDER
    )
    assert [m.app_name for m in got] == ["sshd"]
    assert (stats.received, stats.gated_unread, stats.gated_no_literal) == (5, 4, 0)


def test_a_message_without_the_filters_literal_is_received_but_not_handed_on() -> None:
    """sshd's jail needs "Failed " in a message: one without it cannot match."""
    proto, got, stats = _listener(reads=True)
    proto.datagramReceived(b"<38>Nov 22 10:00:01 mx sshd[2]: Accepted key for bob", SENDER)
    proto.datagramReceived(b"<38>Nov 22 10:00:01 mx sshd[2]: Failed key from 192.0.2.7", SENDER)
    assert [m.msg for m in got] == ["Failed key from 192.0.2.7"]
    assert (stats.received, stats.parse_errors) == (2, 0)
    assert (stats.gated_unread, stats.gated_no_literal) == (0, 1)


def test_rfc5424_without_the_filters_literal_counts_as_rfc3164_does() -> None:
    """An RFC 5424 sshd message holding none of the filter's literals is gated_no_literal, as
    the same message in RFC 3164 is; one holding a literal reaches the jails."""
    proto, got, stats = _listener(reads=True)
    proto.datagramReceived(b"<38>1 2026-11-22T10:00:01Z mx sshd 2 - - Accepted key for bob", SENDER)
    proto.datagramReceived(b"<38>Nov 22 10:00:01 mx sshd[2]: Accepted key for bob", SENDER)
    proto.datagramReceived(
        b"<38>1 2026-11-22T10:00:01Z mx sshd 2 - - Failed key from 192.0.2.7", SENDER
    )
    assert [m.msg for m in got] == ["Failed key from 192.0.2.7"]
    assert (stats.received, stats.gated_unread, stats.gated_no_literal) == (3, 0, 2)


def test_the_gate_names_the_literals_of_every_jail_that_reads_a_program() -> None:
    """Two jails read sshd: a message needs either's literal. A jail whose filter has no
    literal makes every message of its programs worth parsing; an unread program is None."""
    sshd = Jail(jail_conf(name="a"), Filter([r"^Failed \S+ from <HOST>", r"^Bad user at <HOST>"]))
    other = Jail(jail_conf(name="b"), Filter([r"^Invalid user \S+ from <HOST>"]))
    engine = Engine([sshd, other])
    assert engine.gate(b"sshd") == (b"Failed ", b"Bad user at ", b"Invalid user ")
    assert engine.gate(b"postfix/qmgr") is None
    engine.set_jails([sshd, Jail(jail_conf(name="b"), Filter([r"<HOST> \S+"]))])
    assert engine.gate(b"sshd") == ()


def test_other_shapes_and_bad_input_are_parsed_then_gated_by_their_program() -> None:
    """RFC 5424, a message without hostname, text without header: parsed whole (the app-name
    is only known then), then dropped as unread when no jail reads their program (the text has
    none); a bad PRI is still a parse error. Without the gate all three are handed on."""
    wires = [
        b"<38>1 2026-11-22T10:00:01Z mx postfix/qmgr 1 - - removed",
        b"<38>Nov 22 10:00:01 postfix/qmgr[1]: removed",
        b"just text",
        b"<999>Nov 22 10:00:01 mx sshd[2]: x",
    ]
    outcomes = []
    for reads in (True, False):
        proto, got, stats = _listener(reads)
        for wire in wires:
            proto.datagramReceived(wire, SENDER)
        outcomes.append((got, stats))
    (gated, gated_stats), (plain, plain_stats) = outcomes
    assert (gated, len(plain)) == ([], 3)
    assert (gated_stats.gated_unread, plain_stats.gated_unread) == (3, 0)
    assert gated_stats.parse_errors == plain_stats.parse_errors == 1
    assert gated_stats.received == plain_stats.received == 3


def test_a_literal_holding_u_fffd_gives_the_gate_nothing_to_test() -> None:
    """U+FFFD in the decoded text stands for any invalid bytes: its UTF-8 form need not be in
    the message, so such a filter has no needles and its messages are all parsed."""
    filt = Filter(["^bad \ufffd from <HOST>"])
    assert filt.literals == ("bad \ufffd from ",) and filt.needles == ()
    engine = Engine([Jail(jail_conf(), filt)])
    wire = b"Nov 22 10:00:01 mx sshd[2]: bad \xff from 192.0.2.7"
    routed = parse_routed(wire, engine.gate, REF)
    assert isinstance(routed, SyslogMessage) and filt.match(routed.msg) is not None


@pytest.mark.parametrize(("service", "expected", "line"), ALL_ROWS)
def test_the_gate_lets_every_failure_of_the_corpus_through(
    service: str, expected: str, line: str
) -> None:
    """Every shipped jail enabled: a corpus line that a jail reading its program matches comes
    through the gate as parse() reads it (and the corpus's failures are such lines)."""
    message = parse(line.encode(), REF)
    matched = [
        jail.name
        for jail in SHIPPED_ENGINE.route(message.app_name)
        if jail.filter.match(" " + message.line if jail.filter.on_line else message.msg)
    ]
    assert bool(matched) == (expected != "-") or service not in SHIPPED_ENGINE.jails
    if matched:
        assert parse_routed(line.encode(), SHIPPED_ENGINE.gate, REF) == message
