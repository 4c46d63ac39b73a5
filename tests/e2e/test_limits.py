"""End to end: the receiver's limits in the real daemon (--dry-run) over loopback sockets.

A sender over its connection cap is refused and counted; a slow-loris client and a client
opening connections in a loop do not stop another sender's failures from banning; a sender over
its message rate is cut down to it and the excess counted; an idle connection is closed; random
bytes over many connections do not kill the listener. Counts are bounded, waits poll with a
deadline. Senders are told apart by their loopback source address (127.0.0.2, 127.0.0.3...).
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.daemon import SSHD_JAIL, Daemon, free_port, wait_for

LINE = "<38>Nov 22 10:00:01 mx sshd[1]: Failed password for root from {} port 1 ssh2"

CONFIG = (
    """\
[daemon]
state_dir = "state"
control_socket = "control.sock"

[receiver]
allowed_senders = ["127.0.0.0/8"]
max_connections = 12
max_connections_per_sender = 4
idle_timeout = "{idle}"
max_rate_per_sender = {rate}
max_burst_per_sender = {burst}

[[listeners]]
transport = "udp"
address = "127.0.0.1"
port = {port}

[[listeners]]
transport = "tcp"
address = "127.0.0.1"
port = {port}
"""
    + SSHD_JAIL
)


def start(
    tmp_path: Path, idle: str = "1h", rate: float = 10000, burst: int = 20000
) -> tuple[Daemon, int]:
    port = free_port()
    d = Daemon(tmp_path, CONFIG.format(port=port, idle=idle, rate=rate, burst=burst))
    return d.start(), port


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Daemon, int]]:
    d, port = start(tmp_path)
    try:
        yield d, port
    finally:
        d.stop()


def connect(port: int, source: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def closed_by_peer(s: socket.socket, timeout: float = 5.0) -> bool:
    """Whether the server closed ``s`` (EOF or reset) within ``timeout`` seconds."""
    s.settimeout(timeout)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def tcp_failures(port: int, source: str, address: str, n: int = 3) -> None:
    with connect(port, source) as s:
        s.sendall(b"".join(LINE.format(address).encode() + b"\n" for _ in range(n)))


def test_connection_cap_per_sender_is_enforced_and_counted(daemon: tuple[Daemon, int]) -> None:
    """A fifth connection from one sender is closed at once and counted; a slot freed by a
    close is usable again, and the other senders are not affected."""
    d, port = daemon
    held = [connect(port, "127.0.0.2") for _ in range(4)]
    try:
        wait_for("four open connections", lambda: d.receiver()["open_connections"] == 4)
        extra = connect(port, "127.0.0.2")
        assert closed_by_peer(extra)
        extra.close()
        stats = wait_for(
            "the refusal counted", lambda: (r := d.receiver())["refused_connections_sender"] and r
        )
        assert stats["refused_connections_sender"] == 1 and stats["open_connections"] == 4
        tcp_failures(port, "127.0.0.3", "203.0.113.20")
        wait_for("another sender's ban", lambda: "203.0.113.20/32" in d.banned())
        held.pop().close()
        wait_for("a freed slot", lambda: d.receiver()["open_connections"] == 3)
        tcp_failures(port, "127.0.0.2", "203.0.113.21")
        wait_for("the capped sender's ban", lambda: "203.0.113.21/32" in d.banned())
    finally:
        for s in held:
            s.close()


def test_total_connection_cap(daemon: tuple[Daemon, int]) -> None:
    """Beyond max_connections (12) in total, with every open connection sending, connections
    from any sender are refused."""
    d, port = daemon
    held = [connect(port, f"127.0.1.{i}") for i in range(1, 13)]
    try:
        for s in held:
            s.sendall(b"<38>Nov 22 10:00:01 mx cron[1]: a frame\n")
        wait_for("twelve sending", lambda: d.receiver()["received_tcp"] == 12)
        extra = connect(port, "127.0.2.1")
        assert closed_by_peer(extra)
        extra.close()
        wait_for("the refusal counted", lambda: d.receiver()["refused_connections_total"] == 1)
    finally:
        for s in held:
            s.close()
    wait_for("all closed", lambda: d.receiver()["open_connections"] == 0)


def test_silent_connections_make_room_for_a_sender(daemon: tuple[Daemon, int]) -> None:
    """Twelve connections that send nothing hold every slot (max_connections = 12); a sender
    still gets in, the oldest silent one is closed, and the sender's failures ban."""
    d, port = daemon
    held = [connect(port, f"127.0.1.{i}") for i in range(1, 13)]
    try:
        wait_for("twelve open connections", lambda: d.receiver()["open_connections"] == 12)
        tcp_failures(port, "127.0.2.1", "198.51.100.77")
        assert closed_by_peer(held[0])
        wait_for("banned", lambda: "198.51.100.77/32" in d.banned())
        assert d.receiver()["evicted_pending"] == 1
    finally:
        for s in held:
            s.close()
    wait_for("all closed", lambda: d.receiver()["open_connections"] == 0)


def test_slow_loris_and_connect_loop_do_not_stop_other_senders(
    daemon: tuple[Daemon, int],
) -> None:
    """One sender holds its connections dribbling a frame a byte at a time and another opens
    and closes connections in a loop (200 times); a third sender's failures still ban."""
    d, port = daemon
    loris = [connect(port, "127.0.0.4") for _ in range(4)]
    try:
        partial = LINE.format("198.51.100.99").encode()
        for i in range(40):
            for s in loris:
                s.sendall(partial[i : i + 1])
            loop = connect(port, "127.0.0.5")
            loop.close()
            loop = connect(port, "127.0.0.5")
            loop.sendall(b"<38>Nov")
            loop.close()
            if i == 20:
                tcp_failures(port, "127.0.0.6", "203.0.113.30")
        for _ in range(120):
            connect(port, "127.0.0.5").close()
        wait_for("the third sender's ban", lambda: "203.0.113.30/32" in d.banned())
        assert "198.51.100.99/32" not in d.banned()
        # The loop's connections were accepted or, closing slower than it opened, refused at
        # its per-sender cap: each one is counted either way.
        wait_for(
            "every loop connection counted",
            lambda: (
                (r := d.receiver())["connections"] + r["refused_connections_sender"] >= 4 + 200 + 1
            ),
        )
    finally:
        for s in loris:
            s.close()


def test_per_sender_rate_drops_and_counts_the_excess(tmp_path: Path) -> None:
    """At 5 messages/s with bursts of 10, 200 messages sent at once over TCP from one sender
    are cut to about the burst, the rest counted as rate_limited; another sender is
    unaffected. Over UDP, where the source is unproven, the same 200 are all read."""
    d, port = start(tmp_path, rate=5, burst=10)
    try:
        sent = 200
        with connect(port, "127.0.0.2") as s:
            s.sendall(
                b"".join(LINE.format(f"198.51.100.{i % 50}").encode() + b"\n" for i in range(sent))
            )
            stats = wait_for(
                "every message accounted for",
                lambda: (r := d.receiver())["received"] + r["rate_limited"] >= sent and r,
            )
        assert stats["received"] + stats["rate_limited"] == sent
        assert 10 <= stats["received"] <= 60 and stats["rate_limited"] >= sent - 60
        tcp_failures(port, "127.0.0.3", "203.0.113.40")
        wait_for("the other sender's ban", lambda: "203.0.113.40/32" in d.banned())
        rc, out, _ = d.ctl_rc("status")
        assert rc == 0 and "over the sender rate" in out

        limited = d.receiver()["rate_limited"]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.4", 0))
            for i in range(sent):
                u.sendto(LINE.format(f"198.51.100.{i % 50}").encode(), ("127.0.0.1", port))
        wait_for("every datagram read", lambda: d.receiver()["received_udp"] >= sent)
        assert d.receiver()["rate_limited"] == limited
    finally:
        d.stop()


def test_idle_connection_is_closed_and_counted(tmp_path: Path) -> None:
    """With idle_timeout = 1s, a silent connection is closed by the daemon and counted."""
    d, port = start(tmp_path, idle="1s")
    try:
        s = connect(port, "127.0.0.2")
        started = time.monotonic()
        assert closed_by_peer(s, timeout=10)
        assert time.monotonic() - started >= 0.5
        s.close()
        wait_for("the timeout counted", lambda: d.receiver()["idle_timeouts"] == 1)
    finally:
        d.stop()


def test_random_bytes_over_real_tcp_connections(daemon: tuple[Daemon, int]) -> None:
    """A bounded fuzz over real sockets: 60 connections of seeded random bytes (noise and
    syslog-like pieces, random read sizes); the daemon lives, every connection ends, and a
    valid sender still bans afterwards."""
    d, port = daemon
    rng = random.Random(7)
    pieces = [b"<38>", b"<165>1 ", b"Nov 22 10:00:01 ", b"\n", b"99999 ", b"12 ", b"\x00", b"\xff"]
    for n in range(60):
        with connect(port, f"127.0.3.{n % 4 + 1}") as s:
            for _ in range(rng.randrange(1, 20)):
                if rng.random() < 0.5:
                    chunk = rng.randbytes(rng.randrange(0, 600))
                else:
                    chunk = b"".join(rng.choice(pieces) for _ in range(rng.randrange(1, 12)))
                try:
                    s.sendall(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    break  # the daemon closed it on a fatal frame error: allowed
    wait_for("every fuzz connection closed", lambda: d.receiver()["open_connections"] == 0)
    tcp_failures(port, "127.0.0.7", "203.0.113.50")
    wait_for("a ban after the fuzz", lambda: "203.0.113.50/32" in d.banned())
    assert d.proc is not None and d.proc.poll() is None
