"""Per-sender limits of one listener: a token bucket per sender (message rate) and open
connection counts (in total and per sender: an IPv4 address, an IPv6 prefix, ``sender_key``).

Sans-io like the framer: the caller passes the time (seconds, from the injected reactor clock)
and reads the answer; nothing here logs, counts in ``ReceiverStats`` or touches a socket
(``edge.py`` does). The per-message cost is one dict lookup and a little arithmetic.
Memory is bounded: at most ``max_senders`` buckets are kept, the oldest dropped first.
"""

from __future__ import annotations

from ipaddress import ip_address

from applianced.rules.addresses import network_of

__all__ = ["MAX_SENDERS", "ConnectionLimiter", "RateLimiter", "sender_key"]

# Buckets kept per TCP/TLS listener (UDP has none: its sources are unproven). Only allowed
# senders get one (the allowlist is checked first), so this is only reached when
# allowed_senders is wide; dropping the oldest bucket then gives that sender a fresh burst,
# never unbounded memory.
MAX_SENDERS = 4096


class RateLimiter:
    """A token bucket per sender: ``rate`` messages a second (float), bursts of up to ``burst``.
    ``rate`` 0 means no limit. Excess messages are refused at once, never queued."""

    __slots__ = ("_buckets", "burst", "max_senders", "rate")

    def __init__(self, rate: float, burst: int, max_senders: int = MAX_SENDERS) -> None:
        self.rate = float(rate)
        self.burst = float(max(burst, 1))
        self.max_senders = max_senders
        # sender -> [tokens, time of the last update (seconds)]
        self._buckets: dict[str, list[float]] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, sender: str, now: float) -> bool:
        """Whether one more message from ``sender`` at ``now`` (seconds) is within its rate."""
        if not self.rate:
            return True
        bucket = self._buckets.get(sender)
        if bucket is None:
            if len(self._buckets) >= self.max_senders:
                del self._buckets[next(iter(self._buckets))]
            self._buckets[sender] = [self.burst - 1.0, now]
            return True
        tokens = bucket[0] + (now - bucket[1]) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        return True

    def reconfigure(self, rate: float, burst: int) -> None:
        """New settings from a reload; buckets restart full."""
        self.rate = float(rate)
        self.burst = float(max(burst, 1))
        self._buckets.clear()


def sender_key(host: str, prefix_v6: int) -> str:
    """Whom a connection from ``host`` counts against: an IPv4 address itself, an IPv6 address
    its /``prefix_v6`` network, as one host or one customer usually holds a whole /64; but an
    IPv6 address that stands for one IPv4 host (NAT64, Teredo: ``rules.addresses.host_only``)
    itself, as the jails count it, so hosts behind one translator do not share slots."""
    try:
        network = network_of(ip_address(host), prefix_v6)
    except ValueError:
        return host
    return host if network.prefixlen == network.max_prefixlen else str(network)


class ConnectionLimiter:
    """Open connections of one listener, in total and per sender (a ``sender_key``). ``admit``
    before accepting, ``opened``/``closed`` as they come and go. A limit of 0 means none."""

    __slots__ = ("max_per_sender", "max_total", "per_sender", "total")

    def __init__(self, max_total: int, max_per_sender: int) -> None:
        self.max_total = max_total
        self.max_per_sender = max_per_sender
        self.total = 0
        self.per_sender: dict[str, int] = {}

    def admit(self, sender: str) -> str | None:
        """None if one more connection from ``sender`` fits, else which limit it hits:
        ``"total"`` or ``"sender"``."""
        if self.max_total and self.total >= self.max_total:
            return "total"
        if self.max_per_sender and self.per_sender.get(sender, 0) >= self.max_per_sender:
            return "sender"
        return None

    def opened(self, sender: str) -> None:
        self.total += 1
        self.per_sender[sender] = self.per_sender.get(sender, 0) + 1

    def closed(self, sender: str) -> None:
        self.total -= 1
        left = self.per_sender.get(sender, 0) - 1
        if left > 0:
            self.per_sender[sender] = left
        else:
            self.per_sender.pop(sender, None)
