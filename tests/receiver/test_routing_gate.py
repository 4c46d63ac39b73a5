"""The listeners' routing gate: given ``route`` (Engine.gate), a message of the common shape
that no jail can match (no jail reads its program, or it holds none of their filters'
literals) is counted as received and never reaches the sink; what a jail may match, and every
message of another shape, is parsed and handed on as before."""

from __future__ import annotations

from ipaddress import ip_network

from twisted.internet.task import Clock

from applianced.conf.schema import ListenerConf
from applianced.receiver.listeners import ReceiverStats, SyslogUDP
from applianced.receiver.message import SyslogMessage
from applianced.rules.engine import Engine
from applianced.rules.filters import Filter
from applianced.rules.jail import Jail
from tests.helpers import jail_conf

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


def test_a_message_without_the_filters_literal_is_received_but_not_handed_on() -> None:
    """sshd's jail needs "Failed " in a message: one without it cannot match."""
    proto, got, stats = _listener(reads=True)
    proto.datagramReceived(b"<38>Nov 22 10:00:01 mx sshd[2]: Accepted key for bob", SENDER)
    proto.datagramReceived(b"<38>Nov 22 10:00:01 mx sshd[2]: Failed key from 192.0.2.7", SENDER)
    assert [m.msg for m in got] == ["Failed key from 192.0.2.7"]
    assert (stats.received, stats.parse_errors) == (2, 0)


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


def test_other_shapes_and_bad_input_are_parsed_as_without_the_gate() -> None:
    """RFC 5424, a message without hostname, text without header: parsed whole (the app-name
    is only known then) and handed on; a bad PRI is still a parse error."""
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
    assert gated == plain and len(gated) == 3
    assert gated_stats == plain_stats
