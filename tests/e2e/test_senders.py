"""End to end: the senders and the silence alarm with the real daemon (--dry-run), the real
``logger`` over UDP on loopback and a real SMTP server (aiosmtpd on loopback).

A watched sender (sender_silence = "2s") sends with ``logger``, then stops: `status` shows it
silent, the log has its WARNING, a mail says so; it sends again: the return is in the log,
`status` and a second mail. `senders` lists its figures, the ban its lines led to included.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.daemon import LOOPBACK_UDP, SSHD_JAIL, Daemon, free_port, logger, wait_for
from tests.e2e.test_mail import Smtp

pytestmark = pytest.mark.skipif(shutil.which("logger") is None, reason="util-linux logger missing")

SILENCE = 2.0
CONFIG = (
    LOOPBACK_UDP.replace(
        'allowed_senders = ["127.0.0.1/32"]',
        'allowed_senders = ["127.0.0.1/32"]\nsender_silence = "2s"',
    )
    + SSHD_JAIL
    + """
[notify]
to = ["admin@example.org"]
from = "appliance@example.org"
smarthost = "127.0.0.1"
port = {smtp}
starttls = "off"
timeout = "5s"
"""
)


@pytest.fixture
def smtp() -> Iterator[Smtp]:
    server = Smtp(free_port()).start()
    try:
        yield server
    finally:
        server.stop()


def silent(d: Daemon) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = d.ctl("status")["senders"]["silent"]
    return found


def test_a_watched_sender_goes_silent_and_comes_back(tmp_path: Path, smtp: Smtp) -> None:
    port = free_port()
    d = Daemon(tmp_path, CONFIG.format(port=port, smtp=smtp.port)).start()
    try:
        for n in range(3):
            logger(port, f"Failed password for root from 203.0.113.7 port {n} ssh2", tag="sshd")
        wait_for("the ban", lambda: "203.0.113.7/32" in d.banned())
        [me] = d.ctl("senders")["senders"]
        assert (me["sender"], me["transport"], me["messages"], me["bans"]) == (
            "127.0.0.1",
            "udp",
            3,
            1,
        )
        assert me["silent_since"] is None and me["sender_silence"] == SILENCE

        # It stops: silent once its 2 s are up (polled, with room for a loaded machine).
        [alarm] = wait_for("the silence alarm", lambda: silent(d), timeout=30)
        assert (alarm["sender"], alarm["silent_since"]) == ("127.0.0.1", me["last_seen"])
        assert "syslog sender 127.0.0.1 is silent: no message for 2s" in d.output
        rc, human, _ = d.ctl_rc("status")
        assert rc == 0 and "SILENT 127.0.0.1: nothing since" in human
        rc, table, _ = d.ctl_rc("senders")
        assert rc == 0 and "SILENT since" in table
        wait_for("the silence mail", lambda: smtp.inbox.messages, timeout=30)
        subject = smtp.inbox.messages[0]["Subject"]
        assert subject.startswith("[applianced] syslog sender 127.0.0.1 silent for ")
        assert d.output.count("is silent: no message") == 1  # one alarm, however long

        logger(port, "session opened for user root", tag="sshd")
        wait_for("the return", lambda: not silent(d), timeout=30)
        assert "syslog sender 127.0.0.1 is back after" in d.output
        wait_for("the return mail", lambda: len(smtp.inbox.messages) >= 2, timeout=30)
        assert smtp.inbox.messages[1]["Subject"] == "[applianced] syslog sender 127.0.0.1 is back"
    finally:
        d.stop()
