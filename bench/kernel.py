"""Kernel benchmarks of the issue "Bans in the kernel", run INSIDE a network namespace that
``bench/__main__.py`` creates (never against the host's ruleset). Prints one JSON object:

- restore_100k_s: seconds for Appliance.start() to restore 100,000 active bans from the store
  into nftables (store read + table build + one restore transaction);
- restart_100k_s: the same start when the kernel holds the 100,000 already (a restart), their
  listing (the start adopts what the store lacks) included;
- burst_bans_per_s: 10,000 distinct addresses cross maxretry in one reactor turn (30,000
  failures); bans per second from the first failure to the kernel transaction's return
  (``kernel``: engine, decisions, one transaction) and to the end of the turn (``turn``: the
  store's commit too, which the Appliance makes after the kernel's); ``applied``: from the
  moment all 10,000 have crossed maxretry to the kernel's return (decisions and the one
  transaction: the rate at which bans are applied);
- latency_ms: the send of the deciding UDP datagram to the real listener on a real reactor, to
  the return of the kernel transaction that holds the element (median and p99 over N bans),
  without background load. bench/live.py measures the issue's figure on the real daemon;
- one_more_ban_ms: the time of one apply that bans one more address (IPv4, and an IPv6 /64),
  median over ONE_MORE samples, with the jail's sets empty and with 100,000 IPv6 /64 bans in
  place (issue 15: the cost of a ban must not grow with the bans in place).
"""

from __future__ import annotations

import json
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from ipaddress import IPv4Address, ip_network
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock

from applianced.appliance import Appliance
from applianced.conf.load import parse_config
from applianced.conf.schema import Config
from applianced.enforcement.base import JailRules, Restored
from applianced.enforcement.nftables import NftablesEnforcer
from applianced.receiver.edge import ReceiverStats
from applianced.receiver.listeners import ListenerService
from applianced.rules.decision import Ban, BanDecision, BanKind
from applianced.rules.message import SyslogMessage
from applianced.store.sqlite import SqliteOffenderStore

CONFIG = """\
[daemon]
state_dir = "state"
[[listeners]]
transport = "udp"
address = "127.0.0.1"
port = 0
[defaults]
bantime = "1d"
maxretry = 3
bantime_increment = {{ enabled = false }}
[jails.postfix-sasl]
filter = "postfix-sasl"
ports = [25, 465, 587]
"""


LATENCY_BASE = 110_000  # clear of restore's 100,000, inside 198.18.0.0/15
ONE_MORE = 31  # samples of one more ban, per kind and per fill


def config(workdir: Path) -> Config:
    return parse_config(CONFIG.format(), workdir / "appliance.toml")


def address(i: int) -> str:
    """Distinct addresses from 198.18.0.0/15 (RFC 2544 benchmark range)."""
    return str(IPv4Address(int(IPv4Address("198.18.0.0")) + i))


def failure(addr: str, at: float) -> SyslogMessage:
    return SyslogMessage(
        facility=2, severity=4, timestamp=None, hostname="mx", app_name="postfix/smtpd",
        procid="1", msgid=None, structured_data=None,
        msg=f"warning: unknown[{addr}]: SASL LOGIN authentication failed: UGFzc3dvcmQ6",
        sender="127.0.0.1", transport="udp", received_at=at,
    )  # fmt: skip


def restore_100k(workdir: Path) -> tuple[float, float]:
    """Appliance.start() restoring 100,000 bans into an empty table, then again (a restart)
    over the 100,000 the kernel holds."""
    conf = config(workdir)
    now = time.time()
    store = SqliteOffenderStore(workdir / "restore.sqlite", lines_per_ban=0)
    decisions = [
        BanDecision("postfix-sasl", ip_network(address(i)), 86400.0, BanKind.AUTO, 1, now)
        for i in range(100_000)
    ]
    store.record_bans(decisions)
    store.close()
    enforcer = NftablesEnforcer()
    enforcer.setup([])
    clock = Clock()
    clock.advance(time.time())
    app = Appliance(conf, SqliteOffenderStore(workdir / "restore.sqlite"), enforcer, clock)
    started = time.perf_counter()
    app.start()
    elapsed = time.perf_counter() - started
    assert sum(enforcer.counts().values()) == 100_000
    app.store.close()
    # A restart: the kernel holds the 100,000 already, and the start lists them (recovery.py).
    enforcer = NftablesEnforcer()
    app = Appliance(conf, SqliteOffenderStore(workdir / "restore.sqlite"), enforcer, clock)
    started = time.perf_counter()
    app.start()
    again = time.perf_counter() - started
    assert sum(enforcer.counts().values()) == 100_000 and app.health.recovered == 0
    enforcer.flush()
    app.store.close()
    return elapsed, again


def burst_10k(workdir: Path) -> dict[str, float]:
    """Bans/s from the first failure to the kernel transaction's return (``kernel``: the
    store's commit comes after the kernel's, off the path to the drop), to the end of the turn
    (``turn``: the store's commit included), and from the last failure to the kernel's return
    (``applied``: the offences' decisions and their one transaction)."""
    conf = config(workdir)
    enforcer = TimedEnforcer()
    enforcer.returned = []
    clock = Clock()
    clock.advance(time.time())
    store = SqliteOffenderStore(workdir / "burst.sqlite")
    app = Appliance(conf, store, enforcer, clock)
    app.start()
    now = clock.seconds()
    messages = [failure(address(i), now) for i in range(10_000) for _ in range(3)]
    started = time.perf_counter()
    for m in messages:
        app.receive(m)
    fed = time.perf_counter()  # every address has crossed maxretry: 10,000 offences wait
    clock.advance(0)  # the end of the reactor turn: decide, one kernel transaction, store
    ended = time.perf_counter()
    assert sum(enforcer.counts().values()) == 10_000, enforcer.counts()
    assert len(enforcer.returned) == 1, "one kernel transaction for the whole turn"
    enforcer.flush()
    store.close()
    returned = enforcer.returned[0]
    return {
        "kernel": 10_000 / (returned - started),
        "turn": 10_000 / (ended - started),
        "applied": 10_000 / (returned - fed),
    }


class TimedEnforcer(NftablesEnforcer):
    """Records when each kernel transaction returned."""

    returned: list[float]

    def apply(self, bans: Sequence[Ban], unbans: Sequence[Ban], now: float) -> None:
        super().apply(bans, unbans, now)
        if bans:
            self.returned.append(time.perf_counter())


def latency(workdir: Path, n: int) -> list[float]:
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    conf = config(workdir)
    enforcer = TimedEnforcer()
    enforcer.returned = []
    store = SqliteOffenderStore(workdir / "latency.sqlite")
    stats = ReceiverStats()
    app = Appliance(conf, store, enforcer, reactor, receiver_stats=stats)
    app.start()
    service = ListenerService(conf.listeners[0], app.receive, stats, reactor)
    service.startService()
    assert service.port is not None
    port = service.port.getHost().port
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent: list[float] = []
    results: list[float] = []

    def line(addr: str) -> bytes:
        return (f"<34>Nov 22 10:00:01 mx postfix/smtpd[1]: warning: unknown[{addr}]: "
                "SASL LOGIN authentication failed: UGFzc3dvcmQ6").encode()  # fmt: skip

    def step(i: int) -> None:
        if enforcer.returned and len(sent) > len(results):
            results.append(enforcer.returned[-1] - sent[-1])
        if i == n:
            reactor.stop()
            return
        addr = address(LATENCY_BASE + i)
        for _ in range(2):  # below maxretry: not timed
            sender.sendto(line(addr), ("127.0.0.1", port))
        reactor.callLater(0.005, decide, i, addr)

    def decide(i: int, addr: str) -> None:
        sent.append(time.perf_counter())
        sender.sendto(line(addr), ("127.0.0.1", port))
        reactor.callLater(0.02, step, i + 1)

    reactor.callWhenRunning(step, 0)
    reactor.run()
    enforcer.flush()
    return [r * 1000 for r in results]


def one_more_ban() -> dict[str, dict[str, float]]:
    """Median ms of one apply banning one more address, IPv4 or IPv6 /64, with no ban in place
    (``empty``) and with 100,000 /64 bans of the same jail in place (``prefixes_100k``)."""
    enforcer = NftablesEnforcer()
    jail = JailRules("postfix-sasl", ("25",), "tcp")
    enforcer.setup([jail])
    now = time.time()

    def one(network: str) -> float:
        ban = Ban(jail.name, ip_network(network), now, now + 86400.0, BanKind.AUTO, 1)
        started = time.perf_counter()
        enforcer.apply([ban], [], now)
        return (time.perf_counter() - started) * 1000

    def medians(base: int) -> dict[str, float]:
        return {
            "v4": statistics.median(one(address(base + i)) for i in range(ONE_MORE)),
            "v6_64": statistics.median(
                one(f"2001:db8:ffff:{base + i:x}::/64") for i in range(ONE_MORE)
            ),
        }

    out = {"empty": medians(0)}
    rows = [
        Restored(jail.name, f"2001:db8:{i >> 16:x}:{i & 0xFFFF:x}::/64", now + 86400.0)
        for i in range(100_000)
    ]
    enforcer.restore_rows(rows, now)
    out["prefixes_100k"] = medians(ONE_MORE)
    enforcer.flush()
    return out


def latencies(samples_ms: Sequence[float]) -> dict[str, float]:
    """Median, 99th percentile and count of latency samples (ms), as every bench reports them."""
    lat = sorted(samples_ms)
    return {
        "median": statistics.median(lat),
        "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
        "samples": len(lat),
    }


def main(argv: Sequence[str]) -> None:
    samples = int(argv[1]) if len(argv) > 1 else 300
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        out: dict[str, Any] = {
            **dict(zip(("restore_100k_s", "restart_100k_s"), restore_100k(workdir), strict=True)),
            "burst_bans_per_s": burst_10k(workdir),
        }
        out["latency_ms"] = latencies(latency(workdir, samples))
    out["one_more_ban_ms"] = one_more_ban()
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv)
