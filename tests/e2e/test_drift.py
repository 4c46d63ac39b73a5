"""End to end, issue 20: the store and the kernel never drift apart. The real daemon and its
nftables table in a network namespace of the test's own; bursts of bans sent over UDP to
loopback inside it; the daemon SIGKILLed, its store truncated, damaged or full, its sets
flushed by hand, and the kernel's elements compared before and after.

Nothing here touches the host's own ruleset: the daemon and nft run under ``ip netns exec``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.daemon import LOOPBACK_UDP, Daemon
from tests.netns import netns, netns_missing, ns_exec, ns_python

pytestmark = pytest.mark.skipif(netns_missing() is not None, reason=str(netns_missing()))

PORT = 5514
CONFIG = (
    LOOPBACK_UDP.format(port=PORT)
    + """
[defaults]
bantime = "1h"
maxretry = 1

[jails.burst]
failregex = ['^fail from <HOST>$']
programs = ["burst"]
ports = [25]
ipv6_prefix = 128
"""
)

# Sends argv[2] failures of distinct addresses (round argv[1]) to the daemon on port argv[5],
# one datagram each, in chunks of 50 sent once the daemon has read the last (its socket's
# receive queue empty, read from /proc/net/udp), and SIGKILLs pid argv[4] right after the
# argv[3]-th: a kill while the daemon works through a chunk, at a point the seed chooses.
BURST = """
import os, signal, socket, sys, time
round_, count, kill_at, pid, port = (int(a) for a in sys.argv[1:6])
local = "0100007F:%04X" % port

def queued():
    with open("/proc/net/udp") as f:
        for line in f:
            fields = line.split()
            if fields[1] == local:
                return int(fields[4].split(":")[1], 16)
    return 0

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(count):
    if i % 50 == 0:
        deadline = time.monotonic() + 20
        while queued() and time.monotonic() < deadline:
            pass
    line = "<38>Nov 22 10:00:01 mx burst[1]: fail from 2001:db8:%x::%x" % (round_, i + 1)
    s.sendto(line.encode(), ("127.0.0.1", port))
    if i + 1 == kill_at:
        os.kill(pid, signal.SIGKILL)
        break
"""


@pytest.fixture
def ns() -> Iterator[str]:
    with netns("drift") as name:
        yield name


def start(tmp_path: Path, ns: str, text: str = CONFIG) -> Daemon:
    return Daemon(tmp_path, text, args=(), prefix=("ip", "netns", "exec", ns)).start()


def kernel(ns: str) -> dict[tuple[str, str], int | None]:
    """Our table's elements: (set, value) -> seconds left (None: permanent)."""
    done = ns_exec(ns, "nft", "-j", "list", "table", "inet", "applianced", check=False)
    if done.returncode != 0:
        return {}
    found: dict[tuple[str, str], int | None] = {}
    for item in json.loads(done.stdout)["nftables"]:
        s = item.get("set")
        for elem in s.get("elem", []) if s else []:
            inner = elem["elem"] if isinstance(elem, dict) and "elem" in elem else {"val": elem}
            found[(s["name"], json.dumps(inner["val"]))] = inner.get("expires")
    return found


def test_no_ban_in_the_kernel_is_lost_by_sigkill_at_random_points_of_bursts(
    tmp_path: Path, ns: str
) -> None:
    """24 rounds: a burst of 1,500 bans, the daemon SIGKILLed after a random number of them
    (seeded), the kernel's elements read, the daemon started again: it holds every one of
    them, with the same end (within the kernel's whole seconds), and its book agrees."""
    rng = random.Random(20)
    d = start(tmp_path, ns)
    for round_ in range(1, 25):
        assert d.proc is not None
        kill_at = rng.randrange(1, 1500)
        ns_python(ns, BURST, str(round_), "1500", str(kill_at), str(d.proc.pid), str(PORT))
        d.proc.wait(timeout=30)
        before = kernel(ns)
        d.start()
        after = kernel(ns)
        lost = before.keys() - after.keys()
        assert not lost, f"round {round_} (kill after {kill_at}): {len(lost)} bans lost"
        for key, left in before.items():
            assert left is not None and after[key] is not None
            assert abs(after[key] - left) <= 3, (round_, key, left, after[key])
        status = d.ctl("status")["jails"]["burst"]
        assert status["banned"] == status["kernel_elements"] == len(after), round_
    d.stop()
