"""End to end: the real applianced process, real logger over real sockets, real appliancectl.

These run the daemon with --dry-run (the in-memory backend) on loopback; the kernel path is
covered by the nftables end-to-end tests in their own network namespaces.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.daemon import LOOPBACK, Daemon, free_port, logger, wait_for

pytestmark = pytest.mark.skipif(shutil.which("logger") is None, reason="util-linux logger missing")

CONFIG = (
    LOOPBACK
    + """
[defaults]
bantime = "1h"
findtime = "10m"
maxretry = 3

[jails.sshd]
filter = "sshd"
ports = [22]
"""
)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Daemon, int]]:
    port = free_port()
    d = Daemon(tmp_path, CONFIG.format(port=port))
    try:
        yield d.start(), port
    finally:
        d.stop()


def fail(port: int, address: str, transport: str = "udp", n: int = 3) -> None:
    extra = ("--octet-count", "--rfc5424") if transport == "tcp" else ("--rfc3164",)
    for _ in range(n):
        logger(
            port,
            f"Failed password for invalid user admin from {address} port 4242 ssh2",
            tag="sshd",
            transport=transport,
            extra=extra,
        )


def banned(d: Daemon) -> dict[str, dict[str, object]]:
    return {b["address"]: b for b in d.ctl("banned")}


def test_udp_failures_ban_and_the_ban_survives_sigkill(daemon: tuple[Daemon, int]) -> None:
    """logger over UDP bans; after SIGKILL and restart the ban, its expiry and count remain."""
    d, port = daemon
    fail(port, "203.0.113.7")
    before = wait_for("the ban", lambda: banned(d).get("203.0.113.7/32"))
    assert before["jail"] == "sshd" and before["count"] == 1
    assert d.kill() == -9
    d.start()
    after = banned(d)["203.0.113.7/32"]
    assert after["expires_at"] == before["expires_at"]
    assert after["count"] == 1
    why = d.ctl("why", "203.0.113.7")
    assert why["jails"]["sshd"]["repeat_count"] == 1
    assert any("Failed password" in line for line in why["history"][0]["lines"])
    assert "[127.0.0.1]" in why["history"][0]["lines"][0]


def test_tcp_octet_counted_rfc5424_bans(daemon: tuple[Daemon, int]) -> None:
    """logger --tcp --octet-count --rfc5424 is framed, parsed and counted."""
    d, port = daemon
    fail(port, "2001:db8::77", transport="tcp")
    ban = wait_for("the IPv6 ban", lambda: banned(d).get("2001:db8::/64"))
    assert ban["kind"] == "auto"


def test_sender_outside_allowed_senders_gets_nobody_banned(daemon: tuple[Daemon, int]) -> None:
    """Datagrams from 127.0.0.2 are refused and counted; their addresses stay unbanned."""
    d, port = daemon
    line = b"<38>Nov 22 10:00:01 mx sshd[1]: Failed password for root from 203.0.113.9 port 1 ssh2"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.2", 0))
        for _ in range(5):
            s.sendto(line, ("127.0.0.1", port))
    wait_for(
        "refused datagrams to be counted",
        lambda: d.ctl("status")["receiver"]["refused_senders"] >= 5,
    )
    fail(port, "203.0.113.10")  # an allowed sender still works, and proves the order
    wait_for("the allowed sender's ban", lambda: banned(d).get("203.0.113.10/32"))
    assert "203.0.113.9/32" not in banned(d)


def test_bad_input_is_counted_and_the_listener_lives_on(daemon: tuple[Daemon, int]) -> None:
    """Garbage over UDP and a bad TCP frame do not stop later good messages."""
    d, port = daemon
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for junk in (
            b"<999>Nov 22 10:00:01 mx app: x",
            b"<34>1 2026-11-22T10:00:01Z",
            b"\xff" * 9000,
        ):
            s.sendto(junk, ("127.0.0.1", port))
    good = b"<38>Nov 22 10:00:01 mx sshd[1]: Failed password for root from 203.0.113.11 port 1 ssh2"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as t:
        frames = b"".join(b"%d %s" % (len(good), good) for _ in range(3))
        t.sendall(b"20000 " + b"x" * 20000 + frames)
    wait_for("the ban after bad input", lambda: banned(d).get("203.0.113.11/32"))
    receiver = d.ctl("status")["receiver"]
    assert receiver["parse_errors"] >= 2 and receiver["oversize"] >= 2


def test_the_routing_gate_counts_what_it_does_not_parse(daemon: tuple[Daemon, int]) -> None:
    """logger lines of a program no jail reads, and sshd lines without the filter's literals,
    are received, counted by reason, and never reach a jail; a failure after them still bans."""
    d, port = daemon
    logger(port, "4A2B3C: removed", tag="postfix/qmgr", extra=("--rfc3164",))
    logger(port, "Accepted publickey for alice from 203.0.113.12 port 1 ssh2", tag="sshd",
           extra=("--rfc3164",))  # fmt: skip
    fail(port, "203.0.113.13")
    wait_for("the ban after the gated lines", lambda: banned(d).get("203.0.113.13/32"))
    receiver = d.ctl("status")["receiver"]
    assert (receiver["gated_unread"], receiver["gated_no_literal"]) == (1, 1)
    assert receiver["received"] == 5 and "203.0.113.12/32" not in banned(d)
    rc, text, _ = d.ctl_rc("status")
    assert rc == 0 and "1 of programs no jail reads, 1 without any of their jails' literals" in text


def test_rfc5424_misses_are_counted_as_rfc3164_ones(daemon: tuple[Daemon, int]) -> None:
    """Three RFC 5424 lines of a program no jail reads are gated_unread (they were counted
    nowhere), an sshd one without the filter's literals gated_no_literal; one with a literal
    that is no failure reaches the jail and is counted as unmatched for sshd, in status --json
    and status alike."""
    d, port = daemon
    for _ in range(3):
        logger(port, "4A2B3C: removed", tag="postfix/qmgr", extra=("--rfc5424",))
    logger(port, "Accepted publickey for alice from 203.0.113.12 port 1 ssh2", tag="sshd",
           extra=("--rfc5424",))  # fmt: skip
    logger(port, "Failed none for alice from 203.0.113.12 port 1 ssh2", tag="sshd",
           extra=("--rfc5424",))  # fmt: skip
    fail(port, "203.0.113.14")
    wait_for("the ban after the missed lines", lambda: banned(d).get("203.0.113.14/32"))
    status = d.ctl("status")
    assert (status["receiver"]["gated_unread"], status["receiver"]["gated_no_literal"]) == (3, 1)
    assert status["jails"]["sshd"]["unmatched"] == {"sshd": 1}
    rc, text, _ = d.ctl_rc("status")
    assert rc == 0 and "3 of programs no jail reads, 1 without any of their jails' literals" in text


def test_rfc5424_of_any_version_bans_and_an_over_long_field_is_a_parse_error(
    daemon: tuple[Daemon, int],
) -> None:
    """VERSION 2 is RFC 5424 as 1 is: its failures ban. An APP-NAME over RFC 5424's 48
    characters is counted as a parse error, and the log names the field."""
    d, port = daemon
    failure = "Failed password for invalid user admin from 203.0.113.16 port 4242 ssh2"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(f"<38>1 2026-11-22T10:00:01Z mx {'a' * 49} 1 - - x".encode(), ("127.0.0.1", port))
        for _ in range(3):
            s.sendto(f"<38>2 2026-11-22T10:00:01Z mx sshd 1 - - {failure}".encode(),
                     ("127.0.0.1", port))  # fmt: skip
    wait_for("the ban from RFC 5424 version 2", lambda: banned(d).get("203.0.113.16/32"))
    assert d.receiver()["parse_errors"] == 1
    assert "RFC 5424 APP-NAME of 49 characters, over the 48 RFC 5424 allows" in d.output


def test_explain_walks_a_line_through_the_running_jails(daemon: tuple[Daemon, int]) -> None:
    """appliancectl explain against the real daemon: its jails' verdicts, the regex's
    captures, nothing counted; a line of no jail's program says so."""
    d, _ = daemon
    frame = "<38>1 2026-11-22T10:00:01Z mx sshd 1 - -  " + (
        "Failed password for invalid user admin from 203.0.113.15 port 4242 ssh2"
    )
    walk = d.ctl("explain", frame)
    assert walk["shape"] == "RFC 5424" and walk["summary"] == "a failure for sshd"
    (sshd,) = walk["jails"]
    assert sshd["match"]["address"] == "203.0.113.15" and sshd["match"]["user"] == "admin"
    rc, text, _ = d.ctl_rc("explain", "Nov 22 10:00:01 mx postfix/qmgr[1]: removed")
    assert rc == 0 and "=> no jail reads it ('postfix/qmgr')" in text
    status = d.ctl("status")
    assert status["jails"]["sshd"]["matched"] == 0 and status["receiver"]["received"] == 0


def test_appliancectl_verbs_and_errors(daemon: tuple[Daemon, int]) -> None:
    """ban/unban/blacklist/why through the CLI; refused requests exit 1 with a reason."""
    d, _ = daemon
    assert d.ctl("ban", "sshd", "198.51.100.0/24", "--for", "10m")["remaining"] == pytest.approx(
        600, abs=2
    )
    assert d.ctl("blacklist", "add", "sshd", "198.51.100.200")["expires_at"] is None
    assert [b["address"] for b in d.ctl("blacklist", "list")] == ["198.51.100.200/32"]
    assert len(d.ctl("unban", "198.51.100.5")) == 1
    rc, _, err = d.ctl_rc("ban", "sshd", "127.0.0.1")
    assert rc == 1 and "protected" in err
    rc, _, err = d.ctl_rc("ban", "nojail", "198.51.100.1")
    assert rc == 1 and "unknown or disabled jail" in err
    rc, _, err = d.ctl_rc("unban", "999.1.1.1")
    assert rc == 1 and "not an" in err
    rc, out, _ = d.ctl_rc("status")
    assert rc == 0 and "sshd" in out and "DRY RUN" in out


def test_appliancectl_reports_a_stopped_daemon(tmp_path: Path) -> None:
    """Without a daemon the CLI says so and exits 3."""
    d = Daemon(tmp_path, CONFIG.format(port=1))
    rc, _, err = d.ctl_rc("status")
    assert rc == 3 and "not running" in err
