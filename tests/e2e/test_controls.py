"""End to end: a control character smuggled into a message by the real logger, over real
sockets to the real applianced (--dry-run, loopback), never gets an innocent address banned.

Issue 15, item 6: one dovecot datagram whose user field held a raw LF before a fake ``rip=``
banned the innocent address; the parser now escapes it as rsyslog does (``#012``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.e2e.daemon import LOOPBACK, Daemon, free_port, logger, wait_for

pytestmark = pytest.mark.skipif(shutil.which("logger") is None, reason="util-linux logger missing")

CONFIG = (
    LOOPBACK
    + """
[jails.dovecot]
filter = "dovecot"
ports = [143]
maxretry = 2
"""
)
INNOCENT = "198.51.100.22"
OFFENDER = "203.0.113.122"
# The user name is attacker-controlled: "x>, method=PLAIN, rip=<innocent>, lip=...<LF>".
SMUGGLED = (
    "imap-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<x>, method=PLAIN,"
    f" rip={INNOCENT}, lip=192.0.2.1\n>, method=PLAIN, rip={OFFENDER}, lip=192.0.2.1,"
    " session=<q1w2e3r4>"
)


@pytest.mark.parametrize(
    ("transport", "extra"), [("udp", ("--rfc3164",)), ("tcp", ("--octet-count", "--rfc5424"))]
)
def test_a_raw_lf_in_the_user_field_bans_the_sender_not_the_smuggled_address(
    tmp_path: Path, transport: str, extra: tuple[str, ...]
) -> None:
    port = free_port()
    d = Daemon(tmp_path, CONFIG.format(port=port)).start()
    try:
        for _ in range(2):
            logger(port, SMUGGLED, tag="dovecot", transport=transport, extra=extra)
        wait_for("the offender's ban", lambda: f"{OFFENDER}/32" in d.banned())
        assert f"{INNOCENT}/32" not in d.banned()
        why = d.ctl("why", OFFENDER)
        assert any("lip=192.0.2.1#012>" in line for line in why["history"][0]["lines"])
    finally:
        d.stop()
