"""The Appliance: offences -> store -> enforcer, expiry, restart, manual requests.

Driven with a task.Clock, a real SQLite store in tmp_path and the in-memory enforcer.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent

from applianced import views
from applianced.appliance import Appliance, RequestError
from applianced.conf.schema import Config, EnforcementConf
from applianced.enforcement.base import ElementsRefused, Refused, Restored
from applianced.errors import EnforcementError
from applianced.rules.decision import Ban, BanDecision, BanKind, IPAddress
from applianced.store.sqlite import SqliteOffenderStore
from applianced.testing import MemoryEnforcer
from applianced.units import MAX_BAN_SECONDS
from tests.helpers import config, jail_conf, message, record, ssh_failure

T0 = 1_800_000_000.0


def start(
    tmp_path: Path,
    conf: Config | None = None,
    clock: Clock | None = None,
    enforcer: MemoryEnforcer | None = None,
) -> tuple[Appliance, Clock, MemoryEnforcer]:
    clock = clock or Clock()
    if clock.seconds() == 0:
        clock.advance(T0)
    enforcer = enforcer or MemoryEnforcer()
    store = SqliteOffenderStore(tmp_path / "offenders.sqlite")
    app = Appliance(conf or config(tmp_path), store, enforcer, clock)
    app.start()
    return app, clock, enforcer


def attack(app: Appliance, clock: Clock, address: str, times: int = 3, **kw: str) -> None:
    for _ in range(times):
        app.receive(message(ssh_failure(address), at=clock.seconds(), **kw))
    clock.advance(0)


def test_maxretry_failures_ban_in_store_and_enforcer(tmp_path: Path) -> None:
    """Three failures ban the address for bantime, recorded then enforced."""
    app, clock, enforcer = start(tmp_path)
    attack(app, clock, "203.0.113.7")
    ban = enforcer.bans[("sshd", ip_network("203.0.113.7/32"))]
    assert (ban.expires_at, ban.kind, ban.count) == (T0 + 100.0, BanKind.AUTO, 1)
    assert [b.network for b in app.store.active_bans(clock.seconds())] == [ban.network]


def test_offences_of_one_reactor_turn_are_one_batch(tmp_path: Path) -> None:
    """Many offenders in one turn reach the enforcer in one apply call."""
    app, clock, enforcer = start(tmp_path)
    before = enforcer.transactions
    for i in range(50):
        for _ in range(3):
            app.receive(message(ssh_failure(f"203.0.113.{i}"), at=clock.seconds()))
    clock.advance(0)
    assert enforcer.transactions == before + 1
    assert len(enforcer.bans) == 50


def test_a_storm_logs_twenty_ban_lines_a_second_and_counts_the_rest(tmp_path: Path) -> None:
    """Ban lines are capped per second across turns; the rest are summarised once, when the
    second ends (or at stop), and the cap starts again the next second."""
    app, clock, _ = start(tmp_path)

    def texts(events: list[dict[str, Any]]) -> list[str]:
        return [formatEvent(e) for e in events if e.get("log_namespace") == "applianced.appliance"]

    with capturedLogs() as events:
        for turn in range(3):  # 3 turns of 15 bans within one second
            for i in range(15):
                attack(app, clock, f"203.0.113.{turn * 15 + i}")
            clock.advance(0.1)
        lines = texts(events)
        assert sum(t.startswith("ban sshd ") for t in lines) == 20
        assert not any("more bans" in t for t in lines)
        clock.advance(1)  # the second has ended
        assert texts(events)[-1].startswith("... and 25 more bans in the last second")
        attack(app, clock, "198.51.100.1")
        assert texts(events)[-1].startswith("ban sshd 198.51.100.1/32 for ")
        for i in range(25):
            attack(app, clock, f"198.51.100.{10 + i}")
        app.stop()
    assert texts(events)[-2].startswith("... and 6 more bans in the last second")


def test_ban_lines_of_a_new_second_come_after_the_last_seconds_summary(tmp_path: Path) -> None:
    """A turn that runs past the end of the second (its summary not yet logged) logs that
    summary first, then its own bans in the new second's budget; an operator's ban is always
    logged, whatever is left of the budget."""
    app, clock, _ = start(tmp_path)

    def texts(events: list[dict[str, Any]]) -> list[str]:
        return [formatEvent(e) for e in events if e.get("log_namespace") == "applianced.appliance"]

    with capturedLogs() as events:
        for i in range(25):
            attack(app, clock, f"203.0.113.{i}")
        for _ in range(3):
            app.receive(message(ssh_failure("198.51.100.7"), at=clock.seconds()))
        clock.advance(2)  # the turn's flush, queued before the summary, runs first
        summary, late = texts(events)[-2:]
        assert summary.startswith("... and 5 more bans in the last second")
        assert late.startswith("ban sshd 198.51.100.7/32 for ")
        for i in range(25):
            attack(app, clock, f"198.51.100.{100 + i}")
        views.ban(app, "sshd", "192.0.2.9")
        assert texts(events)[-1].startswith("ban sshd 192.0.2.9/32 for ")
    app.stop()


def test_an_active_ban_is_not_doubled(tmp_path: Path) -> None:
    """More failures from a banned address neither re-ban nor extend."""
    app, clock, enforcer = start(tmp_path)
    attack(app, clock, "203.0.113.7")
    clock.advance(10)
    attack(app, clock, "203.0.113.7")
    assert len(app.store.history(ip_network("203.0.113.7/32"))) == 1
    assert enforcer.bans[("sshd", ip_network("203.0.113.7/32"))].expires_at == T0 + 100.0


def test_bans_expire_on_time(tmp_path: Path) -> None:
    """At bantime the ban leaves the enforcer and is recorded as expired."""
    app, clock, enforcer = start(tmp_path)
    attack(app, clock, "203.0.113.7")
    clock.advance(99.9)
    assert enforcer.bans
    clock.advance(0.1)
    assert not enforcer.bans
    (record,) = app.store.history(ip_network("203.0.113.7/32"))
    assert record.end_reason == "expired"


def test_repeat_offenders_escalate_then_get_blacklisted(tmp_path: Path) -> None:
    """bantime doubles per earlier ban; the max_count-th ban is permanent."""
    app, clock, enforcer = start(tmp_path, config(tmp_path, jail_conf(max_count=3)))
    key = ("sshd", ip_network("203.0.113.7/32"))
    durations = []
    for _ in range(3):
        attack(app, clock, "203.0.113.7")
        ban = enforcer.bans[key]
        durations.append(ban.remaining(clock.seconds()))
        clock.advance(1000)
    assert durations == [100.0, 200.0, None]
    assert enforcer.bans[key].kind is BanKind.BLACKLIST


def test_state_survives_a_restart(tmp_path: Path) -> None:
    """A new Appliance on the same store restores bans with their remaining time and counts."""
    app, clock, _ = start(tmp_path)
    attack(app, clock, "203.0.113.7")
    attack(app, clock, "203.0.113.8")
    clock.advance(40)
    app.store.close()  # no graceful stop: as after SIGKILL, only the store remains
    enforcer = MemoryEnforcer()
    app2, _, _ = start(tmp_path, clock=clock, enforcer=enforcer)
    assert {b.network for b in enforcer.bans.values()} == {
        ip_network("203.0.113.7/32"),
        ip_network("203.0.113.8/32"),
    }
    assert all(b.remaining(clock.seconds()) == 60.0 for b in enforcer.bans.values())
    clock.advance(60)
    assert not enforcer.bans
    attack(app2, clock, "203.0.113.7")
    assert enforcer.bans[("sshd", ip_network("203.0.113.7/32"))].count == 2


def test_bans_that_expired_while_down_are_recorded_not_restored(tmp_path: Path) -> None:
    """Downtime longer than the ban: nothing restored, the history says expired."""
    app, clock, _ = start(tmp_path)
    attack(app, clock, "203.0.113.7")
    app.store.close()
    clock.advance(500)
    _, _, enforcer = start(tmp_path, clock=clock)
    assert not enforcer.bans
    (record,) = SqliteOffenderStore(tmp_path / "offenders.sqlite").history(
        ip_network("203.0.113.7/32")
    )
    assert record.end_reason == "expired"


def test_jail_senders_selector_counts_only_its_senders(tmp_path: Path) -> None:
    """A jail with senders ignores what other syslog peers say."""
    conf = config(tmp_path, jail_conf(senders=(ip_network("127.0.0.2/32"),)))
    app, clock, enforcer = start(tmp_path, conf)
    attack(app, clock, "203.0.113.7", sender="127.0.0.3")
    assert not enforcer.bans
    attack(app, clock, "203.0.113.7", sender="127.0.0.2")
    assert enforcer.bans


def test_allowed_senders_are_never_banned(tmp_path: Path) -> None:
    """A message naming the syslog sender's own address bans nobody."""
    app, clock, enforcer = start(tmp_path)
    attack(app, clock, "127.0.0.1", times=10)
    assert not enforcer.bans
    with pytest.raises(RequestError, match="protected"):
        views.ban(app, "sshd", "127.0.0.1")


def test_manual_ban_unban_and_blacklist(tmp_path: Path) -> None:
    """Manual bans take --for or bantime; unban lifts every covering ban; blacklist is permanent."""
    app, clock, enforcer = start(tmp_path)
    ban = views.ban(app, "sshd", "203.0.113.0/24", duration=30.0)
    assert (ban.kind, ban.remaining(clock.seconds())) == (BanKind.MANUAL, 30.0)
    assert views.ban(app, "sshd", "2001:db8::5").network == ip_network("2001:db8::/64")
    lifted = views.unban(app, "203.0.113.9")
    assert [b.network for b in lifted] == [ip_network("203.0.113.0/24")]
    permanent = views.ban(app, "sshd", "198.51.100.7", permanent=True)
    assert permanent.expires_at is None and permanent.kind is BanKind.BLACKLIST
    with pytest.raises(RequestError, match="not blacklisted"):
        views.unban(app, "2001:db8::5", permanent_only=True)
    views.unban(app, "198.51.100.7", permanent_only=True)
    assert set(enforcer.bans) == {("sshd", ip_network("2001:db8::/64"))}


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("nope", "203.0.113.7"), "unknown or disabled jail"),
        (("sshd", "not-an-ip"), "not an IPv4 or IPv6 address"),
        (("sshd", "203.0.113.0/33"), "not an address or CIDR"),
    ],
)
def test_manual_ban_errors(tmp_path: Path, args: tuple[str, str], error: str) -> None:
    """Bad requests are refused with a message that says why."""
    app, _, _ = start(tmp_path)
    with pytest.raises(RequestError, match=error):
        views.ban(app, *args)


def test_unban_of_an_unbanned_address_is_an_error(tmp_path: Path) -> None:
    """The operator learns that nothing was lifted."""
    app, _, _ = start(tmp_path)
    with pytest.raises(RequestError, match="not banned"):
        views.unban(app, "203.0.113.7")


class FlakyEnforcer(MemoryEnforcer):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def apply(self, bans: Sequence[Ban], unbans: Sequence[Ban], now: float) -> None:
        if self.failures:
            self.failures -= 1
            raise EnforcementError("netlink: Operation not permitted")
        super().apply(bans, unbans, now)


def test_refused_batches_are_retried_and_reported(tmp_path: Path) -> None:
    """A failing kernel batch is kept, shown in status and retried with backoff."""
    enforcer = FlakyEnforcer(failures=0)
    app, clock, _ = start(tmp_path, enforcer=enforcer)
    enforcer.failures = 2
    attack(app, clock, "203.0.113.7")
    status = views.status(app)["health"]
    assert status["enforcement_errors"] == 1 and status["unapplied"] == 1
    assert "Operation not permitted" in status["last_error"]
    clock.advance(1.0)  # first retry fails too
    assert not enforcer.bans and views.status(app)["health"]["enforcement_errors"] == 2
    clock.advance(2.0)
    assert enforcer.bans and views.status(app)["health"]["unapplied"] == 0


class RefusingEnforcer(MemoryEnforcer):
    """Applies every change but those of ``refuse``, which it reports as the nftables backend
    does once it has split a refused batch."""

    def __init__(self, refuse: str) -> None:
        super().__init__()
        self.refuse = ip_network(refuse)
        self.refused = 0  # times it was sent

    def apply(self, bans: Sequence[Ban], unbans: Sequence[Ban], now: float) -> None:
        super().apply([b for b in bans if b.network != self.refuse], unbans, now)
        if any(b.network == self.refuse for b in bans):
            self.refused += 1
            raise ElementsRefused([Refused("sshd", str(self.refuse), "Error: value too large")])


def test_refused_elements_are_reported_and_not_retried(tmp_path: Path) -> None:
    """Elements the backend refused alone (the rest of their batch applied) are logged and
    counted, and never sent again: they would be refused again, forever."""
    enforcer = RefusingEnforcer("203.0.113.7/32")
    app, clock, _ = start(tmp_path, enforcer=enforcer)
    attack(app, clock, "203.0.113.7")
    attack(app, clock, "203.0.113.8")
    health = views.status(app)["health"]
    assert health["refused_elements"] == 1 and health["unapplied"] == 0
    assert "203.0.113.7/32 (jail sshd): Error: value too large" in health["last_error"]
    assert set(enforcer.bans) == {("sshd", ip_network("203.0.113.8/32"))}
    assert ("sshd", ip_network("203.0.113.7/32")) in app.active  # the store keeps the ban
    for _ in range(10):
        clock.advance(6.0)  # past every retry delay of the first minute
    assert enforcer.refused == 1, "a refused element was sent again"


def test_why_shows_windows_bans_and_lines(tmp_path: Path) -> None:
    """why: failures in the window, the active ban, the lines with their sender."""
    app, clock, _ = start(tmp_path)
    attack(app, clock, "203.0.113.7")
    app.receive(message(ssh_failure("203.0.113.8"), at=clock.seconds()))
    seen = views.why(app, "203.0.113.7")
    assert seen["jails"]["sshd"]["active_ban"]["count"] == 1
    assert seen["history"][0]["lines"][0].startswith("[127.0.0.1] mx sshd[1]: Failed password")
    assert views.why(app, "203.0.113.8")["jails"]["sshd"]["failures"] == 1


def test_reload_keeps_bans_of_kept_jails_and_drops_removed_ones(tmp_path: Path) -> None:
    """Reload: a kept jail keeps bans and windows; a removed jail's bans leave the enforcer."""
    conf = config(tmp_path, jail_conf(), jail_conf("other", programs=("other",)))
    app, clock, enforcer = start(tmp_path, conf)
    attack(app, clock, "203.0.113.7")
    views.ban(app, "other", "203.0.113.9")
    app.receive(message(ssh_failure("203.0.113.8"), at=clock.seconds()))
    app.reload(replace(conf, jails=(jail_conf(bantime=999.0),)))
    assert set(enforcer.bans) == {("sshd", ip_network("203.0.113.7/32"))}
    assert views.why(app, "203.0.113.8")["jails"]["sshd"]["failures"] == 1


def test_bantime_jitter_spreads_expiries_within_the_bound(tmp_path: Path) -> None:
    """Bans of one storm get up to bantime_jitter extra seconds, each its own."""
    conf = config(tmp_path, jail_conf(bantime_jitter=10.0))
    app, clock, enforcer = start(tmp_path, conf)
    for i in range(20):
        for _ in range(3):
            app.receive(message(ssh_failure(f"203.0.113.{i}"), at=clock.seconds()))
    clock.advance(0)
    left = [b.remaining(clock.seconds()) or 0.0 for b in enforcer.bans.values()]
    assert all(100.0 <= x <= 110.0 for x in left)
    assert len(set(left)) > 1


def test_flush_lifts_every_ban_and_on_stop_flush_empties_the_backend(tmp_path: Path) -> None:
    """flush ends every active ban; on_stop = flush empties the kernel at stop only."""
    app, clock, enforcer = start(tmp_path)
    attack(app, clock, "203.0.113.7")
    views.ban(app, "sshd", "198.51.100.1", permanent=True)
    assert len(app.flush()) == 2
    assert not enforcer.bans and not app.store.active_bans(clock.seconds())
    conf = replace(config(tmp_path), enforcement=EnforcementConf(on_stop="flush"))
    app.store.close()
    app2, clock, enforcer2 = start(tmp_path, conf, clock=clock)
    attack(app2, clock, "203.0.113.8")
    app2.stop()
    assert not enforcer2.bans
    assert SqliteOffenderStore(tmp_path / "offenders.sqlite").active_bans(clock.seconds())


def test_use_dns_jails_resolve_hostnames_off_the_hot_path(tmp_path: Path) -> None:
    """<HOST> hostnames (use_dns jails) are resolved by the injected resolver, then counted."""
    asked: list[str] = []

    def resolver(host: str) -> Deferred[Sequence[IPAddress]]:
        asked.append(host)
        if host == "nx.example":
            return fail(OSError("Name or service not known"))
        return succeed([ip_address("203.0.113.50")])

    conf = config(tmp_path, jail_conf(use_dns=True))
    clock = Clock()
    clock.advance(T0)
    store = SqliteOffenderStore(tmp_path / "offenders.sqlite")
    enforcer = MemoryEnforcer()
    app = Appliance(conf, store, enforcer, clock, resolver=resolver)
    app.start()
    for host in ("evil.example", "evil.example", "nx.example", "evil.example"):
        app.receive(message(ssh_failure(host), at=clock.seconds()))
    clock.advance(0)
    assert asked == ["evil.example", "evil.example", "nx.example", "evil.example"]
    assert ("sshd", ip_network("203.0.113.50/32")) in enforcer.bans
    assert views.status(app)["health"]["dns_failed"] == 1


def test_without_use_dns_hostnames_are_not_failures(tmp_path: Path) -> None:
    """The default: <HOST> takes addresses only, a hostname is no match and costs no lookup."""
    app, clock, enforcer = start(tmp_path)
    for _ in range(5):
        app.receive(message(ssh_failure("evil.example"), at=clock.seconds()))
    clock.advance(0)
    assert not enforcer.bans and app.engine.jails["sshd"].stats.matched == 0


def test_evidence_keeps_the_sender_and_the_message_time(tmp_path: Path) -> None:
    """Matched lines say who delivered them and the time written in the message."""
    from datetime import UTC, datetime

    app, clock, _ = start(tmp_path)
    stamp = datetime(2026, 11, 22, 10, 0, 1, tzinfo=UTC)
    for _ in range(3):
        m = replace(message(ssh_failure("203.0.113.7"), at=clock.seconds()), timestamp=stamp)
        app.receive(m)
    clock.advance(0)
    (line, *_) = views.why(app, "203.0.113.7")["history"][0]["lines"]
    assert line.startswith("[127.0.0.1] 2026-11-22T10:00:01+00:00 mx sshd[1]: Failed password")


def test_any_sender_allowed_does_not_protect_every_address(tmp_path: Path) -> None:
    """allowed_senders = 0.0.0.0/0 (all senders) must not make every address unbannable."""
    conf = config(tmp_path)
    listener = replace(conf.listeners[0], allowed_senders=(ip_network("0.0.0.0/0"),))
    app, clock, enforcer = start(tmp_path, replace(conf, listeners=(listener,)))
    attack(app, clock, "203.0.113.7")
    assert ("sshd", ip_network("203.0.113.7/32")) in enforcer.bans


def test_why_finds_a_ban_that_covers_the_address(tmp_path: Path) -> None:
    """An address inside a banned /24 shows that ban as its active one."""
    app, _, _ = start(tmp_path)
    views.ban(app, "sshd", "198.51.100.0/24")
    assert (
        views.why(app, "198.51.100.77")["jails"]["sshd"]["active_ban"]["address"]
        == "198.51.100.0/24"
    )


def test_start_restores_with_the_garbage_collector_paused(tmp_path: Path) -> None:
    """The restore builds its objects with the cyclic GC off, and turns it back on after."""
    seen: list[bool] = []

    class Watching(MemoryEnforcer):
        def restore(self, active: Sequence[Ban], now: float) -> None:
            seen.append(gc.isenabled())
            super().restore(active, now)

    assert gc.isenabled()
    start(tmp_path, enforcer=Watching())
    assert seen == [False] and gc.isenabled()


class RowsEnforcer(MemoryEnforcer):
    """Restores from the store's rows, as nftables does, slowly (a kernel transaction) and in
    the worker thread the Appliance starts for it; fails when ``error`` is set."""

    def __init__(self, error: EnforcementError | None = None) -> None:
        super().__init__()
        self.error = error
        self.restored: list[Restored] = []
        self.thread: str | None = None

    def restore_rows(self, active: Sequence[Restored], now: float) -> None:
        self.thread = threading.current_thread().name
        time.sleep(0.2)
        if self.error is not None:
            raise self.error
        self.restored = list(active)


def _store_two_bans(tmp_path: Path) -> None:
    app, clock, _ = start(tmp_path)
    attack(app, clock, "203.0.113.7")
    views.ban(app, "sshd", "2001:db8::/64", permanent=True)
    app.stop()


def test_start_restores_rows_in_a_worker_and_waits_for_it(tmp_path: Path) -> None:
    """An enforcer with restore_rows gets every active ban as (jail, network text, expiry)
    from a worker thread, and start returns only once it is done: the listeners open after."""
    _store_two_bans(tmp_path)
    enforcer = RowsEnforcer()
    app, _, _ = start(tmp_path, enforcer=enforcer)
    assert enforcer.thread is not None and enforcer.thread != threading.current_thread().name
    assert sorted(enforcer.restored, key=str) == [
        ("sshd", "2001:db8::/64", None),
        ("sshd", "203.0.113.7/32", T0 + 100.0),
    ]
    assert {str(n) for _, n in app.active} == {"203.0.113.7/32", "2001:db8::/64"}


def test_a_restore_with_refused_rows_is_not_retried(tmp_path: Path) -> None:
    """A restore that applied every row but those it reports refused leaves nothing to retry:
    the refused rows are counted and named in status."""
    _store_two_bans(tmp_path)
    refused = Refused("sshd", "203.0.113.7/32", "Error: value too large")
    app, _, _ = start(tmp_path, enforcer=RowsEnforcer(ElementsRefused([refused])))
    health = views.status(app)["health"]
    assert health["refused_elements"] == 1 and health["unapplied"] == 0
    assert health["enforcement_errors"] == 0 and "203.0.113.7/32" in health["last_error"]


def test_a_refused_row_restore_is_kept_for_retry(tmp_path: Path) -> None:
    """The worker's EnforcementError reaches start as a restore() refusal did: kept, shown in
    status, retried as one batch of every active ban."""
    _store_two_bans(tmp_path)
    enforcer = RowsEnforcer(EnforcementError("nftables refused to restore 2 bans: boom"))
    app, clock, _ = start(tmp_path, enforcer=enforcer)
    health = views.status(app)["health"]
    assert health["enforcement_errors"] == 1 and health["unapplied"] == 2
    assert "restore 2 bans: boom" in health["last_error"]
    clock.advance(1.0)
    assert set(enforcer.bans) == set(app.active) and views.status(app)["health"]["unapplied"] == 0


def test_a_nat64_offender_is_banned_alone_from_a_log_line_and_by_hand(tmp_path: Path) -> None:
    """64:ff9b::198.51.100.200 is one IPv4 host behind a NAT64 translator: its /64 would
    cover every IPv4 host behind it, so the ban is the address itself."""
    app, clock, enforcer = start(tmp_path)
    attack(app, clock, "64:ff9b::198.51.100.200")
    assert list(enforcer.bans) == [("sshd", ip_network("64:ff9b::c633:64c8/128"))]
    manual = views.ban(app, "sshd", "64:ff9b::198.51.100.201")
    assert manual.network == ip_network("64:ff9b::c633:64c9/128")
    why = views.why(app, "64:ff9b::198.51.100.202")
    assert why["jails"]["sshd"]["active_ban"] is None


def test_an_ipv4_mapped_offender_is_its_ipv4_address_everywhere(tmp_path: Path) -> None:
    """A log line, a manual ban and an ignore entry written ::ffff:a.b.c.d all mean a.b.c.d."""
    conf = config(tmp_path, jail_conf(ignoreip=(ip_network("198.51.100.201/32"),)))
    app, clock, enforcer = start(tmp_path, conf)
    attack(app, clock, "::ffff:198.51.100.201")
    assert not enforcer.bans
    attack(app, clock, "::ffff:198.51.100.7")
    assert list(enforcer.bans) == [("sshd", ip_network("198.51.100.7/32"))]
    with pytest.raises(RequestError, match="protected"):
        views.ban(app, "sshd", "::ffff:198.51.100.201/128")


def test_stored_bans_beyond_the_kernels_limit_are_restored_at_the_limit(tmp_path: Path) -> None:
    """A store written before durations were bounded may hold a 166-week ban, or an endless
    one from ``"duration": Infinity``: nft refuses such an element, so the restored ban ends
    MAX_BAN_SECONDS from the restart, in the kernel and in the daemon alike."""
    store = SqliteOffenderStore(tmp_path / "offenders.sqlite")
    long_ones = {"198.51.100.1/32": 166 * 604800.0, "198.51.100.2/32": float("inf")}
    decisions = [
        BanDecision("sshd", ip_network(n), d, BanKind.MANUAL, 1, T0 - 60)
        for n, d in long_ones.items()
    ]
    decisions.append(BanDecision("sshd", ip_network("198.51.100.3/32"), 600.0, BanKind.AUTO, 1, T0))
    record(store, decisions)
    store.close()
    app, clock, enforcer = start(tmp_path)
    ends = {str(n): b.expires_at for (_, n), b in enforcer.bans.items()}
    limit = T0 + MAX_BAN_SECONDS
    assert ends == {"198.51.100.1/32": limit, "198.51.100.2/32": limit, "198.51.100.3/32": T0 + 600}
    assert {str(b.network): b.expires_at for b in app.banned()} == ends
    clock.advance(MAX_BAN_SECONDS)
    assert enforcer.bans == {}


def test_a_ban_from_the_cluster_beyond_the_kernels_limit_ends_at_the_limit(tmp_path: Path) -> None:
    """Another appliance of an earlier version may share a 166-week ban: it is enforced to the
    limit, like a restored one."""
    app, _, enforcer = start(tmp_path)
    net = ip_network("198.51.100.4/32")
    app.adopt([Ban("sshd", net, T0, T0 + 166 * 604800.0, BanKind.MANUAL, 1)], [])
    assert enforcer.bans[("sshd", net)].expires_at == T0 + MAX_BAN_SECONDS
    assert app.banned()[0].expires_at == T0 + MAX_BAN_SECONDS


def test_the_stop_line_says_the_bans_stay_in_the_kernel(tmp_path: Path) -> None:
    """on_stop = keep: how many bans stay (permanent ones told apart), how they end, that the
    next start restores them; a dry run says nothing was enforced."""

    class Kernel(MemoryEnforcer):
        name = "nftables"

    def stop_line(enforcer: MemoryEnforcer, where: Path) -> str:
        where.mkdir()
        app, clock, _ = start(where, enforcer=enforcer)
        attack(app, clock, "203.0.113.7")
        views.ban(app, "sshd", "198.51.100.1", permanent=True)
        with capturedLogs() as events:
            app.stop()
        return formatEvent(events[-1])

    assert stop_line(Kernel(), tmp_path / "kernel") == (
        "stopping; 2 active bans stay in the nftables backend (1 permanent): each temporary "
        "one ends by its own timeout there, and the next start restores every active one "
        "from the store"
    )
    assert stop_line(MemoryEnforcer(), tmp_path / "dry") == (
        "stopping; dry run: 2 active bans were enforced nowhere; the next start restores "
        "every active one from the store"
    )


def test_found_lines_come_before_the_ban_line_with_its_sender(tmp_path: Path) -> None:
    """A log_found jail logs each failure, then the ban names the sender and deciding line."""
    app, clock, _ = start(tmp_path, config(tmp_path, jail_conf(log_found=True)))
    with capturedLogs() as events:
        attack(app, clock, "203.0.113.7", sender="192.0.2.10")
    texts = [formatEvent(e) for e in events if e["log_namespace"].startswith("applianced.")]
    line = f"mx sshd[1]: {ssh_failure('203.0.113.7')}"
    assert texts == [
        *[f'found sshd 203.0.113.7; sender 192.0.2.10: "{line}"'] * 3,
        f'ban sshd 203.0.113.7/32 for 1m40s (auto, ban #1); sender 192.0.2.10: "{line}"',
    ]
