"""End to end in the kernel: spoofed UDP syslog and the addresses that are never banned.

The real daemon (nftables backend) runs in a "server" namespace listening for UDP syslog on
192.0.2.1 with allowed_senders = ["192.0.2.2/32"]. From the "attacker" namespace, scapy sends
hand-built datagrams: with a forged source outside allowed_senders they are refused and counted
and nobody is banned; with the allowed source, the same datagrams ban (so the refusal is not just
packets going nowhere). Messages from the allowed sender naming the appliance's own addresses,
the allowed sender, loopback or an ignoreip address ban nobody either.

Packet counts are fixed and small; namespaces are deleted whatever happens; the daemon and
scapy run under ``ip netns exec``, so the host's own firewall is never touched.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.daemon import Daemon, wait_for
from tests.netns import Topology, netns_missing, ns_exec, ns_python, topology

pytestmark = [
    pytest.mark.skipif(netns_missing() is not None, reason=str(netns_missing())),
    pytest.mark.skipif(
        importlib.util.find_spec("scapy") is None, reason="scapy missing (requirements.txt)"
    ),
]

PORT = 5514
OWN_EXTRA = "192.0.2.50"  # a second address of the server, known only from its interfaces
IGNORED = "198.51.100.200"

CONFIG = """\
[daemon]
state_dir = "state"
control_socket = "control.sock"

[receiver]
allowed_senders = ["192.0.2.2/32"]

[[listeners]]
transport = "udp"
address = "192.0.2.1"
port = {port}

[defaults]
bantime = "1h"
maxretry = 3
ignoreip = ["{ignored}"]

[jails.sshd]
filter = "sshd"
ports = [22]
"""

# Sent inside the attacker namespace: every line ``count`` times from ``src`` to ``dst``:``port``,
# through a raw IP socket (the kernel routes; scapy writes the source address we give).
SEND = """
import sys
from scapy.all import IP, UDP, Raw, conf, send
from scapy.supersocket import L3RawSocket
conf.verb = 0
conf.L3socket = L3RawSocket
src, dst, port, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
packets = [
    IP(src=src, dst=dst) / UDP(sport=40000 + i, dport=port) / Raw(load=line.encode())
    for i, line in enumerate(sys.argv[5:])
    for _ in range(count)
]
send(packets)
print(len(packets))
"""


def failure(address: str) -> str:
    return f"<38>Nov 22 10:00:01 mx sshd[1]: Failed password for root from {address} port 1 ssh2"


def scapy_send(t: Topology, src: str, lines: list[str], count: int = 3) -> int:
    """Send ``lines`` (each ``count`` times) from the attacker namespace with source ``src``."""
    out = ns_python(t.attacker, SEND, src, t.server_v4, str(PORT), str(count), *lines, timeout=60)
    return int(out.stdout.strip())


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Topology, Daemon]]:
    with topology("spoof") as t:
        ns_exec(t.server, "ip", "addr", "add", f"{OWN_EXTRA}/32", "dev", "lo")
        d = Daemon(
            tmp_path,
            CONFIG.format(port=PORT, ignored=IGNORED),
            args=(),
            prefix=("ip", "netns", "exec", t.server),
        )
        try:
            yield t, d.start()
        finally:
            d.stop()


def kernel_v4(t: Topology) -> set[str]:
    out = ns_exec(t.server, "nft", "-j", "list", "set", "inet", "applianced", "sshd_v4").stdout
    found: set[str] = set()
    for item in json.loads(out)["nftables"]:
        for elem in item.get("set", {}).get("elem", []):
            value: Any = elem["elem"] if isinstance(elem, dict) and "elem" in elem else elem
            found.add(str(value["val"] if isinstance(value, dict) else value))
    return found


def test_spoofed_source_bans_nobody_allowed_source_does(
    server: tuple[Topology, Daemon],
) -> None:
    """Datagrams forged from 192.0.2.99 are refused and counted and ban nobody; the same
    datagrams from the allowed 192.0.2.2 ban, in the store and in the kernel."""
    t, d = server
    spoofed = scapy_send(t, "192.0.2.99", [failure("203.0.113.66")], count=5)
    assert spoofed == 5
    wait_for(
        "the forged datagrams to be refused",
        lambda: d.ctl("status")["receiver"]["refused_senders"] >= spoofed,
    )
    assert d.banned() == set() and kernel_v4(t) == set()

    assert scapy_send(t, t.attacker_v4, [failure("203.0.113.77")]) == 3
    wait_for("the allowed sender's ban", lambda: "203.0.113.77/32" in d.banned())
    assert kernel_v4(t) == {"203.0.113.77"}
    receiver = d.ctl("status")["receiver"]
    assert receiver["refused_senders"] == spoofed and receiver["received"] == 3
    assert "203.0.113.66/32" not in d.banned()


def test_spoofed_source_naming_the_allowed_sender_bans_nobody(
    server: tuple[Topology, Daemon],
) -> None:
    """A forger trying to get the real mail server (192.0.2.2) banned: refused, nothing banned."""
    t, d = server
    sent = scapy_send(t, "192.0.2.98", [failure(t.attacker_v4)], count=4)
    wait_for(
        "the forged datagrams to be refused",
        lambda: d.ctl("status")["receiver"]["refused_senders"] >= sent,
    )
    assert d.banned() == set() and kernel_v4(t) == set()


def test_never_banned_whatever_the_allowed_sender_says(server: tuple[Topology, Daemon]) -> None:
    """Failures naming the appliance's own addresses (the listener's and one only on an
    interface), the allowed sender, loopback or an ignoreip address ban nobody; a real
    offender in the same stream is banned, so the messages were read."""
    t, d = server
    protected = [t.server_v4, OWN_EXTRA, t.attacker_v4, "127.0.0.1", IGNORED]
    assert scapy_send(t, t.attacker_v4, [failure(a) for a in protected], count=4) == 20
    scapy_send(t, t.attacker_v4, [failure("203.0.113.88")])
    wait_for("the real offender's ban", lambda: "203.0.113.88/32" in d.banned())
    status = d.ctl("status")
    assert status["receiver"]["received"] == 23
    assert d.banned() == {"203.0.113.88/32"}
    assert kernel_v4(t) == {"203.0.113.88"}
    rc, _, err = d.ctl_rc("ban", "sshd", t.server_v4)
    assert rc != 0 and "protected" in err, err
