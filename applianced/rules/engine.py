"""The engine: routes each message to the jails that select it and returns their offences.

Pure: ``feed(message, now)`` reads no clock, logs nothing, touches no store or firewall. The
listeners ask ``gate`` first, so that a message no jail can match is dropped before it is parsed;
routes are cached per app-name (bounded), and each jail's filter runs its literal prefilter
before any regex.

Cluster mode's ``share_failures`` adds one hook: ``on_failure``, when given, is called with each
failure a jail counted from this appliance's messages (ignored addresses excepted), and
``count_remote`` counts another appliance's failure without calling it (no echo).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from applianced.rules.decision import Found, IPAddress, Lookup, Offence
from applianced.rules.filters import Outcome
from applianced.rules.jail import Jail
from applianced.rules.message import SyslogMessage

__all__ = ["CountedFailure", "Engine", "Gate", "GateCache", "split_evidence"]

# The routing gate's question, asked with the TAG of a message of the common shape (its raw
# bytes): None when no jail reads that program; else byte strings of which a message of it must
# hold one for some jail to match it, or () when every message of it must be parsed. The engine
# owns the answer; ``receiver/parse.parse_routed`` takes any callable of this shape, so that the
# parser (one layer up, sans-io) needs nothing of the rules but the message type.
Gate = Callable[[bytes], tuple[bytes, ...] | None]

_ROUTE_CACHE_MAX = 4096


class CountedFailure(NamedTuple):
    """One failure a jail counted: the address (with the network prefix a ``<CIDR>`` tag
    captured), the matched line as evidence, its time of receipt, the syslog sender. A tuple:
    one is built per failure on the hot path when failures are shared."""

    jail: str
    address: IPAddress
    prefix: int | None
    line: str
    at: float
    sender: str


class Engine:
    """Holds the enabled jails. Replace them with ``set_jails`` (a reload)."""

    def __init__(
        self,
        jails: Sequence[Jail] = (),
        on_failure: Callable[[CountedFailure], None] | None = None,
        on_unmatched: Callable[[str | None], None] | None = None,
    ) -> None:
        """``on_unmatched``: called with a message's sender when the message reached a jail
        and no jail's failregex matched it (``receiver.senders.SenderBook.unmatched``)."""
        self.jails: dict[str, Jail] = {}
        self._routes: dict[str | None, tuple[Jail, ...]] = {}
        self._gates = GateCache(self._needles)
        # The listeners' routing gate (``Gate``), asked for every message: a dict lookup
        # in C once a TAG was seen (see _needles for the answer).
        self.gate: Gate = self._gates.__getitem__
        self.on_failure = on_failure
        self.on_unmatched = on_unmatched
        self.set_jails(jails)

    def set_jails(self, jails: Sequence[Jail]) -> None:
        """Install a new set of jails; a jail that keeps its name keeps its windows."""
        new = {j.name: j for j in jails}
        for name, jail in new.items():
            old = self.jails.get(name)
            if old is not None and old is not jail:
                jail.adopt(old)
        self.jails = new
        self._routes = {}
        self._gates.clear()

    def route(self, app_name: str | None) -> tuple[Jail, ...]:
        jails = self._routes.get(app_name)
        if jails is None:
            jails = tuple(j for j in self.jails.values() if j.reads_program(app_name))
            if len(self._routes) >= _ROUTE_CACHE_MAX:
                self._routes.clear()
            self._routes[app_name] = jails
        return jails

    def _needles(self, tag: bytes) -> tuple[bytes, ...] | None:
        """The gate's answer for a program, given as the raw bytes of its TAG: None when no
        jail reads it; else the byte strings of which a message must hold one for some jail
        that reads it to match (every filter literal of those jails), or () when one of them
        has no such literals and every message must be parsed. b"" stands for a message
        without a program (the parser asks so for RFC 5424's NILVALUE and for plain text)."""
        jails = self.route(tag.decode("utf-8", "replace") or None)
        if not jails:
            return None
        if all(j.filter.needles for j in jails):
            return tuple(dict.fromkeys(n for j in jails for n in j.filter.needles))
        return ()

    def feed(self, message: SyslogMessage, now: float) -> list[Offence | Lookup | Found]:
        """Offences caused by ``message`` received at ``now`` (POSIX seconds), hostnames to
        resolve for jails whose ``usedns`` is not "no", and for jails with ``log_found`` each
        failure counted (before the offence it completes)."""
        out: list[Offence | Lookup | Found] = []
        line = evidence = None  # built once per message, and only when a jail needs them
        reached = matched = False
        for jail in self.route(message.app_name):
            # Most jails read every sender: skip the call for them (one per jail a message).
            if jail.conf.senders and not jail.reads_sender(message.sender):
                continue
            reached = True
            filt = jail.filter
            if jail.lines is not None:  # multi-line: the lines before count too
                line = line or " " + message.line
                source = (message.sender, message.app_name, message.procid)
                outcome, match, _ = jail.lines.feed(source, line, now)
                if outcome is not Outcome.MATCHED:
                    match = None
            elif filt.on_line:
                # A fail2ban filter reads the line as fail2ban leaves it once the date is cut
                # off: " host app[pid]: msg" (leading space included); ours read the MSG alone.
                line = line or " " + message.line
                match = filt.match(line)
            else:
                match = filt.match(message.msg)
            if match is None:
                jail.count_unmatched(message.app_name)
                continue
            matched = True
            evidence = evidence or _evidence(message)
            if match.address is None:
                warn = jail.conf.usedns == "warn"
                out.append(Lookup(jail.name, match.host, evidence, now, warn))
                continue
            if jail.conf.log_found and not jail.ignores(match.address):
                out.append(Found(jail.name, match.address, message.sender or "file", message.line))
            offence = self._fail(
                jail, match.address, evidence, now, match.prefix, message.sender or ""
            )
            if offence is not None:
                out.append(offence)
        if reached and not matched and self.on_unmatched is not None:
            self.on_unmatched(message.sender)
        return out

    def resolved(self, lookup: Lookup, address: IPAddress, now: float) -> Offence | None:
        """Count a failure of ``lookup`` for one address its hostname resolved to."""
        jail = self.jails.get(lookup.jail)
        return None if jail is None else self._fail(jail, address, lookup.line, now, None, "")

    def _fail(
        self,
        jail: Jail,
        address: IPAddress,
        line: str,
        now: float,
        prefix: int | None,
        sender: str,
    ) -> Offence | None:
        """Count a failure this appliance saw, and hand it to ``on_failure`` when set."""
        if self.on_failure is not None and not jail.ignores(address):
            self.on_failure(CountedFailure(jail.name, address, prefix, line, now, sender))
        return jail.fail(address, line, now, prefix)

    def count_remote(self, failure: CountedFailure, now: float) -> Offence | None:
        """Count another appliance's failure in the jail of the same name (if enabled here),
        received at ``now`` by this appliance's clock; never handed to ``on_failure``."""
        jail = self.jails.get(failure.jail)
        if jail is None:
            return None
        return jail.fail(failure.address, failure.line, now, failure.prefix)


class GateCache(dict[bytes, tuple[bytes, ...] | None]):
    """A routing gate's answers per TAG (at most 4096), worked out by ``work_out`` on a miss.
    Its ``__getitem__`` is the gate (``Gate``): a lookup in C for a TAG already seen,
    which is nearly every message (a Python function in its place cost a sixth of
    test-filter's time on a mail log)."""

    def __init__(self, work_out: Gate) -> None:
        super().__init__()
        self._work_out = work_out

    def __missing__(self, tag: bytes) -> tuple[bytes, ...] | None:
        answer = self._work_out(tag)
        if len(self) >= _ROUTE_CACHE_MAX:
            self.clear()
        self[tag] = answer
        return answer


def _evidence(message: SyslogMessage) -> str:
    """The matched line as kept for `why` and reports: who delivered it, the time written in
    the message (when it has one; for display, windows run on the time of receipt), the line."""
    stamp = "" if message.timestamp is None else _stamp_text(message.timestamp)
    return f"[{message.sender or 'file'}] {stamp}{message.line}"


def split_evidence(evidence: str) -> tuple[str, str]:
    """A kept line (``_evidence``'s form) as the sender that delivered it and the rest; the
    sender is "" for a line without one (a failure recalled from an eviction)."""
    if evidence.startswith("["):
        sender, sep, rest = evidence[1:].partition("] ")
        if sep:
            return sender, rest
    return "", evidence


def _stamp_text(timestamp: datetime) -> str:
    """A message's time as evidence shows it: as the sender wrote it, offset included."""
    return _iso_text(timestamp, timestamp.utcoffset())


# Cached: a storm's messages share a few seconds (the parser hands out one datetime per
# timestamp text). The offset is part of the key: the same instant written with another offset
# compares equal, and must not be shown with the first one's.
@functools.lru_cache(maxsize=1024)
def _iso_text(timestamp: datetime, offset: timedelta | None) -> str:
    return f"{timestamp.isoformat()} "
