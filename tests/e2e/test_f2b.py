"""End to end: the real daemon with a jail whose filter is a fail2ban .conf file bans an
address from messages sent with the real logger (--dry-run, loopback)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.e2e.daemon import LOOPBACK_UDP, Daemon, free_port, logger, wait_for

pytestmark = pytest.mark.skipif(shutil.which("logger") is None, reason="util-linux logger missing")

F2B = Path(__file__).parent.parent / "data" / "f2b"

CONFIG = (
    LOOPBACK_UDP
    + """
[defaults]
bantime = "1h"
maxretry = 3

[jails.demo-path]
filter = "{conf}"
ports = [22]

[jails.demo-dir]
filter_dir = "{dir}"
filter = "demo[mode=aggressive]"
ports = [22]
"""
)


def test_a_fail2ban_conf_jail_bans_through_its_prefix_and_modes(tmp_path: Path) -> None:
    """Both filter forms load; the .conf's prefregex sees `host demo[pid]: msg` and bans."""
    port = free_port()
    d = Daemon(tmp_path, CONFIG.format(port=port, conf=F2B / "demo.conf", dir=F2B)).start()
    try:
        for _ in range(3):
            logger(
                port,
                "auth failed for bob from 203.0.113.50 port 22",
                tag="demo",
                extra=("--rfc3164",),
            )
            logger(port, "probe from 203.0.113.51", tag="demo", extra=("--rfc3164",))
            logger(port, "auth failed for bob from 203.0.113.52", tag="other", extra=("--rfc3164",))

        def bans() -> dict[str, set[str]]:
            out: dict[str, set[str]] = {}
            for b in d.ctl("banned"):
                out.setdefault(b["address"], set()).add(b["jail"])
            return out

        wait_for(
            "the bans",
            lambda: (
                bans().get("203.0.113.50/32") == {"demo-path", "demo-dir"}
                and bans().get("203.0.113.51/32") == {"demo-dir"}
            ),
        )
        assert "203.0.113.52/32" not in bans()  # another program: the prefix does not match
        status = d.ctl("status")
        assert status["jails"]["demo-path"]["matched"] == 3
    finally:
        d.stop()


MULTI = (
    LOOPBACK_UDP
    + """
[defaults]
bantime = "1h"
maxretry = 1

[jails.conn]
filter = "{conn}"
ports = [22]

[jails.pair]
filter = "{pair}"
ports = [22]
"""
)


def test_multi_line_fail2ban_filters_ban_from_lines_of_one_pid(tmp_path: Path) -> None:
    """<F-MLFID> (the address on one line, the failure on a later one of the same pid) and
    maxlines = 2 (a failure spread over two lines of one pid), through logger and the daemon;
    the same lines under two pids ban nothing."""
    conn = tmp_path / "conn.conf"
    conn.write_text(
        "[Definition]\n"
        "_daemon = conn\n"
        "prefregex = ^\\s*\\S+ <F-MLFID>%(_daemon)s\\[\\d+\\]</F-MLFID>: "
        "<F-CONTENT>.+</F-CONTENT>$\n"
        "failregex = ^<F-NOFAIL>connect from</F-NOFAIL> <HOST>$\n"
        "            ^too many failures for <F-USER>\\S+</F-USER>$\n"
    )
    pair = tmp_path / "pair.conf"
    pair.write_text(
        "[Definition]\n"
        "_daemon = pair\n"
        "failregex = ^\\s*\\S+ %(_daemon)s\\[\\d+\\]: login begins\\n"
        "\\s*\\S+ %(_daemon)s\\[\\d+\\]: login failed from <HOST>$\n"
        "maxlines = 2\n"
    )
    port = free_port()
    d = Daemon(tmp_path, MULTI.format(port=port, conn=conn, pair=pair)).start()
    try:
        sends = [
            ("conn", "10", "connect from 203.0.113.60"),
            ("conn", "11", "connect from 203.0.113.61"),
            ("conn", "10", "too many failures for bob"),
            ("conn", "12", "too many failures for eve"),  # pid 12 named no address
            ("pair", "20", "login begins"),
            ("pair", "21", "login failed from 203.0.113.71"),  # another pid: no begin
            ("pair", "20", "login failed from 203.0.113.70"),
        ]
        for tag, pid, text in sends:
            logger(port, text, tag=tag, extra=("--rfc3164", f"--id={pid}"))
        wanted = {"203.0.113.60/32": "conn", "203.0.113.70/32": "pair"}
        wait_for(
            "the bans",
            lambda: {b["address"]: b["jail"] for b in d.ctl("banned")} == wanted,
        )
        status = d.ctl("status")
        assert status["jails"]["conn"]["matched"] == 1
        assert status["jails"]["pair"]["matched"] == 1
    finally:
        d.stop()


USEDNS = (
    LOOPBACK_UDP
    + """
[defaults]
bantime = "1h"
maxretry = 1

[jails.fallback]
failregex = ['^login failed from <HOST>$']
programs = ["web"]
ports = [80]

[jails.quiet]
failregex = ['^login failed from <HOST>$']
programs = ["web"]
ports = [80]
usedns = "no"
"""
)


def test_a_name_is_resolved_with_a_warning_where_usedns_is_not_set(tmp_path: Path) -> None:
    """fail2ban's default, usedns = "warn": a jail that does not set it resolves the name
    (localhost, from /etc/hosts: no query leaves the machine) and says so once; a jail with
    usedns = "no" ignores the name. Loopback is never banned."""
    port = free_port()
    d = Daemon(tmp_path, USEDNS.format(port=port)).start()
    try:
        for _ in range(2):
            logger(port, "login failed from localhost", tag="web", extra=("--rfc3164",))
        logger(port, "login failed from 203.0.113.80", tag="web", extra=("--rfc3164",))
        wait_for("the address's bans", lambda: len(d.ctl("banned")) == 2)
        wait_for("the warning", lambda: "usedns = warn" in d.output)
        warned = [line for line in d.output.splitlines() if "usedns = warn" in line]
        assert len(warned) == 1 and "jail fallback resolves the host name localhost" in warned[0]
        assert {b["jail"] for b in d.ctl("banned")} == {"fallback", "quiet"}
    finally:
        d.stop()
