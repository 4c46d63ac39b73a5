"""The operator's views: targets parsed on the control side, the Appliance acting on networks,
and the stats snapshot that status and the metrics read."""

from __future__ import annotations

from ipaddress import ip_network
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from applianced import views
from applianced.appliance import Appliance, RequestError
from applianced.testing import MemoryEnforcer, MemoryStore
from tests.helpers import config, jail_conf, message, ssh_failure

T0 = 1_800_000_000.0


def running(tmp_path: Path) -> tuple[Appliance, Clock]:
    clock = Clock()
    clock.advance(T0)
    conf = config(tmp_path, jail_conf(), jail_conf("postfix", programs=("postfix/smtpd",)))
    app = Appliance(conf, MemoryStore(), MemoryEnforcer(), clock)
    app.start()
    return app, clock


def test_targets_are_parsed_here_and_the_appliance_acts_on_networks(tmp_path: Path) -> None:
    app, _ = running(tmp_path)
    assert views.ban(app, "sshd", "2001:db8::5").network == ip_network("2001:db8::/64")
    assert app.unban(ip_network("192.0.2.0/24")) == []  # nothing to lift is no error here
    with pytest.raises(RequestError, match=r"^192\.0\.2\.7 is not banned in jail postfix$"):
        views.unban(app, "192.0.2.7", "postfix")
    with pytest.raises(RequestError, match="unknown or disabled jail 'nope'"):
        views.unban(app, "not-an-address", "nope")  # the jail is checked first


def test_the_stats_snapshot_is_a_copy_of_one_instant(tmp_path: Path) -> None:
    app, clock = running(tmp_path)
    for _ in range(3):
        app.receive(message(ssh_failure("203.0.113.7"), at=clock.seconds()))
    clock.advance(0)
    views.ban(app, "sshd", "198.51.100.1", permanent=True)
    views.ban(app, "postfix", "198.51.100.2")
    clock.advance(5)
    stats = app.stats()
    assert (stats.uptime, stats.backend, list(stats.jails)) == (5.0, "memory", ["sshd", "postfix"])
    sshd = stats.jails["sshd"]
    assert dict(sshd.active) == {"auto": 1, "blacklist": 1}
    assert (sshd.banned, sshd.blacklisted, sshd.matched, sshd.offences) == (1, 1, 3, 1)
    assert (stats.jails["postfix"].banned, stats.health.bans_total) == (1, 3)
    assert dict(stats.bans_by_kind) == {
        ("sshd", "auto"): 1,
        ("sshd", "blacklist"): 1,
        ("postfix", "manual"): 1,
    }
    app.receive(message(ssh_failure("203.0.113.8"), at=clock.seconds()))
    views.unban(app, "198.51.100.2")
    assert (stats.jails["sshd"].matched, stats.health.unbans_total) == (3, 0)
    assert stats.receiver is not app.receiver_stats


@pytest.mark.parametrize(
    ("text", "shown", "jail"),
    [
        ("203.0.113.50/32", "203.0.113.50", "sshd"),  # as `banned` prints a host ban
        ("203.0.113.50", "203.0.113.50", "sshd"),
        ("2001:db8:1::1/128", "2001:db8:1::1", "postfix"),
        ("2001:db8::/64", "2001:db8::/64", "postfix"),  # a prefix ban
        ("2001:db8::5", "2001:db8::5", "postfix"),
    ],
)
def test_why_takes_the_forms_banned_prints(
    tmp_path: Path, text: str, shown: str, jail: str
) -> None:
    """`why` takes an address or the ADDR/len that `banned` shows; a prefix's view is its
    ban, its history and the failures of the jail's network."""
    app, clock = running(tmp_path)
    for _ in range(3):
        app.receive(message(ssh_failure("203.0.113.50"), at=clock.seconds()))
    clock.advance(0)
    views.ban(app, "postfix", "2001:db8::5")  # widened to the jail's /64
    views.ban(app, "postfix", "2001:db8:1::1/128")
    r = views.why(app, text)
    assert r["address"] == shown
    assert r["jails"][jail]["active_ban"] is not None
    assert [h["jail"] for h in r["history"]] == [jail]
    other = "postfix" if jail == "sshd" else "sshd"
    assert r["jails"][other]["active_ban"] is None


def test_why_refuses_what_is_not_an_address(tmp_path: Path) -> None:
    app, _ = running(tmp_path)
    with pytest.raises(RequestError, match="is not an address or CIDR"):
        views.why(app, "203.0.113.50/33")


def test_status_of_one_jail_lists_its_newest_bans_bounded(tmp_path: Path) -> None:
    """`status JAIL` shows that jail's active bans, the newest first, at most STATUS_BANS of
    them with the count of all; status of every jail lists none."""
    app, clock = running(tmp_path)
    for i in range(views.STATUS_BANS + 2):
        views.ban(app, "sshd", f"198.51.100.{i}")
        clock.advance(1)
    views.ban(app, "postfix", "203.0.113.1")
    r = views.status(app, "sshd")
    assert r["bans_total"] == views.STATUS_BANS + 2
    assert [b["address"] for b in r["bans"][:2]] == ["198.51.100.51/32", "198.51.100.50/32"]
    assert len(r["bans"]) == views.STATUS_BANS and {b["jail"] for b in r["bans"]} == {"sshd"}
    assert "bans" not in views.status(app)
