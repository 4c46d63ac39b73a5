"""The public fakes of applianced.testing keep the contracts of what they fake: the in-memory
store answers as the SQLite store does, the recording notifier hears of new bans only."""

from __future__ import annotations

from ipaddress import ip_address, ip_network
from pathlib import Path

from twisted.internet.task import Clock

from applianced.appliance import Appliance
from applianced.enforcement.base import Enforcer
from applianced.rules.decision import BanDecision, BanKind
from applianced.store.base import OffenderStore
from applianced.store.sqlite import SqliteOffenderStore
from applianced.testing import MemoryEnforcer, MemoryStore, RecordingNotifier
from tests.helpers import config, message, ssh_failure

T0 = 1_800_000_000.0


def decision(
    net: str, at: float, duration: float | None = 100.0, jail: str = "sshd"
) -> BanDecision:
    kind = BanKind.BLACKLIST if duration is None else BanKind.AUTO
    return BanDecision(jail, ip_network(net), duration, kind, 1, at, (f"[192.0.2.1] {net}",))


def script(store: OffenderStore) -> list[object]:
    """The same changes on a store, and every answer it gives along the way."""
    store.record_bans([decision("203.0.113.7", T0), decision("2001:db8::/64", T0, None)])
    store.record_bans([decision("203.0.113.7", T0 + 10), decision("198.51.100.0/24", T0 + 10)])
    store.record_bans([decision("203.0.113.9", T0 + 10, 5.0, jail="postfix")])
    answers: list[object] = [
        store.active_bans(T0 + 20),
        store.due_expiries(T0 + 20),
        store.prior_bans("sshd", [ip_network("203.0.113.7/32")], T0),
        store.find_active(ip_network("198.51.100.7/32")),
        store.find_active(ip_network("2001:db8::5/128"), "sshd"),
    ]
    ended = store.end_bans(store.find_active(ip_network("203.0.113.7/32")), T0 + 30, "unban")
    answers += [
        ended,
        sorted(store.active_bans(T0 + 30), key=lambda b: str(b.network)),
        [(r.ban, r.ended_at, r.end_reason, r.lines, r.sender)
         for r in store.history(ip_address("203.0.113.7"))],
    ]  # fmt: skip
    return answers


def test_the_memory_store_answers_as_the_sqlite_store_does(tmp_path: Path) -> None:
    sqlite = SqliteOffenderStore(tmp_path / "o.sqlite")
    memory = MemoryStore()
    assert isinstance(memory, OffenderStore) and isinstance(MemoryEnforcer(), Enforcer)
    assert script(memory) == script(sqlite)
    sqlite.close()


def test_the_recording_notifier_hears_of_new_bans_only(tmp_path: Path) -> None:
    clock = Clock()
    clock.advance(T0)
    store, notifier = MemoryStore(), RecordingNotifier()
    store.record_bans([decision("198.51.100.1", T0 - 5)])
    app = Appliance(config(tmp_path), store, MemoryEnforcer(), clock, notifier=notifier)
    app.start()  # the restored ban is not news
    for _ in range(3):
        app.receive(message(ssh_failure("203.0.113.7"), at=clock.seconds()))
    clock.advance(0)
    [(ban, lines)] = notifier.banned_calls
    assert ban.network == ip_network("203.0.113.7/32") and len(lines) == 3
    app.stop()
    assert notifier.stopped and store.closed
