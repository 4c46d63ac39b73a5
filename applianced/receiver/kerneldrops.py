"""Datagrams the kernel dropped on one UDP socket before the daemon could read them (its
receive buffer was full: what the netns-wide ``Udp: RcvbufErrors`` of /proc/net/snmp counts
for every socket), from the last column of /proc/self/net/udp or udp6, the line of the
socket's inode. /proc/self/net is the daemon's own network namespace.

``ListenerService`` (listeners.py) adds each UDP socket's drops to
``ReceiverStats.udp_kernel_drops`` every ``DROPS_EVERY`` seconds and when it closes the socket.
``table_drops`` is the pure parse; ``socket_drops`` reads the file."""

from __future__ import annotations

import os
import socket

__all__ = ["DROPS_EVERY", "socket_drops", "table_drops"]

DROPS_EVERY = 1.0  # seconds between two looks at a listener's drop counter


def table_drops(table: str, inode: int) -> int | None:
    """The drops column of ``inode``'s line in a /proc/net/udp table; None if not there."""
    wanted = str(inode)
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 12 and fields[9] == wanted:
            return int(fields[-1])
    return None


def socket_drops(sock: socket.socket) -> int | None:
    """How many datagrams the kernel dropped on ``sock`` since it was opened; None if the
    kernel does not list it (closed, or /proc not mounted)."""
    name = "udp6" if sock.family == socket.AF_INET6 else "udp"
    try:
        inode = os.fstat(sock.fileno()).st_ino
        with open(f"/proc/self/net/{name}", encoding="ascii") as f:
            return table_drops(f.read(), inode)
    except (OSError, ValueError):
        return None
