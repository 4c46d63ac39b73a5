"""End to end: the appliance as the gateway in front of a mail server (README, "Deployment
shapes"), in three network namespaces joined by two veth pairs:

    attacker 203.0.113.66 and .67  --  203.0.113.1 appliance 198.51.100.1  --  198.51.100.25 mail

The appliance routes (ip_forward on) and runs the real daemon; the mail server runs an
SMTP-like listener on port 25 and sends its failures with the real ``logger`` to the
appliance's syslog port. With ``hook = "forward"`` the ban closes the mail server to the
attacker; with ``hook = "input"`` it closes only the appliance itself, which is why the README
warns that a remote mail server needs the gateway shape or bouncers.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.daemon import Daemon, wait_for
from tests.netns import netns, netns_missing, ns_exec, tcp_listener

pytestmark = pytest.mark.skipif(netns_missing() is not None, reason=str(netns_missing()))

ATTACKER = "203.0.113.66"
NEIGHBOUR = "203.0.113.67"  # another client on the attacker's side, never banned
OUTSIDE = "203.0.113.1"  # the appliance's side towards the attackers
INSIDE = "198.51.100.1"  # the appliance's side towards the mail server; its syslog port
MAIL = "198.51.100.25"
SYSLOG_PORT = 514
GREETING = "220 mx.example ESMTP"

CONFIG = f"""\
[daemon]
state_dir = "state"
control_socket = "control.sock"

[receiver]
allowed_senders = ["{MAIL}/32"]

[[listeners]]
transport = "udp"
address = "{INSIDE}"
port = {SYSLOG_PORT}

[defaults]
bantime = "1h"
maxretry = 3
hook = "{{hook}}"

[jails.postfix-sasl]
filter = "postfix-sasl"
ports = [25]
"""


@dataclass(frozen=True, slots=True)
class Gateway:
    """The three namespaces of the gateway shape."""

    attacker: str
    appliance: str
    mail: str


@contextmanager
def gateway() -> Iterator[Gateway]:
    """attacker -- appliance (routing) -- mail, addressed and routed; all deleted on exit."""
    with netns("gw-a") as attacker, netns("gw-r") as appliance, netns("gw-m") as mail:
        for name, peer, ns, local, remote in (
            ("outside", "eth0", attacker, OUTSIDE, (ATTACKER, NEIGHBOUR)),
            ("inside", "eth0", mail, INSIDE, (MAIL,)),
        ):
            # Created inside the namespaces: no interface ever appears in the root namespace.
            ns_exec(appliance, "ip", "link", "add", name, "type", "veth", "peer", "name", peer,
                    "netns", ns)  # fmt: skip
            ns_exec(appliance, "ip", "addr", "add", f"{local}/24", "dev", name)
            ns_exec(appliance, "ip", "link", "set", name, "up")
            for address in remote:
                ns_exec(ns, "ip", "addr", "add", f"{address}/24", "dev", peer)
            ns_exec(ns, "ip", "link", "set", peer, "up")
            ns_exec(ns, "ip", "route", "add", "default", "via", local)
        ns_exec(appliance, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        yield Gateway(attacker, appliance, mail)


_SMTP_SERVER = f"""
import socket
s = socket.create_server(("0.0.0.0", 25), backlog=64)
print("ready", flush=True)
while True:
    conn, _ = s.accept()
    conn.sendall(b"{GREETING}\\r\\n")
    conn.close()
"""

_SMTP_CLIENT = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], 25), timeout=1.0,
                                  source_address=(sys.argv[2], 0)) as s:
        print(s.makefile().readline().strip())
except OSError as e:
    print(type(e).__name__)
"""


@contextmanager
def smtp_server(ns: str) -> Iterator[None]:
    """The mail server's port 25 answering ``GREETING``, ready on entry, stopped on exit."""
    with subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", _SMTP_SERVER],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            yield
        finally:
            proc.terminate()


def smtp(g: Gateway, source: str, server: str = MAIL) -> str:
    """What a client at ``source`` on the attacker's side reads from ``server``:25 (the
    greeting), or the exception's name (a dropped SYN: "TimeoutError" after 1 s)."""
    done = ns_exec(g.attacker, sys.executable, "-c", _SMTP_CLIENT, server, source, timeout=30)
    return done.stdout.strip()


def send_failures(g: Gateway, address: str, n: int = 3) -> None:
    """``n`` postfix SASL failures of ``address``, sent by the mail server with ``logger``."""
    line = f"warning: unknown[{address}]: SASL LOGIN authentication failed: UGFzc3dvcmQ6"
    for _ in range(n):
        ns_exec(g.mail, "logger", "--server", INSIDE, "--port", str(SYSLOG_PORT), "--udp",
                "--rfc3164", "--tag", "postfix/smtpd", line)  # fmt: skip


@contextmanager
def appliance(tmp_path: Path, g: Gateway, hook: str) -> Iterator[Daemon]:
    d = Daemon(
        tmp_path, CONFIG.format(hook=hook), args=(), prefix=("ip", "netns", "exec", g.appliance)
    )
    try:
        yield d.start()
    finally:
        d.stop()


def test_gateway_forward_hook_closes_the_mail_server_to_the_banned_attacker_only(
    tmp_path: Path,
) -> None:
    """Failures the mail server sends ban the attacker in the appliance's forward chain: its
    SMTP connect through the appliance times out, a neighbour still gets the greeting; the
    unban restores it."""
    with gateway() as g, smtp_server(g.mail), appliance(tmp_path, g, "forward") as d:
        wait_for("the route to the mail server", lambda: smtp(g, ATTACKER) == GREETING)
        send_failures(g, ATTACKER)
        wait_for("the ban", lambda: d.banned() == {f"{ATTACKER}/32"})
        assert smtp(g, ATTACKER) == "TimeoutError"
        assert smtp(g, NEIGHBOUR) == GREETING
        d.ctl("unban", ATTACKER)
        assert smtp(g, ATTACKER) == GREETING


def test_input_hook_ban_does_not_protect_a_routed_mail_server(tmp_path: Path) -> None:
    """With the default ``hook = "input"`` the same ban closes the appliance's own port 25 to
    the attacker but not the mail server behind it (the README's warning)."""
    with (
        gateway() as g,
        smtp_server(g.mail),
        tcp_listener(g.appliance, [(OUTSIDE, 25)]),
        appliance(tmp_path, g, "input") as d,
    ):
        wait_for("the route to the mail server", lambda: smtp(g, ATTACKER) == GREETING)
        send_failures(g, ATTACKER)
        wait_for("the ban", lambda: d.banned() == {f"{ATTACKER}/32"})
        assert smtp(g, ATTACKER, server=OUTSIDE) == "TimeoutError"
        assert smtp(g, ATTACKER) == GREETING
