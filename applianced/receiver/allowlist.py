"""A listener's ``allowed_senders`` as a membership test on the peer address as the socket
reports it; the listener's ``Edge`` (``edge.py``) asks it before anything else is done with a
datagram or a connection.

A flood from forged sources is refused here, so the answer costs the same for every source
and keeps nothing per source: the exact senders (/32, /128) are a set of packed addresses,
the wider networks a short list of (network, mask) integers. Nothing is cached, so a source
refused a million times, or a million sources refused once, leave no trace in memory."""

from __future__ import annotations

import socket

from applianced.rules.decision import IPNetwork

__all__ = ["Allowlist"]

_MAPPED = bytes(10) + b"\xff\xff"  # ::ffff:0:0/96, an IPv4 peer of a dual-stack socket


class Allowlist:
    """``host in allowlist``: whether ``host`` (``192.0.2.1``, ``2001:db8::1``, with or
    without a zone index, or ``::ffff:192.0.2.1``, which counts as its IPv4 address) is in
    one of ``networks``. Anything that is not an address is not in it."""

    __slots__ = ("_exact", "_v4", "_v6")

    def __init__(self, networks: tuple[IPNetwork, ...]) -> None:
        exact: set[bytes] = set()
        v4: list[tuple[int, int]] = []
        v6: list[tuple[int, int]] = []
        for net in networks:
            if net.prefixlen == net.max_prefixlen:
                exact.add(net.network_address.packed)
            else:
                wide = v4 if net.version == 4 else v6
                wide.append((int(net.network_address), int(net.netmask)))
        self._exact = frozenset(exact)
        self._v4 = tuple(v4)
        self._v6 = tuple(v6)

    def __contains__(self, host: object) -> bool:
        if not isinstance(host, str):
            return False
        try:
            if ":" in host:
                packed = socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
                if packed[:12] == _MAPPED:
                    packed = packed[12:]
            else:
                packed = socket.inet_pton(socket.AF_INET, host)
        except (OSError, ValueError):  # not an address; ValueError: an embedded NUL
            return False
        if packed in self._exact:
            return True
        value = int.from_bytes(packed)
        networks = self._v4 if len(packed) == 4 else self._v6
        return any(value & mask == network for network, mask in networks)
