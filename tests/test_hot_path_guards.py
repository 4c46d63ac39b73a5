"""Guards of the hot path that do not time anything (benchmarks assert nothing; these do):

- a message from a program no jail reads costs no filter call and no regex, and a message a
  jail reads but without its filter's literal costs no regex, for every shipped jail; a
  failure without an ignoreregex's literal does not run that ignoreregex;
- a burst of offences settled in one reactor turn is one enforcer call and one libnftables
  transaction.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from applianced import views
from applianced.appliance import Appliance
from applianced.conf.load import load_config
from applianced.enforcement.nftables import NftablesEnforcer
from applianced.rules.engine import Engine
from applianced.rules.filters import Filter
from applianced.rules.jail import Jail, jail_filter
from applianced.store.sqlite import SqliteOffenderStore
from applianced.testing import MemoryEnforcer
from tests.helpers import config, message, ssh_failure

SHIPPED = (
    Path(__file__).resolve().parents[1] / "applianced" / "conf" / "defaults" / "appliance.toml"
)
T0 = 1_800_000_000.0


class SpyPattern:
    """A compiled regex that counts the calls made to it."""

    def __init__(self, pattern: Any, calls: list[str]) -> None:
        self._pattern = pattern
        self._calls = calls

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._pattern, name)
        if not callable(method):
            return method

        def spied(*args: Any, **kwargs: Any) -> Any:
            self._calls.append(name)
            return method(*args, **kwargs)

        return spied


def spied_engine(calls: list[str]) -> Engine:
    """Every shipped jail, enabled, with every compiled regex of its filter spied on."""
    jails = []
    for conf in load_config(SHIPPED).jails:
        filt = jail_filter(replace(conf, enabled=True))
        filt._fail = tuple((lit, SpyPattern(rx, calls), rd) for lit, rx, rd in filt._fail)
        filt._ignore = tuple((lit, SpyPattern(rx, calls)) for lit, rx in filt._ignore)
        if filt._pref is not None:
            filt._pref = SpyPattern(filt._pref, calls)
        jails.append(Jail(replace(conf, enabled=True), filt))
    return Engine(jails)


def test_a_program_no_jail_reads_costs_no_filter_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """The route of an unread program is empty: no Filter.match, no regex."""
    calls: list[str] = []
    engine = spied_engine(calls)
    matches: list[str] = []
    real_match = Filter.match

    def counting(self: Filter, text: str) -> Any:
        matches.append(text)
        return real_match(self, text)

    monkeypatch.setattr(Filter, "match", counting)
    line = "warning: unknown[192.0.2.7]: SASL LOGIN authentication failed: UGFzc3dvcmQ6"
    assert engine.feed(message(line, app="cron"), T0) == []
    assert (matches, calls) == ([], [])
    # The same line from the program postfix-sasl reads goes through its filter and regex:
    # the spies see what the shortcut skips.
    assert engine.feed(message(line, app="postfix/smtpd"), T0) == []
    assert matches and "search" in calls


def test_a_read_program_without_the_literal_costs_no_regex() -> None:
    """A benign line of a program jails read stops at the literal prefilter of each."""
    calls: list[str] = []
    engine = spied_engine(calls)
    benign = {
        "postfix/smtpd": "connect from mail.example.net[198.51.100.4]",
        "dovecot": "imap-login: Login: user=<alice>, method=PLAIN, rip=198.51.100.4",
        "sshd": "Accepted publickey for alice from 198.51.100.4 port 50000 ssh2",
    }
    for app, line in benign.items():
        assert engine.route(app), f"no shipped jail reads {app}"
        assert engine.feed(message(line, app=app), T0) == []
    assert calls == []


def test_a_failure_without_the_ignoreregex_literal_runs_no_ignoreregex() -> None:
    """postfix-sasl's ignoreregex needs "Connection lost to authentication server": an ordinary
    failure costs one regex (the failregex), the exception two and is no failure."""
    calls: list[str] = []
    engine = spied_engine(calls)
    head = "warning: unknown[192.0.2.7]: SASL LOGIN authentication failed: "
    engine.feed(message(head + "UGFzc3dvcmQ6", app="postfix/smtpd"), T0)
    assert calls == ["search"]
    calls.clear()
    lost = head + "Connection lost to authentication server"
    assert engine.feed(message(lost, app="postfix/smtpd"), T0) == []
    assert calls == ["search", "search"]


class CountingNft:
    """A libnftables context that accepts everything and counts the transactions."""

    def __init__(self) -> None:
        self.transactions = 0

    def set_json_output(self, value: bool) -> bool:
        return True

    def set_terse_output(self, value: bool) -> bool:
        return False

    def json_cmd(self, commands: Any) -> tuple[int, Any, str]:
        self.transactions += 1
        return 0, {"nftables": []}, ""

    def cmd(self, commands: str) -> tuple[int, Any, str]:
        self.transactions += 1
        return 0, {"nftables": []}, ""


def burst(app: Appliance, clock: Clock, offenders: int) -> None:
    for i in range(offenders):
        for _ in range(3):  # the helpers' jail: maxretry 3
            app.receive(message(ssh_failure(f"198.18.{i // 256}.{i % 256}"), at=clock.seconds()))
    clock.advance(0)


def started(tmp_path: Path, enforcer: Any) -> tuple[Appliance, Clock]:
    clock = Clock()
    clock.advance(T0)
    app = Appliance(config(tmp_path), SqliteOffenderStore(tmp_path / "o.sqlite"), enforcer, clock)
    app.start()
    return app, clock


def test_a_burst_in_one_turn_is_one_enforcer_call(tmp_path: Path) -> None:
    enforcer = MemoryEnforcer()
    app, clock = started(tmp_path, enforcer)
    before = enforcer.transactions
    burst(app, clock, 1000)
    assert (enforcer.transactions - before, len(enforcer.bans)) == (1, 1000)


def test_a_burst_in_one_turn_is_one_libnftables_transaction(tmp_path: Path) -> None:
    nft = CountingNft()
    app, clock = started(tmp_path, NftablesEnforcer(nft=nft))  # type: ignore[arg-type]
    before = nft.transactions
    burst(app, clock, 1000)
    assert nft.transactions - before == 1
    assert views.status(app)["totals"]["bans"] == 1000
