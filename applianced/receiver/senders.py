"""The senders: who delivered syslog, how much, with what result, and when last; which of the
watched ones (``sender_silence``) went silent.

Pure (no clock, no I/O): the caller passes the time. One ``SenderBook`` lives as long as the
process; ``service.py`` builds it and hands it to every listener's ``Edge`` (once a message, the
hot path: a lookup in ``entries`` and three attribute writes, inlined there; ``admit`` for a
new sender, ``returned`` for a silent one), the engine (``unmatched``), the Appliance
(``led_to_bans``, the snapshot) and ``silence.SilenceWatch`` (``watch``, ``overdue``,
``next_deadline``; ``on_return`` is its hook for a silent sender's next message).

Bounded: the allowed senders that are single addresses (/32, /128) and those that
``sender_silence`` watches are always tracked (pinned, from the start, seen or not); any other
sender is tracked up to ``MAX_OTHERS``, the least recently seen dropped
first (nearly: see ``admit``), its figures added to the ``other`` bucket so that the totals stay
whole.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

from applianced.rules.engine import split_evidence

__all__ = ["MAX_OTHERS", "OTHER", "Sender", "SenderBook"]

MAX_OTHERS = 1024  # senders tracked besides the watched ones; the rest go to OTHER
OTHER = "other"  # the bucket of the senders dropped from the book


@dataclass(slots=True)
class Sender:
    """One sender's figures since it entered the book. ``listener``: the listener of its last
    message (``udp/0.0.0.0:514``); ``silence``: the seconds without a message after which it
    is silent (``sender_silence``), None when not watched; ``silent_since``: when its silence
    began (its last message, or the start of the watch when it never sent), None when not
    silent; ``watched_since``: when the watch began."""

    address: str
    listener: str = ""
    messages: int = 0
    parse_errors: int = 0
    unmatched: int = 0  # reached a jail, no failure in it (no failregex, or an ignoreregex)
    bans: int = 0  # bans whose deciding failures include one of its messages
    last_seen: float | None = None
    silence: float | None = None
    watched_since: float = 0.0
    silent_since: float | None = None
    placed: int = 0  # its messages when it entered the book or had its second chance (admit)
    pinned: bool = False  # never dropped from the book

    @property
    def transport(self) -> str:
        return self.listener.partition("/")[0]

    @property
    def quiet_since(self) -> float:
        """Since when nothing came: its last message, or the start of the watch."""
        return self.last_seen if self.last_seen is not None else self.watched_since

    def add(self, other: Sender) -> None:
        """Count ``other``'s figures in this one (the ``other`` bucket)."""
        self.messages += other.messages
        self.parse_errors += other.parse_errors
        self.unmatched += other.unmatched
        self.bans += other.bans
        if other.last_seen is not None:
            self.last_seen = max(self.last_seen or 0.0, other.last_seen)


class SenderBook:
    """Every tracked sender, the allowed hosts and the watched ones pinned (see the module
    docstring)."""

    def __init__(self, max_others: int = MAX_OTHERS) -> None:
        # Every tracked sender by address, oldest placed first (see admit).
        self.entries: OrderedDict[str, Sender] = OrderedDict()
        self._pinned: dict[str, Sender] = {}  # never dropped: allowed hosts, watched ones
        self._watched: dict[str, Sender] = {}
        self.max_others = max_others
        self.other = Sender(OTHER)
        self.dropped = 0  # senders dropped from the book into ``other``
        # A silent sender's next message: called with it (still marked silent) and the time.
        self.on_return: Callable[[Sender, float], None] | None = None

    def watch(self, silences: Mapping[str, float], now: float, pinned: Iterable[str] = ()) -> None:
        """Pin ``pinned`` (the allowed senders that are single addresses) and the watched
        senders, and watch exactly ``silences`` (address → seconds); a start or a reload. A
        sender newly watched starts its watch ``now``; one no longer pinned is tracked like any
        other."""
        keep = {*pinned, *silences}
        for address in list(self._pinned):
            if address not in keep:
                self._pinned.pop(address).pinned = False
        for address in list(self._watched):
            if address not in silences:
                unwatched = self._watched.pop(address)
                unwatched.silence = unwatched.silent_since = None
        for address in keep:
            sender = self.entries.get(address)
            if sender is None:
                sender = self.entries[address] = Sender(address)
            sender.pinned = True
            self._pinned[address] = sender
        for address, seconds in silences.items():
            sender = self.entries[address]
            if address not in self._watched:
                sender.watched_since = now
                self._watched[address] = sender
            sender.silence = seconds

    # -- the hot path: Edge.deliver reads ``entries`` itself --------------------------------

    def admit(self, address: str) -> Sender:
        """A sender not in ``entries``: added, with the message the caller is counting. Beyond
        ``max_others`` one is dropped into ``other``: the oldest entry that sent nothing since
        it was placed (an entry that did goes to the back, placed again: a second chance, so
        that the least recently seen go first without a move per message)."""
        entries = self.entries
        if len(entries) - len(self._pinned) >= self.max_others:
            while True:
                oldest, sender = entries.popitem(last=False)
                if not sender.pinned and sender.messages <= sender.placed:
                    self.other.add(sender)
                    self.dropped += 1
                    break
                sender.placed = sender.messages
                entries[oldest] = sender
        sender = entries[address] = Sender(address, placed=1)
        return sender

    def returned(self, sender: Sender, now: float) -> None:
        """A silent sender's message (the caller counted it): its return is noted."""
        if self.on_return is not None:
            self.on_return(sender, now)

    def unmatched(self, address: str | None) -> None:
        """A message from ``address`` reached a jail and matched nothing."""
        if address is not None:
            self.entries.get(address, self.other).unmatched += 1

    # -- off the hot path -------------------------------------------------------------------

    def led_to_bans(self, evidence: Iterable[Iterable[str]]) -> None:
        """Bans decided on failures: each ban's kept lines (``[sender] ...``, as the engine
        keeps them); each sender in the book that delivered one of a ban's lines led to it
        (not one dropped from the book since, nor another appliance's, in cluster mode)."""
        for lines in evidence:
            for address in {split_evidence(line)[0] for line in lines}:
                sender = self.entries.get(address)
                if sender is not None:
                    sender.bans += 1

    def overdue(self, now: float) -> list[Sender]:
        """The watched senders not yet marked silent whose silence is up at ``now``."""
        return [
            s
            for s in self._watched.values()
            if s.silent_since is None and s.silence is not None and s.quiet_since + s.silence <= now
        ]

    def next_deadline(self) -> float | None:
        """When the next watched sender that is not silent becomes silent, if none sends."""
        deadlines = [
            s.quiet_since + s.silence
            for s in self._watched.values()
            if s.silent_since is None and s.silence is not None
        ]
        return min(deadlines, default=None)

    def snapshot(self) -> tuple[Sender, ...]:
        """Copies of every tracked sender: the watched ones, the other pinned ones, the rest,
        each by address."""
        order = sorted(
            self.entries.values(), key=lambda s: (s.silence is None, not s.pinned, s.address)
        )
        return tuple(replace(s) for s in order)

    def __len__(self) -> int:
        return len(self.entries)
