"""A Jail: which messages it reads, its sliding windows, its ignore list, its ban-time policy.

Pure and synchronous: the engine feeds it failures with the time of receipt; it answers with an
``Offence`` when an address (its IPv6 prefix, or a network a ``<CIDR>`` tag captured) reaches
``maxretry`` failures within ``findtime``. ``decide`` turns an offence into a ``BanDecision`` given
how many bans the address already had, which the Appliance reads from the durable store.

The windows are bounded by ``max_tracked`` as a segmented LRU, so that a spray of single failures
from distinct addresses cannot wash out a slow offender: a window of one failure is on probation,
one of two or more is protected, and a new address evicts the least recently failing address on
probation. The protected segment holds at most four fifths of ``max_tracked`` (its least recent
window goes back on probation), so new addresses always have room to reach their second failure.
An evicted window leaves its failure times behind, without its lines (a "ghost", as in the 2Q
cache), for ``max_tracked`` more evictions: an address that fails again meanwhile gets its
earlier failures back, so a spray must outnumber twice ``max_tracked`` between two failures of
a slow offender to make it start over.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from ipaddress import ip_address, ip_network

from applianced.conf.schema import JailConf
from applianced.rules.addresses import host_only, network_of
from applianced.rules.dates import date_finder
from applianced.rules.decision import BanDecision, BanKind, IPAddress, IPNetwork, Offence
from applianced.rules.filters import Filter
from applianced.rules.multiline import MultiLine
from applianced.units import MAX_BAN_SECONDS

__all__ = [
    "Jail",
    "JailStats",
    "ProgramSelector",
    "ban_duration",
    "decide",
    "jail_filter",
]

_SENDER_CACHE_MAX = 1024
_Key = tuple[int, int]  # (IP version, address as an integer)
_PROGRAM_CACHE_MAX = 4096
_Window = list[tuple[float, str]]
# Stands for the line of a failure recalled from a ghost (the evidence `why` shows).
EVICTED_LINE = "(line not kept: this failure was evicted while max_tracked addresses were tracked)"


def jail_filter(conf: JailConf, *, engine: str = "auto") -> Filter:
    """The compiled filter of a jail (raises FilterError): the one way a JailConf becomes a
    Filter, for the loader's check, the daemon and test-filter alike. ``engine="re"`` skips
    the RE2 twins: a regex RE2 refuses falls back to ``re``, so ``re`` alone finds every error
    (the loader's check, which then costs a third)."""
    return Filter(
        conf.failregex,
        conf.ignoreregex,
        allow_dns=conf.use_dns,
        name=conf.name,
        prefregex=conf.prefregex,
        on_line=conf.match_on == "line",
        engine=engine,
        maxlines=conf.maxlines,
        dates=None if conf.datepattern is None else date_finder(conf.datepattern),
    )


def ban_duration(base: float, factor: float, prior: int, cap: float) -> float:
    """Seconds of ban for an offender with ``prior`` earlier bans: base * factor**prior,
    never more than ``cap`` (and never less than ``base``)."""
    cap = max(cap, base)
    try:
        return min(base * factor**prior, cap)
    except OverflowError:  # factor**prior beyond a float: far beyond the cap
        return cap


def decide(conf: JailConf, offence: Offence, prior: int, jitter: float = 0.0) -> BanDecision:
    """The ban for ``offence``, the (prior + 1)-th ban of this network in this jail.

    The ban that brings the count to ``max_count`` (when not 0) is permanent: the address moves
    to the jail's blacklist. ``jitter`` (seconds, drawn by the caller from 0..bantime_jitter)
    is added to a temporary ban so that bans of one storm do not all lift at one instant.
    A temporary ban never lasts more than MAX_BAN_SECONDS, the longest the kernel takes.
    """
    count = prior + 1
    if conf.max_count and count >= conf.max_count:
        duration: float | None = None
        kind = BanKind.BLACKLIST
    else:
        inc = conf.bantime_increment
        grown = (
            ban_duration(conf.bantime, inc.factor, prior, inc.maxtime)
            if inc.enabled
            else conf.bantime
        )
        duration = min(grown + jitter, MAX_BAN_SECONDS)
        kind = BanKind.AUTO
    return BanDecision(
        jail=offence.jail,
        network=offence.network,
        duration=duration,
        kind=kind,
        count=count,
        at=offence.at,
        lines=offence.lines,
    )


@dataclass(slots=True)
class JailStats:
    """Counters since start (or since the jail was created by a reload)."""

    matched: int = 0
    ignored: int = 0
    offences: int = 0
    evicted: int = 0
    # Messages the jail read and found no failure in (no failregex matched, or an ignoreregex
    # overrode it), per program as the jail's programs name it (``ProgramSelector.entry``):
    # as many keys as the jail names programs, whatever the senders send.
    unmatched: dict[str, int] = field(default_factory=dict)


class Jail:
    """One jail's state: the windows of failures per network, bounded by ``max_tracked``.

    ``never_ban`` holds every network the jail must not ban whatever a message says: the
    jail's and the global ``ignoreip``, the allowed syslog senders, the appliance's own
    addresses. A failure from inside it is counted as ignored and forgotten.
    """

    def __init__(self, conf: JailConf, filter: Filter, never_ban: Iterable[IPNetwork] = ()) -> None:
        self.conf = conf
        self.filter = filter
        self.never_ban = tuple(dict.fromkeys((*conf.ignoreip, *never_ban)))
        # As (version, integer) keys: hosts in a set (one hash lookup), real networks as ranges
        # in a short list. An address object hashes and compares in Python, 1 us a lookup.
        self._never_hosts = frozenset(
            (n.version, int(n.network_address)) for n in self.never_ban if n.num_addresses == 1
        )
        self._never_ranges = tuple(
            (n.version, int(n.network_address), int(n.broadcast_address))
            for n in self.never_ban
            if n.num_addresses > 1
        )
        self._v6_mask = ((1 << 128) - 1) ^ ((1 << (128 - conf.ipv6_prefix)) - 1)
        self.stats = JailStats()
        # Windows are keyed by (version, integer) of the address, or for IPv6 of the first
        # address of its prefix: cheaper than address objects or an ip_network per failure (a
        # storm is all failures).
        # A window is a plain list of (time, line), oldest first, at most maxretry long: a
        # deque costs some 600 bytes even empty, and a storm tracks a million addresses with
        # one failure each. Each segment is in least recently failing order.
        self._probation: OrderedDict[_Key, _Window] = OrderedDict()
        self._protected: OrderedDict[_Key, _Window] = OrderedDict()
        self._protected_max = conf.max_tracked * 4 // 5
        # The failure times of evicted windows, least recently evicted first, at most
        # max_tracked: a tuple of floats a key, about a third of a window's memory.
        self._ghosts: OrderedDict[_Key, tuple[float, ...]] = OrderedDict()
        self.reads_program = ProgramSelector(conf.programs)
        self._senders: dict[str, bool] = {}
        # A multi-line filter's state (buffers, connections), per sender, program and pid.
        self.lines = MultiLine(filter) if filter.multiline else None

    @property
    def name(self) -> str:
        return self.conf.name

    def reads_sender(self, sender: str | None) -> bool:
        """Whether the jail counts messages delivered by this syslog peer."""
        if not self.conf.senders:
            return True
        if sender is None:
            return False
        known = self._senders.get(sender)
        if known is None:
            try:
                addr = ip_address(sender)
            except ValueError:
                known = False
            else:
                known = any(addr in net for net in self.conf.senders)
            if len(self._senders) >= _SENDER_CACHE_MAX:
                self._senders.clear()
            self._senders[sender] = known
        return known

    def count_unmatched(self, app_name: str | None) -> None:
        """Count a message of ``app_name`` that the jail read and found no failure in."""
        key = self.reads_program.entry(app_name)
        counts = self.stats.unmatched
        counts[key] = counts.get(key, 0) + 1

    def ignores(self, address: IPAddress) -> bool:
        return self._never((address.version, int(address)))

    def _never(self, key: _Key) -> bool:
        """Whether the address (version, integer) is one this jail must never ban."""
        if key in self._never_hosts:
            return True
        version, value = key
        return any(v == version and low <= value <= high for v, low, high in self._never_ranges)

    def _key(self, address: IPAddress) -> _Key:
        return self._masked((address.version, int(address)))

    def _masked(self, key: _Key) -> _Key:
        """The window's key: the address's IPv6 prefix, or the address alone (IPv4, and
        IPv6 addresses that stand for one IPv4 host: see rules/addresses.py)."""
        version, value = key
        return key if version == 4 or host_only(value) else (6, value & self._v6_mask)

    def fail(
        self, address: IPAddress, line: str, now: float, prefix: int | None = None
    ) -> Offence | None:
        """Count one failure of ``address`` at ``now`` (seconds); an Offence when the window
        reaches maxretry. The window is then cleared: the next offence needs maxretry more.

        ``prefix`` (a ``<CIDR>``/``<SUBNET>`` capture) makes the failure the whole network's:
        counted under its first address and banned as the network where that is safe."""
        key: _Key = (address.version, int(address))
        if self._never(key):
            self.stats.ignored += 1
            return None
        wide = captured = None
        if prefix is not None:
            wide = ip_network((address, prefix), strict=False)
            captured, address = address, wide.network_address
            key = (address.version, int(address))
        self.stats.matched += 1
        key = self._masked(key)
        # Out of its segment while it is counted, back in at the most recent end of the one
        # its count puts it in (popping and inserting costs what a move to the end does).
        window = (
            self._probation.pop(key, None) or self._protected.pop(key, None) or self._recall(key)
        )
        horizon = now - self.conf.findtime
        if window and window[0][0] <= horizon:
            window[:] = [failure for failure in window if failure[0] > horizon]
        window.append((now, line))
        if len(window) < self.conf.maxretry:
            self._track(key, window)
            return None
        self.stats.offences += 1
        # The widest ban that covers no address we must never ban: the captured network, the
        # IPv6 prefix of the address, or the host alone.
        host = captured or address
        network = network_of(host, self.conf.ipv6_prefix)
        if wide is not None and not self._covers_protected(wide):
            network = wide
        elif self._covers_protected(network):
            network = network_of(host, 128)
        return Offence(
            self.name, network, host, len(window), tuple(text for _, text in window), now
        )

    def _track(self, key: _Key, window: _Window) -> None:
        """Put ``window`` back as the most recent of its segment, then keep the bounds: the
        protected segment's least recent window back on probation past four fifths of
        ``max_tracked``, probation's least recent evicted past ``max_tracked`` (never the
        window just put: the protected segment's cap leaves probation two or more then)."""
        probation, protected = self._probation, self._protected
        if len(window) == 1:
            probation[key] = window
        else:
            protected[key] = window
            if len(protected) > self._protected_max:
                demoted, old = protected.popitem(last=False)
                probation[demoted] = old
        if len(probation) + len(protected) > self.conf.max_tracked:
            self._evict(*probation.popitem(last=False))

    def _evict(self, key: _Key, window: _Window) -> None:
        """Drop a window, keeping its failure times as a ghost (the oldest ghost goes)."""
        self.stats.evicted += 1
        ghosts = self._ghosts
        ghosts[key] = tuple(t for t, _ in window)
        if len(ghosts) > self.conf.max_tracked:
            ghosts.popitem(last=False)

    def _recall(self, key: _Key) -> _Window:
        """The window of an address with none: its ghost's failures, or empty."""
        times = self._ghosts.pop(key, None)
        return [(t, EVICTED_LINE) for t in times] if times else []

    def _window(self, key: _Key) -> _Window | None:
        return self._probation.get(key) or self._protected.get(key)

    def _covers_protected(self, network: IPNetwork) -> bool:
        """Whether a ban of ``network`` would cover an address never to ban besides the
        offender (a single address was checked already, on the way in)."""
        if network.prefixlen == network.max_prefixlen:
            return False
        return any(network.overlaps(n) for n in self.never_ban)

    def failures(self, address: IPAddress, now: float) -> int:
        """Failures of ``address``'s network still inside the window at ``now``."""
        window = self._window(self._key(address))
        if window is None:
            return 0
        return sum(1 for t, _ in window if t > now - self.conf.findtime)

    def recent_lines(self, address: IPAddress) -> tuple[str, ...]:
        window = self._window(self._key(address))
        return tuple(line for _, line in window) if window else ()

    @property
    def tracked(self) -> int:
        return len(self._probation) + len(self._protected)

    def adopt(self, old: Jail) -> None:
        """Take over the windows, ghosts and counters of the jail this one replaces (a
        reload), probation's windows before the protected segment's, each least recent first."""
        self.stats = old.stats
        for key, times in old._ghosts.items():
            self._ghosts[self._masked(key)] = times[-self.conf.maxretry :]
        while len(self._ghosts) > self.conf.max_tracked:
            self._ghosts.popitem(last=False)
        for segment in (old._probation, old._protected):
            for key, window in segment.items():
                key = self._masked(key)
                if self._window(key) is None:
                    self._ghosts.pop(key, None)
                    self._track(key, window[-self.conf.maxretry :])


class ProgramSelector:
    """Whether a jail reads a program's messages: app-names given exactly or as ``fnmatch``
    globs (``postfix/*``); an empty selector reads every program."""

    def __init__(self, programs: Iterable[str]) -> None:
        programs = tuple(programs)
        self.every = not programs
        self.exact = frozenset(p for p in programs if not any(c in p for c in "*?["))
        self.globs = tuple(p for p in programs if p not in self.exact)
        # Answers per app-name: a mail server logs under a handful of names, and fnmatch costs
        # a microsecond a glob.
        self._known: dict[str, bool] = {}
        self._entries: dict[str, str] = {}  # entry's answers for names that globs read

    def __call__(self, app_name: str | None) -> bool:
        if self.every:
            return True
        if app_name is None:
            return False
        known = self._known.get(app_name)
        if known is None:
            known = app_name in self.exact or any(fnmatchcase(app_name, g) for g in self.globs)
            if len(self._known) >= _PROGRAM_CACHE_MAX:
                self._known.clear()
            self._known[app_name] = known
        return known

    def entry(self, app_name: str | None) -> str:
        """The program, as the selector names it, that reads ``app_name``: the name itself
        when given exactly, else the first glob that matches it; "*" for a selector that reads
        every program (and for a name it does not read)."""
        if self.every or app_name is None:
            return "*"
        if app_name in self.exact:
            return app_name
        entry = self._entries.get(app_name)
        if entry is None:
            entry = next((g for g in self.globs if fnmatchcase(app_name, g)), "*")
            if len(self._entries) >= _PROGRAM_CACHE_MAX:
                self._entries.clear()
            self._entries[app_name] = entry
        return entry
