"""Senders (issue 17): each sender's figures through the real edge, engine and appliance; the
book's bounds; the silence alarm on a task.Clock (silence → alarm → return → note), its log
lines, status, metrics and mails; sender_silence in the config.

The Appliance runs on a task.Clock with the in-memory store and enforcer and a recording
notifier; messages go in as datagrams through a SyslogUDP edge on the same clock."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_network
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent

from applianced import views
from applianced.appliance import Appliance
from applianced.conf.load import load_config
from applianced.conf.schema import Config, ListenerConf, NotifyConf
from applianced.enforcement.base import Silence
from applianced.enforcement.mails import build_return_mail, build_silence_mail
from applianced.errors import ConfigError
from applianced.metricfamilies import METRIC_SENDERS
from applianced.metrics import make_registry
from applianced.receiver.edge import Edge, ReceiverStats
from applianced.receiver.senders import MAX_OTHERS, SenderBook
from applianced.receiver.udp import SyslogUDP
from applianced.rules.engine import Engine
from applianced.silence import SilenceWatch
from applianced.testing import MemoryEnforcer, MemoryStore, RecordingNotifier
from tests.enforcement.test_notify import make as make_notifier
from tests.helpers import config

T0 = 1_800_000_000.0
MX = "192.0.2.10"  # the watched mail server
OTHER_MX = "192.0.2.20"  # allowed (in a /24), not watched
QUIET_MX = "198.51.100.25"  # allowed as a single address, not watched
SILENCE = 900.0
LISTENER = ListenerConf(
    "udp",
    "127.0.0.1",
    514,
    (
        ip_network(f"{MX}/32"),
        ip_network(f"{QUIET_MX}/32"),
        ip_network("192.0.2.0/24"),
        ip_network("10.0.0.0/8"),
    ),
    8192,
    sender_silence=((MX, SILENCE),),
)


def failure(address: str) -> bytes:
    return b"<38>Nov 22 10:00:01 mx sshd[1]: Failed password for root from %s port 1 ssh2" % (
        address.encode()
    )


NOISE = b"<38>Nov 22 10:00:01 mx sshd[1]: Failed password, said nobody"  # a jail, no match
UNREAD = b"<38>Nov 22 10:00:01 mx cron[1]: (root) CMD (true)"  # no jail reads cron


class Rig:
    """An Appliance fed through a real UDP edge, all on one Clock, sharing one SenderBook."""

    def __init__(self, tmp_path: Path, conf: Config | None = None) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.conf = conf or replace(config(tmp_path), listeners=(LISTENER,))
        self.book = SenderBook()
        self.notifier = RecordingNotifier()
        self.app = Appliance(
            self.conf,
            MemoryStore(),
            MemoryEnforcer(),
            self.clock,
            notifier=self.notifier,
            engine=Engine(on_unmatched=self.book.unmatched),
            senders=self.book,
        )
        self.app.start()
        self.stats = ReceiverStats()
        self.udp = SyslogUDP(
            self.conf.listeners[0],
            self.app.receive,
            self.stats,
            self.clock,
            self.app.engine.gate,
            self.book,
        )

    def send(self, data: bytes, sender: str = MX) -> None:
        self.udp.datagramReceived(data, (sender, 40000))
        self.clock.advance(0)

    def figures(self) -> dict[str, dict[str, object]]:
        return {s["sender"]: s for s in views.senders(self.app)["senders"]}


def warnings_and_infos(logs: list[dict[str, object]]) -> list[str]:
    return [formatEvent(e) for e in logs if e.get("log_namespace") == "applianced.senders"]


# -- the figures --------------------------------------------------------------------------


def test_each_sender_counts_messages_parse_errors_unmatched_bans_and_last_seen(
    tmp_path: Path,
) -> None:
    """Through the real edge, engine and appliance: messages (gated ones included), parse
    errors, unmatched (reached the sshd jail, matched nothing; a program no jail reads is not
    unmatched), the ban its three failures led to, the time of its last message and the
    listener it came on."""
    rig = Rig(tmp_path)
    rig.send(NOISE)
    rig.send(UNREAD)
    rig.send(b"<999>x")  # a PRI out of range: unparsable
    rig.clock.advance(5)
    for _ in range(3):
        rig.send(failure("203.0.113.7"))
    rig.send(NOISE, sender=OTHER_MX)
    assert [b.network for b in rig.app.banned()] == [ip_network("203.0.113.7/32")]
    mx = rig.figures()[MX]
    assert (mx["messages"], mx["parse_errors"], mx["unmatched"], mx["bans"]) == (6, 1, 1, 1)
    assert (mx["last_seen"], mx["transport"], mx["listener"]) == (
        T0 + 5,
        "udp",
        "udp/127.0.0.1:514",
    )
    other = rig.figures()[OTHER_MX]
    assert (other["messages"], other["unmatched"], other["bans"]) == (1, 1, 0)
    # The watched one first, then the allowed host never seen, then the others.
    assert list(rig.figures()) == [MX, QUIET_MX, OTHER_MX]
    assert rig.figures()[QUIET_MX]["last_seen"] is None


def test_a_ban_counts_for_every_sender_whose_lines_led_to_it(tmp_path: Path) -> None:
    """Two mail servers each deliver failures of one attacker: the ban counts for both."""
    rig = Rig(tmp_path)
    rig.send(failure("203.0.113.9"), sender=MX)
    rig.send(failure("203.0.113.9"), sender=OTHER_MX)
    rig.send(failure("203.0.113.9"), sender=MX)
    assert rig.figures()[MX]["bans"] == rig.figures()[OTHER_MX]["bans"] == 1


def test_the_book_is_bounded_and_the_dropped_senders_add_up_in_other() -> None:
    """Beyond max_others, through a real edge: the oldest unwatched sender not seen since it
    entered leaves the book and its figures go to the other bucket; one seen since gets a
    second chance; a watched sender, however old, stays."""
    book = SenderBook(max_others=3)
    book.watch({MX: SILENCE}, T0)
    clock = Clock()
    anyone = replace(LISTENER, allowed_senders=(ip_network("0.0.0.0/0"),), sender_silence=())
    edge = Edge(anyone, lambda m: None, ReceiverStats(), clock, None, book)

    def deliver(host: str, at: float) -> None:
        clock.advance(at - clock.seconds())
        edge.deliver(UNREAD, host)

    for i in range(10):
        deliver(f"198.51.100.{i}", T0 + i)
    deliver("198.51.100.7", T0 + 20)  # seen again: a second chance
    deliver("198.51.100.10", T0 + 21)
    book.unmatched("198.51.100.0")  # dropped long ago: counted in other
    kept = [s.address for s in book.snapshot()]
    assert kept == [MX, "198.51.100.10", "198.51.100.7", "198.51.100.9"]
    assert (book.dropped, book.other.messages, book.other.unmatched) == (8, 8, 1)
    assert sum(s.messages for s in book.snapshot()) + book.other.messages == 12


def test_a_flood_of_distinct_senders_keeps_the_book_at_its_bound(tmp_path: Path) -> None:
    """20,000 one-off senders of a wide allowed_senders through the real UDP edge, between the
    messages of 250 senders that keep sending: the book holds MAX_OTHERS and the two allowed
    hosts (the watched one, and one that sent once, before the flood), the 250 regular senders
    among them (the one-off ones go first); every message is still counted."""
    rig = Rig(tmp_path)
    rig.send(UNREAD, sender=QUIET_MX)
    for i in range(20_000):
        rig.udp.datagramReceived(UNREAD, (f"192.0.2.{i % 250}", 1))
        rig.udp.datagramReceived(UNREAD, (f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", 1))
    kept = {s.address for s in rig.book.snapshot()}
    assert len(kept) == MAX_OTHERS + 2
    assert {QUIET_MX, *(f"192.0.2.{i}" for i in range(250))} <= kept
    assert sum(s.messages for s in rig.book.snapshot()) + rig.book.other.messages == 40_001


# -- the silence alarm --------------------------------------------------------------------


def test_silence_alarm_then_return_on_a_clock(tmp_path: Path) -> None:
    """A watched sender sends, then nothing for sender_silence: one WARNING, one mail, shown
    silent in status and the metric; nothing more while it stays silent; its next message is
    noted (an INFO line, a mail, status and metric clear); its silence is watched again."""
    rig = Rig(tmp_path)
    rig.send(NOISE)
    registry = make_registry(rig.app)
    with capturedLogs() as logs:
        rig.clock.advance(SILENCE - 1)
        assert rig.notifier.silences == [] and warnings_and_infos(logs) == []
        rig.clock.advance(1)
        [line] = warnings_and_infos(logs)
        assert f"syslog sender {MX} is silent: no message for 15m" in line
        assert "over udp/127.0.0.1:514" in line and "check its syslog forwarding" in line
        assert [e["log_level"].name for e in logs if "silent" in formatEvent(e)] == ["warn"]
        assert rig.notifier.silences == [
            ("silent", Silence(MX, T0, T0, "udp/127.0.0.1:514", SILENCE), T0 + SILENCE)
        ]
        status = views.status(rig.app)["senders"]
        assert [s["sender"] for s in status["silent"]] == [MX]
        assert status["silent"][0]["silent_since"] == T0
        assert f'applianced_sender_silent{{sender="{MX}"}} 1.0' in scrape(registry)
        rig.clock.advance(10 * SILENCE)  # still silent: no second alarm
        assert len(rig.notifier.silences) == 1 and len(warnings_and_infos(logs)) == 1
        back = T0 + 11 * SILENCE
        rig.send(NOISE)
        assert f"syslog sender {MX} is back after 2h45m of silence" in warnings_and_infos(logs)[1]
        assert rig.notifier.silences[1] == (
            "returned",
            Silence(MX, T0, back, "udp/127.0.0.1:514", SILENCE),
            back,
        )
        assert views.status(rig.app)["senders"]["silent"] == []
        assert f'applianced_sender_silent{{sender="{MX}"}} 0.0' in scrape(registry)
        rig.clock.advance(SILENCE)  # silent again from its last message: a new alarm
        assert [kind for kind, _, _ in rig.notifier.silences] == ["silent", "returned", "silent"]


def test_a_returned_sender_is_alarmed_on_its_own_deadline_not_a_later_ones() -> None:
    """Two watched senders, one for 60 s and one for an hour: the first goes silent, comes
    back, then goes silent again; its second alarm comes 60 s after its return, not at the
    hour the timer had moved to while it was silent."""
    clock = Clock()
    book = SenderBook()
    notifier = RecordingNotifier()
    watch = SilenceWatch(clock, book, notifier)
    watch.watch({MX: 60.0, OTHER_MX: 3600.0})
    anyone = replace(LISTENER, allowed_senders=(ip_network("0.0.0.0/0"),), sender_silence=())
    edge = Edge(anyone, lambda m: None, ReceiverStats(), clock, None, book)
    edge.deliver(UNREAD, MX)
    edge.deliver(UNREAD, OTHER_MX)
    clock.advance(60)
    assert [(k, s.sender) for k, s, _ in notifier.silences] == [("silent", MX)]
    clock.advance(40)
    edge.deliver(UNREAD, MX)  # back at 100 s
    clock.advance(61)
    assert [(k, s.sender) for k, s, _ in notifier.silences] == [
        ("silent", MX),
        ("returned", MX),
        ("silent", MX),
    ]


def test_a_watched_sender_that_never_sends_is_alarmed_after_its_silence(tmp_path: Path) -> None:
    """A mail server that never starts forwarding is the same blind spot: alarmed
    sender_silence after the watch began, the log saying it never sent."""
    rig = Rig(tmp_path)
    with capturedLogs() as logs:
        rig.clock.advance(SILENCE)
    [line] = warnings_and_infos(logs)
    assert "nothing since the watch began" in line
    assert rig.notifier.silences[0][1] == Silence(MX, T0, None, "", SILENCE)
    assert rig.figures()[MX]["last_seen"] is None


def test_reload_watches_a_new_sender_from_then_and_forgets_one_no_longer_watched(
    tmp_path: Path,
) -> None:
    """A reload that adds a watched sender starts its watch at the reload; one that removes
    a silent one clears its alarm without a return note."""
    rig = Rig(tmp_path)
    rig.clock.advance(SILENCE)
    assert len(rig.notifier.silences) == 1
    listener = replace(LISTENER, sender_silence=((OTHER_MX, 60.0),))
    rig.app.reload(replace(rig.conf, listeners=(listener,)))
    assert views.status(rig.app)["senders"]["silent"] == []
    rig.clock.advance(59)
    assert len(rig.notifier.silences) == 1
    rig.clock.advance(1)
    assert rig.notifier.silences[-1][1].sender == OTHER_MX


def test_a_stopped_appliance_leaves_no_silence_timer(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.app.stop()
    assert rig.clock.getDelayedCalls() == []


def scrape(registry: object) -> str:
    return generate_latest(registry).decode()  # type: ignore[arg-type]


def test_per_sender_metrics_cap_their_labels_and_sum_the_rest_in_other(tmp_path: Path) -> None:
    """METRIC_SENDERS senders get a label each (the watched one first); the rest are summed
    in sender="other", so the totals stay whole."""
    rig = Rig(tmp_path)
    for i in range(METRIC_SENDERS + 10):
        rig.send(NOISE, sender=f"192.0.2.{100 + i}")
    text = scrape(make_registry(rig.app))
    samples = [line for line in text.splitlines() if line.startswith("applianced_sender_messages")]
    assert len(samples) == METRIC_SENDERS + 1
    assert samples[0].startswith(f'applianced_sender_messages_total{{sender="{MX}"}} 0.0')
    assert 'applianced_sender_messages_total{sender="other"} 11.0' in samples


# -- mails ----------------------------------------------------------------------------------


def test_silence_and_return_mails_say_which_sender_since_when_and_what_to_check() -> None:
    conf = NotifyConf(to=("postmaster@example.org",))
    silence = Silence(MX, T0, T0, "tcp/0.0.0.0:514", SILENCE)
    mail = build_silence_mail(conf, silence, T0 + SILENCE)
    assert mail["Subject"] == f"[applianced] syslog sender {MX} silent for 15m"
    body = mail.get_content()
    assert "its last message at 2027-01-15 08:00:00 UTC over tcp/0.0.0.0:514" in body
    assert "nobody is banned for them until it sends again" in body
    assert "`appliancectl senders`" in body
    back = build_return_mail(conf, silence, T0 + 2 * SILENCE)
    assert back["Subject"] == f"[applianced] syslog sender {MX} is back"
    assert "after 30m of silence (since 2027-01-15 08:00:00 UTC)" in back.get_content()


def test_the_notifier_mails_a_silence_and_a_return_once_each_and_nothing_without_to(
    tmp_path: Path,
) -> None:
    """Through the real Notifier (a fake mailer): each note is one mail, whatever the jails'
    notify; with no [notify] to, none."""
    notifier, clock, mailer = make_notifier(tmp_path)
    silence = Silence(MX, T0, None, "", SILENCE)
    notifier.sender_silent(silence, T0 + SILENCE)
    notifier.sender_returned(silence, T0 + 2 * SILENCE)
    clock.advance(0)
    assert [m["Subject"] for m in mailer.sent] == [
        f"[applianced] syslog sender {MX} silent for 15m",
        f"[applianced] syslog sender {MX} is back",
    ]
    assert "nothing since applianced began to watch it" in mailer.sent[0].get_content()
    quiet, clock, mailer = make_notifier(tmp_path, NotifyConf())
    quiet.sender_silent(silence, T0 + SILENCE)
    clock.advance(60)
    assert mailer.sent == []


# -- the config ----------------------------------------------------------------------------

BASE = """
[daemon]
state_dir = "{tmp}"
control_socket = "{tmp}/control.sock"
[receiver]
allowed_senders = ["127.0.0.0/8", "192.0.2.10/32", "192.0.2.11"]
{receiver}
[[listeners]]
transport = "udp"
port = 5514
[[listeners]]
transport = "tcp"
port = 5514
{listener}
"""


def load(tmp_path: Path, receiver: str = "", listener: str = "") -> Config:
    path = tmp_path / "appliance.toml"
    path.write_text(BASE.format(tmp=tmp_path, receiver=receiver, listener=listener))
    return load_config(path)


def test_sender_silence_a_duration_watches_each_single_allowed_address(tmp_path: Path) -> None:
    conf = load(tmp_path, receiver='sender_silence = "15m"')
    assert conf.sender_silence == {MX: 900.0, "192.0.2.11": 900.0}


def test_sender_silence_per_sender_and_per_listener_the_shortest_wins(tmp_path: Path) -> None:
    conf = load(
        tmp_path,
        receiver='sender_silence = { "192.0.2.10" = "15m" }',
        listener='sender_silence = "5s"',
    )
    assert conf.listeners[0].sender_silence == ((MX, 900.0),)
    assert conf.sender_silence == {MX: 5.0, "192.0.2.11": 5.0}
    assert load(tmp_path, receiver="sender_silence = 0").sender_silence == {}


@pytest.mark.parametrize(
    ("receiver", "listener", "error"),
    [
        (
            'sender_silence = { "192.0.2.99" = "15m" }',
            "",
            "[receiver.sender_silence.192.0.2.99] 192.0.2.99 is in no listener's allowed_senders",
        ),
        (
            "",
            'allowed_senders = ["10.0.0.0/8"]\nsender_silence = "1m"',
            "[listeners[1].sender_silence] watches the single addresses",
        ),
        ('sender_silence = "soon"', "", "[receiver.sender_silence]"),
    ],
)
def test_sender_silence_that_cannot_work_is_refused(
    tmp_path: Path, receiver: str, listener: str, error: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, receiver, listener)
    assert error in str(caught.value)


def test_the_production_example_watches_its_mail_servers() -> None:
    example = Path(__file__).parent.parent / "examples" / "appliance.production.toml"
    conf = load_config(example)
    assert conf.sender_silence == {"192.0.2.10": 900.0, "192.0.2.11": 900.0}
