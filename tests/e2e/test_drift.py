"""End to end, issue 20: the store and the kernel never drift apart. The real daemon and its
nftables table in a network namespace of the test's own; bursts of bans sent over UDP to
loopback inside it; the daemon SIGKILLed, its store truncated, damaged or full, its sets
flushed by hand, and the kernel's elements compared before and after.

Nothing here touches the host's own ruleset: the daemon and nft run under ``ip netns exec``.
"""

from __future__ import annotations

import json
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.daemon import LOOPBACK_UDP, Daemon, wait_for
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


def listed(ns: str) -> tuple[dict[tuple[str, str], int | None], dict[Any, tuple[float, float]]]:
    """``kernel(ns)``, and each timed element's end as the interval the listing's own time
    allows (the kernel lists whole seconds)."""
    start = time.time()
    found = kernel(ns)
    end = time.time()
    return found, {k: (start + left - 1, end + left + 1) for k, left in found.items() if left}


def test_no_ban_in_the_kernel_is_lost_by_sigkill_at_random_points_of_bursts(
    tmp_path: Path, ns: str
) -> None:
    """22 rounds: a burst of 1,000 bans, the daemon SIGKILLed after a random number of them
    (seeded), the kernel's elements read, the daemon started again: it holds every one of
    them, with the same end (within the kernel's whole seconds), and its book agrees."""
    rng = random.Random(20)
    d = start(tmp_path, ns)
    for round_ in range(1, 23):
        assert d.proc is not None
        kill_at = rng.randrange(1, 1000)
        ns_python(ns, BURST, str(round_), "1000", str(kill_at), str(d.proc.pid), str(PORT))
        d.proc.wait(timeout=30)
        before, ends = listed(ns)
        d.start()
        after, ends_after = listed(ns)
        lost = before.keys() - after.keys()
        assert not lost, f"round {round_} (kill after {kill_at}): {len(lost)} bans lost"
        for key in before:
            (low, high), (low_after, high_after) = ends[key], ends_after[key]
            # Timeouts are set and listed in whole seconds: 3 s of slack.
            assert low_after <= high + 3 and low <= high_after + 3, (round_, key)
        status = d.ctl("status")["jails"]["burst"]
        assert status["banned"] == status["kernel_elements"] == len(after), round_
    d.stop()


def burst(ns: str, round_: int, count: int) -> None:
    """``count`` bans of distinct addresses of round ``round_``, no kill."""
    ns_python(ns, BURST, str(round_), str(count), "0", "0", str(PORT))


def elements_of(ns: str, jail_set: str) -> dict[str, int | None]:
    return {json.loads(v): left for (s, v), left in kernel(ns).items() if s == jail_set}


TWO_JAILS = (
    CONFIG
    + """
[jails.other]
failregex = ['^fail from <HOST>$']
programs = ["burst"]
ports = [25]
ipv6_prefix = 128

[jails.example]
enabled = false
failregex = ['^fail from <HOST>$']
programs = ["burst"]
"""
)


def test_a_jail_disabled_and_enabled_again_keeps_its_bans_in_the_kernel(
    tmp_path: Path, ns: str
) -> None:
    """`jail disable other` then `jail enable other`, and `general disable` then `general
    enable`: other's bans are back in its set with their own expiry, and in `banned`; the
    example jail disabled before stays disabled."""
    d = start(tmp_path, ns, TWO_JAILS)
    burst(ns, 1, 5)
    wait_for("5 bans in each jail", lambda: len(d.ctl("banned")) == 10 or None)
    before = elements_of(ns, "other_v6")
    assert len(before) == 5

    def edit(*args: str) -> None:
        rc, _, err = d.ctl_rc(*args, "--config", str(d.config))
        assert rc == 0, err

    for off, on in ((("jail", "disable", "other"), ("jail", "enable", "other")),
                    (("general", "disable"), ("general", "enable"))):  # fmt: skip
        edit(*off)
        assert elements_of(ns, "other_v6") == {}
        edit(*on)
        after = elements_of(ns, "other_v6")
        assert after.keys() == before.keys(), off
        assert all(abs((after[k] or 0) - (before[k] or 0)) <= 5 for k in before)
        assert sum(b["jail"] == "other" for b in d.ctl("banned")) == 5
        assert set(d.ctl("status")["jails"]) == {"burst", "other"}
    d.stop()


def test_a_truncated_store_keeps_the_kernels_bans_and_warns(tmp_path: Path, ns: str) -> None:
    """The store truncated to 0 bytes while the daemon was down: the start adopts the
    kernel's 40 bans with their expiry, logs a warning naming how many and why, and
    `banned` lists them."""
    d = start(tmp_path, ns)
    burst(ns, 1, 40)
    wait_for("40 bans", lambda: len(d.ctl("banned")) == 40 or None)
    d.stop()
    assert d.proc is not None and d.proc.wait(timeout=30) == 0
    before = kernel(ns)
    state = tmp_path / "state"
    (state / "offenders.sqlite").write_bytes(b"")
    d.start()
    assert kernel(ns).keys() == before.keys()
    assert len(d.ctl("banned")) == 40
    assert "40 bans were in the kernel but not in the offenders store" in d.output
    assert "it is new, was emptied or replaced" in d.output
    assert d.ctl("status")["health"]["recovered"] == 40
    d.stop()


def test_a_damaged_store_is_refused_and_store_recover_rebuilds_it(tmp_path: Path, ns: str) -> None:
    """Random bytes (seeded) over some pages of the store: the start is refused with the
    recovery steps and the kernel keeps its bans; `appliancectl store recover` keeps the
    damaged file aside, and the next start holds every ban again (read or adopted)."""
    d = start(tmp_path, ns)
    burst(ns, 1, 600)
    wait_for("600 bans", lambda: len(d.ctl("banned")) == 600 or None)
    d.stop()
    assert d.proc is not None and d.proc.wait(timeout=30) == 0
    before = kernel(ns)
    store = tmp_path / "state" / "offenders.sqlite"
    rng = random.Random(3)
    with store.open("r+b") as f:
        for page in (6, 7, 8):
            f.seek(page * 4096)
            f.write(rng.randbytes(4096))
    with pytest.raises(AssertionError, match="applianced exited with 1"):
        d.start()
    assert "is damaged" in d.output and "appliancectl store recover" in d.output
    assert kernel(ns).keys() == before.keys()
    rc, out, err = d.ctl_rc("store", "recover", "--config", str(d.config))
    assert rc == 0, err
    assert "moved the damaged store to" in out
    assert list(store.parent.glob("offenders.sqlite.damaged-*"))
    d.start()
    assert kernel(ns).keys() == before.keys()
    assert len(d.ctl("banned")) == 600
    d.stop()


def test_sets_flushed_by_another_tool_are_repaired_by_the_reconcile(
    tmp_path: Path, ns: str
) -> None:
    """`nft flush set` of our set, then `nft flush ruleset` (our table deleted): each time the
    reconcile (every second here) puts the bans back and counts the repair."""
    d = start(
        tmp_path,
        ns,
        CONFIG.replace("[defaults]", "[enforcement]\nreconcile_interval = 1\n\n[defaults]"),
    )
    burst(ns, 1, 30)
    wait_for("30 bans", lambda: len(d.ctl("banned")) == 30 or None)
    before = kernel(ns)
    for repairs, command in enumerate(
        (("flush", "set", "inet", "applianced", "burst_v6"), ("flush", "ruleset")), start=1
    ):
        ns_exec(ns, "nft", *command)
        wait_for("the repair", lambda: kernel(ns).keys() == before.keys() or None)
        wait_for(
            "the repair counted",
            lambda n=repairs: d.ctl("status")["health"]["reconcile_repairs"] == n or None,
        )
        assert d.ctl("status")["jails"]["burst"]["kernel_elements"] == 30
    assert d.output.count("the kernel's sets had drifted") == 2
    assert "sets repaired 2 times (60 bans put back" in d.ctl_rc("status")[1]
    d.stop()


@pytest.fixture
def full_disk(tmp_path: Path, ns: str) -> Iterator[tuple[Path, list[str]]]:
    """A 1 MiB tmpfs over ``tmp_path/state`` in a mount namespace of its own, held by a
    keeper process: the path to see it from here, and the prefix that runs a command in the
    test's network namespace and that mount namespace (so it outlives a daemon)."""
    state = tmp_path / "state"
    state.mkdir()
    mount = 'mount -t tmpfs -o size=1m tmpfs "$1" && echo mounted && exec cat'
    keeper = subprocess.Popen(
        ["ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private",
         "sh", "-c", mount, "sh", str(state)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert keeper.stdout is not None and keeper.stdout.readline() == "mounted\n"
        seen = Path(f"/proc/{keeper.pid}/root") / state.relative_to("/")
        yield seen, ["nsenter", "--target", str(keeper.pid), "--mount", "--net"]
    finally:
        assert keeper.stdin is not None
        keeper.stdin.close()  # cat ends, and the namespace with it
        keeper.wait(timeout=30)


def test_a_full_state_directory_keeps_bans_enforced_and_writes_them_later(
    tmp_path: Path, ns: str, full_disk: tuple[Path, list[str]]
) -> None:
    """The state directory full: new bans are enforced, the failure shows in status while
    their rows wait; with space back they are written. Full again and SIGKILLed: the restart,
    on the full disk, keeps every kernel ban (the 100 the store lacks adopted, their rows
    waiting), and writes them once space is freed."""
    seen, prefix = full_disk
    d = Daemon(tmp_path, CONFIG, args=(), prefix=prefix).start()
    burst(ns, 1, 20)
    wait_for("20 bans", lambda: len(d.ctl("banned")) == 20 or None)
    filler = seen / "filler"

    def fill() -> None:
        with filler.open("wb", buffering=0) as f, pytest.raises(OSError, match="No space"):
            for _ in range(1024):
                f.write(b"\0" * 4096)

    fill()
    burst(ns, 2, 200)
    wait_for("220 bans", lambda: len(d.ctl("banned")) == 220 or None)
    health = d.ctl("status")["health"]
    assert health["store_failing"] is True and health["store_pending"] > 0
    assert "store: NOT WRITABLE" in d.ctl_rc("status")[1]
    assert len(kernel(ns)) == 220
    filler.unlink()
    wait_for(
        "the waiting rows written",
        lambda: d.ctl("status")["health"]["store_pending"] == 0 or None,
        timeout=70,
    )
    assert d.ctl("status")["health"]["store_failing"] is False
    assert "the offenders store accepts writes again" in d.output
    fill()
    burst(ns, 3, 100)
    wait_for("320 bans", lambda: len(d.ctl("banned")) == 320 or None)
    before = kernel(ns)
    d.kill()
    d.start()  # on the full disk still
    assert kernel(ns).keys() == before.keys()
    assert len(d.ctl("banned")) == 320
    assert "100 bans were in the kernel but not in the offenders store" in d.output
    assert d.ctl("status")["health"]["store_failing"] is True
    filler.unlink()
    wait_for(
        "the adopted bans written",
        lambda: d.ctl("status")["health"]["store_pending"] == 0 or None,
        timeout=70,
    )
    d.stop()
    assert d.proc is not None and d.proc.wait(timeout=30) == 0
    d.start()  # the store holds them all now: nothing to adopt
    assert len(d.ctl("banned")) == 320 and d.ctl("status")["health"]["recovered"] == 0
    d.stop()


def test_nested_prefix_bans_are_not_adopted_again_at_the_next_start(
    tmp_path: Path, ns: str
) -> None:
    """A /48 banned and a /56 inside it that outlasts it: the kernel's interval set holds
    disjoint pieces, the /56 and the /48's range around it (read back as a /52, a /51 ...). A
    restart finds each piece inside a ban of the store and adopts nothing: the store's two
    bans stay the only ones (it adopted 8 pieces as bans of their own, which an unban of the
    /48 would have left in place)."""
    d = start(tmp_path, ns)
    d.ctl("ban", "burst", "2001:db8:7::/48")
    d.ctl("ban", "burst", "2001:db8:7:100::/56", "--for", "2h")  # outlasts the /48: its own piece
    before = kernel(ns)
    assert len(before) == 3  # the /56, and the /48 on either side of it
    d.stop()
    assert d.proc is not None and d.proc.wait(timeout=30) == 0
    d.start()
    assert kernel(ns).keys() == before.keys()
    assert sorted(b["address"] for b in d.ctl("banned")) == [
        "2001:db8:7:100::/56",
        "2001:db8:7::/48",
    ]
    assert d.ctl("status")["health"]["recovered"] == 0
    assert "were in the kernel but not in the offenders store" not in d.output
    d.stop()
