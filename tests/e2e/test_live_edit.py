"""End to end: `appliancectl jail|whitelist|general` edit the config file of a running daemon
(--dry-run) and reload it; a reload rebinds exactly the listeners whose socket changed.

Proof that a reload applied is behaviour (a ban after 2 failures once maxretry is 2), not the
daemon's word for it; proof that an unchanged listener kept its socket is a TCP connection
opened before the reload that still delivers after it.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.daemon import Daemon, free_port, logger, wait_for

pytestmark = pytest.mark.skipif(shutil.which("logger") is None, reason="util-linux logger missing")

CONFIG = """\
# A commented config, edited live by appliancectl.
[daemon]
state_dir = "state"
control_socket = "control.sock"

[receiver]
allowed_senders = ["127.0.0.1/32"]   # who may send syslog

[[listeners]]
transport = "udp"
address = "127.0.0.1"
port = {udp}

[[listeners]]
transport = "tcp"
address = "127.0.0.1"
port = {tcp}                         # the TCP listener

[defaults]
bantime = "1h"
findtime = "10m"
maxretry = 3
ignoreip = []                        # never banned

[jails.sshd]
filter = "sshd"
ports = [22]

[jails.dovecot]
filter = "dovecot"
"""


@dataclass
class Running:
    d: Daemon
    udp: int
    tcp: int

    def edit(self, *args: str) -> tuple[int, str, str]:
        """appliancectl on this daemon's config file (the edit verbs need the file)."""
        return self.d.ctl_rc(*args, "--config", str(self.d.config))


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    udp, tcp = free_port(), free_port()
    d = Daemon(tmp_path, CONFIG.format(udp=udp, tcp=tcp))
    try:
        yield Running(d.start(), udp, tcp)
    finally:
        d.stop()


def failure(address: str) -> bytes:
    return (
        b"<38>Nov 22 10:00:01 mx sshd[1]: Failed password for root from "
        + address.encode()
        + b" port 4242 ssh2\n"
    )


def fail_udp(port: int, address: str, n: int) -> None:
    for _ in range(n):
        logger(
            port,
            f"Failed password for root from {address} port 4242 ssh2",
            tag="sshd",
            extra=("--rfc3164",),
        )


def matched(d: Daemon, jail: str = "sshd") -> int:
    return int(d.ctl("status")["jails"][jail]["matched"])


def test_jail_set_maxretry_applies_live_on_a_connection_opened_before(running: Running) -> None:
    """`jail set sshd maxretry 2` writes the file and reloads; 2 failures then ban, sent over a
    TCP connection opened before the reload (the unchanged listener kept its socket)."""
    d = running.d
    with socket.create_connection(("127.0.0.1", running.tcp), timeout=5) as conn:
        rc, out, err = running.edit("jail", "set", "sshd", "maxretry", "2")
        assert rc == 0, err
        assert "(unset) -> 2" in out and "reloaded" in out and "listeners" not in out
        assert "maxretry = 2\n" in d.config.read_text()
        assert d.config.read_text().startswith("# A commented config")
        assert d.ctl("status")["jails"]["sshd"]["maxretry"] == 2
        conn.sendall(failure("203.0.113.20") * 2)
        wait_for("a ban after 2 failures", lambda: "203.0.113.20/32" in d.banned())


def test_jail_disable_stops_counting_and_enable_resumes(running: Running) -> None:
    """A disabled jail counts nothing (3 failures: no ban); enabled again, it bans."""
    d = running.d
    rc, out, err = running.edit("jail", "disable", "sshd", "--json")
    assert rc == 0, err
    assert '"reload": "done"' in out
    assert "sshd" not in d.ctl("status")["jails"]
    fail_udp(running.udp, "203.0.113.21", 3)
    wait_for("the failures to be received", lambda: d.ctl("status")["receiver"]["received"] >= 3)
    assert "203.0.113.21/32" not in d.banned()
    assert running.edit("jail", "enable", "sshd")[0] == 0
    fail_udp(running.udp, "203.0.113.21", 3)
    wait_for("the ban once enabled again", lambda: "203.0.113.21/32" in d.banned())


def test_general_disable_disables_every_jail(running: Running) -> None:
    """`general disable` leaves no jail running; `general enable` brings both back."""
    d = running.d
    assert running.edit("general", "disable")[0] == 0
    assert d.ctl("status")["jails"] == {}
    assert running.edit("general", "enable")[0] == 0
    assert set(d.ctl("status")["jails"]) == {"sshd", "dovecot"}


def test_whitelist_global_makes_an_address_unbannable(running: Running) -> None:
    """`whitelist add --global` writes [defaults] ignoreip; the address then never bans,
    not even by hand, while others still do."""
    d = running.d
    rc, _, err = running.edit("whitelist", "add", "--global", "203.0.113.30")
    assert rc == 0, err
    assert 'ignoreip = ["203.0.113.30"]' in d.config.read_text()
    fail_udp(running.udp, "203.0.113.30", 4)
    fail_udp(running.udp, "203.0.113.31", 3)
    wait_for("the other address's ban", lambda: "203.0.113.31/32" in d.banned())
    assert "203.0.113.30/32" not in d.banned()
    rc, _, err = d.ctl_rc("ban", "sshd", "203.0.113.30")
    assert rc == 1
    rc, _, err = running.edit("whitelist", "remove", "--global", "203.0.113.30")
    assert rc == 0, err
    assert d.ctl("ban", "sshd", "203.0.113.30")["address"] == "203.0.113.30/32"


def test_a_broken_edit_is_refused_and_nothing_changes(running: Running) -> None:
    """`jail set sshd maxretry 0` exits 2 with file:line; file and running jail unchanged."""
    d = running.d
    before = d.config.read_bytes()
    rc, _, err = running.edit("jail", "set", "sshd", "maxretry", "0")
    assert rc == 2 and f"{d.config}:" in err and "maxretry" in err and "nothing written" in err
    assert d.config.read_bytes() == before
    assert d.ctl("status")["jails"]["sshd"]["maxretry"] == 3


def test_a_port_change_rebinds_only_that_listener(running: Running) -> None:
    """Moving the TCP listener: the old port is closed, the new one receives; the UDP
    listener is not rebound and keeps receiving."""
    d = running.d
    new_tcp = free_port()
    d.config.write_text(
        d.config.read_text().replace(f"port = {running.tcp} ", f"port = {new_tcp} ")
    )
    answer = d.ctl("reload")
    assert answer["listeners"] == {
        "opened": [f"tcp/127.0.0.1:{new_tcp}"],
        "closed": [f"tcp/127.0.0.1:{running.tcp}"],
        "updated": [],
    }
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", running.tcp), timeout=5).close()
    with socket.create_connection(("127.0.0.1", new_tcp), timeout=5) as conn:
        conn.sendall(failure("203.0.113.40") * 3)
        wait_for("a ban over the new port", lambda: "203.0.113.40/32" in d.banned())
    fail_udp(running.udp, "203.0.113.41", 3)
    wait_for("a ban over the unchanged UDP port", lambda: "203.0.113.41/32" in d.banned())


def test_a_bind_failure_refuses_the_reload_and_keeps_the_old_listener(running: Running) -> None:
    """A new port held by someone else: `reload` exits 1 with the reason; the old listener
    and the old jails stay."""
    d = running.d
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        text = d.config.read_text()
        text = text.replace(f"port = {running.tcp} ", f"port = {taken} ")
        d.config.write_text(text.replace("maxretry = 3", "maxretry = 2"))
        rc, _, err = d.ctl_rc("reload")
        assert rc == 1 and "cannot listen" in err and str(taken) in err
        assert d.ctl("status")["jails"]["sshd"]["maxretry"] == 3  # the reload was refused
        with socket.create_connection(("127.0.0.1", running.tcp), timeout=5) as conn:
            conn.sendall(failure("203.0.113.50") * 3)
            wait_for("a ban over the old port", lambda: "203.0.113.50/32" in d.banned())
    assert "cannot listen" in d.output


def test_allowed_senders_change_applies_without_rebinding(running: Running) -> None:
    """A new allowed_senders list applies to the bound listeners ("updated", same sockets):
    127.0.0.1 is refused from then on and its open TCP connection is closed."""
    d = running.d
    with socket.create_connection(("127.0.0.1", running.tcp), timeout=5) as conn:
        d.config.write_text(d.config.read_text().replace('["127.0.0.1/32"]', '["192.0.2.1/32"]'))
        answer = d.ctl("reload")
        assert answer["listeners"]["opened"] == [] and answer["listeners"]["closed"] == []
        assert sorted(answer["listeners"]["updated"]) == [
            f"tcp/127.0.0.1:{running.tcp}",
            f"udp/127.0.0.1:{running.udp}",
        ]
        conn.settimeout(5)
        assert conn.recv(1) == b""  # closed by the daemon
    refused = d.ctl("status")["receiver"]["refused_senders"]
    fail_udp(running.udp, "203.0.113.60", 3)
    wait_for(
        "the datagrams to be refused",
        lambda: d.ctl("status")["receiver"]["refused_senders"] >= refused + 3,
    )
    assert "203.0.113.60/32" not in d.banned()
