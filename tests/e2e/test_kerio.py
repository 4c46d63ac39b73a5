"""End to end: the shipped kerio jail in the real daemon bans from Kerio Connect's Security log
lines as Kerio sends them to syslog, its own date at the head of the text, under the tags it is
seen with (real logger, loopback, --dry-run)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.e2e.daemon import LOOPBACK_UDP, Daemon, free_port, logger, wait_for

pytestmark = pytest.mark.skipif(shutil.which("logger") is None, reason="util-linux logger missing")

CONFIG = (
    LOOPBACK_UDP
    + """
[jails.kerio]
filter = "kerio"
ports = [25]
maxretry = 2
"""
)


def test_kerio_lines_with_their_own_date_ban(tmp_path: Path) -> None:
    port = free_port()
    d = Daemon(tmp_path, CONFIG.format(port=port)).start()
    try:
        for tag, address in (("mailserver", "203.0.113.60"), ("kerio-connect", "203.0.113.61")):
            for second in (45, 46):
                logger(
                    port,
                    f"[17/Jun/2011 17:00:{second}] SMTP Spam attack detected from {address}, "
                    "client closed connection before SMTP greeting",
                    tag=tag,
                    extra=("--rfc3164",),
                )

        def banned() -> set[str]:
            return {b["address"] for b in d.ctl("banned")}

        wait_for("both bans", lambda: {"203.0.113.60/32", "203.0.113.61/32"} <= banned())
        assert d.ctl("status")["jails"]["kerio"]["matched"] == 4
    finally:
        d.stop()
