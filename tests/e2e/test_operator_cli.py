"""End to end: the operator's CLI against a running daemon (--dry-run): `why` of what `banned`
prints, `status JAIL` with its bans, `whitelist add` of a banned address (named, or lifted
with --unban), `jail get` and `jail unset` applied by a reload, counts in the singular."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.daemon import LOOPBACK_UDP, SSHD_JAIL, Daemon, free_port


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path, LOOPBACK_UDP.format(port=free_port()) + SSHD_JAIL)
    try:
        yield d.start()
    finally:
        d.stop()


def ok(d: Daemon, *args: str) -> str:
    """appliancectl's human output; the edit verbs get the daemon's config file."""
    rc, out, err = d.ctl_rc(*args, "--config", str(d.config))
    assert rc == 0, f"appliancectl {' '.join(args)} exited {rc}: {err}"
    return out


def test_the_operators_day(daemon: Daemon) -> None:
    daemon.ctl("ban", "sshd", "203.0.113.50")
    daemon.ctl("ban", "sshd", "2001:db8:1::5")  # the jail's /64
    shown = sorted(daemon.banned())
    assert shown == ["2001:db8:1::/64", "203.0.113.50/32"]
    for address in shown:  # why takes what banned prints
        jail = daemon.ctl("why", address)["jails"]["sshd"]
        assert jail["active_ban"]["address"] == address

    status = daemon.ctl("status", "sshd")
    assert status["bans_total"] == 2
    assert {b["address"] for b in status["bans"]} == set(shown)
    assert "active bans of sshd: 2" in ok(daemon, "status", "sshd")

    out = ok(daemon, "whitelist", "add", "sshd", "203.0.113.50")
    assert "still banned: 203.0.113.50/32 in sshd" in out
    assert "appliancectl unban 203.0.113.50 --jail sshd" in out
    out = ok(daemon, "whitelist", "add", "--global", "2001:db8:1::/64", "--unban")
    assert "unbanned 2001:db8:1::/64 in sshd" in out
    assert daemon.banned() == {"203.0.113.50/32"}

    assert ok(daemon, "jail", "get", "sshd", "maxretry") == "maxretry = 3  # defaults\n"
    ok(daemon, "jail", "set", "sshd", "maxretry", "2")
    assert daemon.ctl("status", "sshd")["jails"]["sshd"]["maxretry"] == 2
    ok(daemon, "jail", "unset", "sshd", "maxretry")
    assert daemon.ctl("status", "sshd")["jails"]["sshd"]["maxretry"] == 3

    assert ok(daemon, "flush") == "lifted 1 ban\n"
