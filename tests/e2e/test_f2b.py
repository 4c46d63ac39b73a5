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
