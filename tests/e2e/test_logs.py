"""The log an operator reads: the real daemon on real nftables in a network namespace of its
own, failures sent with the real ``logger``, its whole output captured and read line by line.

At the default level: our own lines only (no Twisted factory or port chatter), a ``found``
line per failure for a ``log_found`` jail, the ban line with the sender and the deciding line,
the stop line saying the bans stay in the kernel; a reload applies the file's ``log_level``,
and ``--log-level`` wins over the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.daemon import LOOPBACK, Daemon, sasl_failures, wait_for
from tests.netns import netns, netns_missing

pytestmark = pytest.mark.skipif(netns_missing() is not None, reason=str(netns_missing()))

PORT = 5514
CONFIG = (
    LOOPBACK.replace(
        'control_socket = "control.sock"\n', 'control_socket = "control.sock"\n{level}'
    )
    + """
[metrics]
enabled = true

[defaults]
bantime = "1h"
maxretry = 3

[jails.postfix-sasl]
filter = "postfix-sasl"
ports = [25]
log_found = true
"""
)
# What Twisted logs at info around a daemon's life: never shown at the default level.
CHATTER = ("factory", "starting on", "Closed)", "Main loop terminated", "Received SIGTERM")


def config(level: str = "") -> str:
    return CONFIG.format(port=PORT, level=f'log_level = "{level}"\n' if level else "")


@pytest.fixture
def ns() -> Iterator[str]:
    with netns("logs") as name:
        yield name


def ban(d: Daemon, ns: str, address: str) -> None:
    sasl_failures(PORT, address, 3, ns)
    wait_for(f"the ban of {address}", lambda: f"{address}/32" in d.banned())


def test_a_runs_log_holds_our_lines_only(tmp_path: Path, ns: str) -> None:
    d = Daemon(
        tmp_path, config(), args=("--log-format", "journal"), prefix=("ip", "netns", "exec", ns)
    )
    d.start()
    try:
        ban(d, ns, "203.0.113.7")
        d.config.write_text(config("warning"))
        d.ctl("reload")
        ban(d, ns, "203.0.113.8")  # at warning: neither its found lines nor its ban line
        d.config.write_text(config())
        d.ctl("reload")
    finally:
        d.stop()
    lines = d.output.splitlines()
    assert all(re.match(r"<[2-7]>(\[applianced[.a-z]*\] |\t)", line) for line in lines), lines
    assert not [line for line in lines if any(c in line for c in CHATTER)]
    (running,) = [line for line in lines if " running: " in line]
    assert running.endswith(
        f"listening on udp/127.0.0.1:{PORT}, tcp/127.0.0.1:{PORT}, metrics "
        f"http://127.0.0.1:9515/metrics, control socket {d.socket}"
    ), running
    sasl = "warning: unknown[203.0.113.7]: SASL LOGIN authentication failed: UGFzc3dvcmQ6"
    found = [line for line in lines if line.startswith("<6>[applianced.found] ")]
    assert len(found) == 3
    assert re.fullmatch(
        r"<6>\[applianced\.found\] found postfix-sasl 203\.0\.113\.7; sender 127\.0\.0\.1: "
        rf'"\S+ postfix/smtpd: {re.escape(sasl)}"',
        found[0],
    )
    (banned,) = [line for line in lines if " ban postfix-sasl " in line]
    assert re.fullmatch(
        r"<6>\[applianced\.appliance\] ban postfix-sasl 203\.0\.113\.7/32 for 1h "
        r'\(auto, ban #1\); sender 127\.0\.0\.1: "\S+ \S+ postfix/smtpd: '
        rf'{re.escape(sasl)}"',
        banned,
    )
    assert not [line for line in lines if "203.0.113.8" in line]
    assert lines[-1] == (
        "<6>[applianced.appliance] stopping; 2 active bans stay in the nftables backend "
        "(0 permanent): each temporary one ends by its own timeout there, and the next start "
        "restores every active one from the store"
    )

    # The flag wins over the file (log_level info): at debug, Twisted's lines are back.
    d.log.unlink()
    d.args = ["--log-format", "journal", "--log-level", "debug"]
    d.start()
    d.stop()
    debug = d.output
    assert "<7>[-] SyslogUDP starting on 5514" in debug
    assert "restored 2 active bans into the nftables backend" in debug
