"""Memory benchmark (issue "benchmark suite", figure 6): the resident set (VmRSS) of a fresh
process holding the Appliance (one postfix-sasl jail, in-memory enforcer, SQLite store) in
three states, each measured in its own process:

- ``tracked``: 1,000,000 distinct offenders, one failure each, max_tracked = 1,000,000;
- ``bounded``: the same 1,000,000 offenders with max_tracked = 100,000 (eviction);
- ``bans``: 100,000 active bans restored from the store.

Offenders are distinct /64s of 2001:db8::/32 (the jail bans IPv6 by /64); messages are made
and fed one at a time so that no list of them inflates the figure.

``python -m bench.memory tracked|bounded|bans`` prints one JSON object: rss_mib (after),
base_mib (before feeding), tracked (the jail's count).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from ipaddress import ip_network
from pathlib import Path

from twisted.internet.task import Clock

from applianced import views
from applianced.appliance import Appliance
from applianced.conf.load import parse_config
from applianced.rules.decision import BanDecision, BanKind
from applianced.rules.message import SyslogMessage
from applianced.store.sqlite import SqliteOffenderStore
from applianced.testing import MemoryEnforcer

OFFENDERS = 1_000_000
BANS = 100_000
CONFIG = """\
[daemon]
state_dir = "state"
[[listeners]]
transport = "udp"
address = "127.0.0.1"
port = 0
[defaults]
bantime = "1d"
findtime = "1d"
maxretry = 5
max_tracked = {max_tracked}
[jails.postfix-sasl]
filter = "postfix-sasl"
ports = [25, 465, 587]
"""


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SystemExit("no VmRSS in /proc/self/status")


def offender(i: int) -> str:
    return f"2001:db8:{i >> 16:x}:{i & 0xFFFF:x}::1"


def appliance(workdir: Path, max_tracked: int) -> Appliance:
    conf = parse_config(CONFIG.format(max_tracked=max_tracked), workdir / "appliance.toml")
    clock = Clock()
    clock.advance(time.time())
    store = SqliteOffenderStore(workdir / "offenders.sqlite")
    return Appliance(conf, store, MemoryEnforcer(), clock)


def tracked(workdir: Path, max_tracked: int) -> dict[str, float]:
    app = appliance(workdir, max_tracked)
    app.start()
    base = rss_mib()
    now = time.time()
    for i in range(OFFENDERS):
        app.receive(SyslogMessage(
            facility=2, severity=4, timestamp=None, hostname="mx", app_name="postfix/smtpd",
            procid="1", msgid=None, structured_data=None,
            msg=f"warning: unknown[{offender(i)}]: SASL LOGIN authentication failed: UGFz",
            sender="127.0.0.1", transport="udp", received_at=now,
        ))  # fmt: skip
    count = views.status(app)["jails"]["postfix-sasl"]["tracked"]
    return {"rss_mib": rss_mib(), "base_mib": base, "tracked": count}


def record_bans(workdir: Path) -> None:
    """The store with BANS active bans (run in a process of its own: its lists would count)."""
    now = time.time()
    store = SqliteOffenderStore(workdir / "offenders.sqlite", lines_per_ban=0)
    store.record_bans([
        BanDecision("postfix-sasl", ip_network(f"{offender(i)}/64", strict=False), 86400.0,
                    BanKind.AUTO, 1, now)
        for i in range(BANS)
    ])  # fmt: skip
    store.close()


def bans(workdir: Path) -> dict[str, float]:
    subprocess.run([sys.executable, "-m", "bench.memory", "record", str(workdir)], check=True)
    app = appliance(workdir, OFFENDERS)
    base = rss_mib()
    app.start()
    return {"rss_mib": rss_mib(), "base_mib": base, "banned": len(app.active)}


def main(argv: list[str]) -> None:
    if argv[0] == "record":
        record_bans(Path(argv[1]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if argv[0] == "tracked":
            out = tracked(workdir, OFFENDERS)
        elif argv[0] == "bounded":
            out = tracked(workdir, OFFENDERS // 10)
        else:
            out = bans(workdir)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
