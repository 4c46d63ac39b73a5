"""End to end in namespaces: UDP floods with forged sources against the real daemon (issue 15,
item 7), the real sender's failures interleaved with them.

The daemon (nftables backend) runs in a "server" namespace listening for UDP syslog on
192.0.2.1 with allowed_senders = ["192.0.2.2/32"], the "attacker" namespace's own address: the
real sender. From the attacker namespace a raw socket writes hand-built datagrams: a flood from
20,000 distinct forged sources outside allowed_senders (198.18.0.0/15, the benchmarking range),
or a flood forging the real sender's own address, and between them the real sender's
failures for 15 offenders, 3 each. The flood is bounded in count and never leaves the two
namespaces, which are deleted whatever happens.

The server namespace's reverse-path filter (rp_filter) is set off, so that the forged sources
reach the socket; with it strict, the kernel drops the sources no route leads back to before the
daemon sees them (the last test shows it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.daemon import SSHD_JAIL, Daemon, wait_for
from tests.netns import Topology, netns_missing, ns_exec, ns_python, topology

pytestmark = pytest.mark.skipif(netns_missing() is not None, reason=str(netns_missing()))

PORT = 5514
OFFENDERS = [f"203.0.113.{n}" for n in range(1, 16)]

CONFIG = (
    """\
[daemon]
state_dir = "state"
control_socket = "control.sock"

[receiver]
allowed_senders = ["192.0.2.2/32"]
max_rate_per_sender = 100
max_burst_per_sender = 10

[[listeners]]
transport = "udp"
address = "192.0.2.1"
port = {port}
rcvbuf = {rcvbuf}
"""
    + SSHD_JAIL
)

# Run in the attacker namespace: ``count`` datagrams of ``size`` bytes to dst:port through a
# raw socket, from distinct sources of 198.18.0.0/15 (``spoof`` "random") or from the given
# address; every ``count // len(real)`` of them, one real failure from the namespace's own
# address through an ordinary socket. The kernel fills in the IP checksum and length; the UDP
# checksum 0 means none (IPv4).
FLOOD = """
import socket, struct, sys
dst, port, spoof = sys.argv[1], int(sys.argv[2]), sys.argv[3]
count, size = int(sys.argv[4]), int(sys.argv[5])
real = [line.encode() for line in sys.argv[6:]]
payload = (b"<38>Nov 22 10:00:01 mx sshd[1]: noise " + b"x" * size)[:size]
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
honest = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
target = socket.inet_aton(dst)
base = int.from_bytes(socket.inet_aton("198.18.0.0"), "big")
every = max(count // max(len(real), 1), 1)
sent = 0
for i in range(count):
    src = (base + i % 131072).to_bytes(4, "big") if spoof == "random" else socket.inet_aton(spoof)
    udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 0, 0, 64, 17, 0, src, target)
    raw.sendto(ip + udp + payload, (dst, 0))
    if i % every == 0 and sent < len(real):
        honest.sendto(real[sent], (dst, port))
        sent += 1
for line in real[sent:]:
    honest.sendto(line, (dst, port))
print(count)
"""


def failure(address: str) -> str:
    return f"<38>Nov 22 10:00:01 mx sshd[1]: Failed password for root from {address} port 1 ssh2"


REAL = [failure(a) for a in OFFENDERS for _ in range(3)]


def flood(t: Topology, spoof: str, count: int, size: int = 64) -> None:
    args = (t.server_v4, str(PORT), spoof, str(count), str(size), *REAL)
    ns_python(t.attacker, FLOOD, *args, timeout=120)


def snmp_rcvbuf_errors(ns: str) -> int:
    """The namespace's ``Udp: RcvbufErrors``, from /proc/net/snmp."""
    lines = [line.split() for line in ns_exec(ns, "cat", "/proc/net/snmp").stdout.splitlines()]
    names, values = (fields for fields in lines if fields[0] == "Udp:")
    return int(values[names.index("RcvbufErrors")])


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Topology, Daemon]]:
    rcvbuf, rp_filter = getattr(request, "param", (64 << 20, 0))
    with topology("flood") as t:
        for conf in ("all", "default", "veth0"):
            ns_exec(t.server, "sysctl", "-qw", f"net.ipv4.conf.{conf}.rp_filter={rp_filter}")
        d = Daemon(
            tmp_path,
            CONFIG.format(port=PORT, rcvbuf=rcvbuf),
            args=(),
            prefix=("ip", "netns", "exec", t.server),
        )
        try:
            yield t, d.start()
        finally:
            d.stop()


def accounted(receiver: dict[str, int]) -> int:
    return receiver["refused_senders"] + receiver["received"] + receiver["udp_kernel_drops"]


def all_banned(d: Daemon) -> bool:
    return {f"{a}/32" for a in OFFENDERS} <= d.banned()


def test_flood_from_distinct_forged_sources_costs_the_real_sender_nothing(
    server: tuple[Topology, Daemon],
) -> None:
    """20,000 datagrams from 20,000 distinct forged sources are all refused and counted; the
    real sender's 45 failures among them are all read and ban all 15 offenders."""
    t, d = server
    flood(t, "random", 20_000)
    wait_for("all 15 offenders banned", lambda: all_banned(d), timeout=30)
    r = wait_for(
        "the flood refused", lambda: (r := d.receiver())["refused_senders"] >= 20_000 and r
    )
    assert (r["refused_senders"], r["received"], r["udp_kernel_drops"]) == (20_000, 45, 0)
    assert d.banned() == {f"{a}/32" for a in OFFENDERS}


def test_flood_forging_the_real_senders_address_cannot_spend_its_budget(
    server: tuple[Topology, Daemon],
) -> None:
    """5,000 datagrams forging the real sender's own address, at 50 times its
    max_rate_per_sender of 100/s: the real sender's failures among them all ban; nothing is
    dropped as over the sender's rate (on UDP the budget would be the forger's weapon)."""
    t, d = server
    flood(t, "192.0.2.2", 5_000)
    wait_for("all 15 offenders banned", lambda: all_banned(d), timeout=30)
    r = wait_for("every datagram read", lambda: (r := d.receiver())["received"] >= 5_045 and r)
    assert (r["received"], r["rate_limited"], r["refused_senders"]) == (5_045, 0, 0)


@pytest.mark.parametrize("server", [(4096, 0)], indirect=True)
def test_kernel_drops_on_a_full_buffer_show_in_status(server: tuple[Topology, Daemon]) -> None:
    """With a 4 KiB receive buffer, a flood of 1,200-byte datagrams overruns it: the drops
    the kernel counts for the namespace (RcvbufErrors) show in status as udp_kernel_drops,
    and every datagram sent is either refused by the daemon or dropped by the kernel."""
    t, d = server
    before = snmp_rcvbuf_errors(t.server)
    flood(t, "random", 20_000, size=1200)
    r = wait_for(
        "every datagram accounted for", lambda: (r := d.receiver()) and accounted(r) >= 20_045 and r
    )
    dropped = snmp_rcvbuf_errors(t.server) - before
    assert dropped > 0 and r["udp_kernel_drops"] == dropped and accounted(r) == 20_045
    rc, out, _ = d.ctl_rc("status")
    assert rc == 0 and f"{dropped} by the kernel (UDP receive buffer full)" in " ".join(out.split())


@pytest.mark.parametrize("server", [(64 << 20, 1)], indirect=True)
def test_strict_rp_filter_drops_forged_sources_before_the_daemon(
    server: tuple[Topology, Daemon],
) -> None:
    """With strict rp_filter in the server namespace, sources no route leads back to through
    veth0 never reach the socket: the daemon refuses nothing, the real sender's failures ban."""
    t, d = server
    flood(t, "random", 5_000)
    wait_for("all 15 offenders banned", lambda: all_banned(d), timeout=30)
    r = d.receiver()
    assert (r["refused_senders"], r["received"]) == (0, 45)
