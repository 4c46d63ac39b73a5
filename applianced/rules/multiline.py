"""Multi-line matching for fail2ban filters: ``maxlines`` (a failregex searched over the last
lines of one source joined by newlines) and ``<F-MLFID>`` (lines of one connection sharing what
they captured: the address of one line, the failure of a later one), bounded in memory and time.

Owns the per-source state. A ``Jail`` whose filter needs it (``Filter.multiline``) keeps one
``MultiLine`` (``Jail.lines``), which ``Engine.feed`` feeds keyed by (sender, program, pid);
``appliancectl test-filter`` keeps one per file. Single-line filters never reach this module.
Pure: time comes in as ``now``.

Semantics (fail2ban 1.0.2's, as its documentation and behaviour show them):

- With ``maxlines`` N > 1 a line is searched together with up to N - 1 lines of the same
  source before it; a failure takes the lines it matched out of that source's buffer, so they
  count once, and leaves the lines before it and those its ``<SKIPLINES>`` skipped (another
  connection's, which a later failure may need).
- ``<F-MLFID>`` names a connection. A hit remembers what it captured under that name; a later
  hit without an address takes the remembered one, and a user from an earlier line of it.
  ``<F-NOFAIL>`` (and ``<F-MLFGAINED>``, a login that succeeded) is remembered and counts
  nothing, unless the connection tried a second user name, or failed before its address was
  known (the failure then counts on the line that names the address).
  ``<F-MLFFORGET>`` (a disconnect) forgets the connection after this line.
- A source or connection unseen for ``max_age`` seconds is forgotten, and at most
  ``max_sources`` of each are kept (the least recently seen go first); a buffer holds at most
  ``maxlines`` lines and ``Filter.max_text`` characters (the newest; a longer line is held
  cut to that), a connection two user names.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

from applianced.rules.filters import Filter, Match, Outcome

__all__ = ["MAX_AGE", "MAX_SOURCES", "MultiLine"]

MAX_SOURCES = 4096  # buffers and connections kept at most, each
MAX_AGE = 600.0  # seconds a buffer or a connection is kept without a new line

Result = tuple[Outcome, Match | None, int | None]
MATCHED = Outcome.MATCHED
_V = TypeVar("_V")


@dataclass(slots=True)
class _Connection:
    """What the lines of one ``<F-MLFID>`` captured so far."""

    seen: float
    match: Match | None = None  # the last hit with an address
    users: set[str] = field(default_factory=set)
    pending: bool = False  # a failure seen before the connection's address


class MultiLine:
    """The multi-line state of one filter over many sources (see the module docstring)."""

    def __init__(
        self, filt: Filter, *, max_sources: int = MAX_SOURCES, max_age: float = MAX_AGE
    ) -> None:
        self.filter = filt
        self.max_sources = max_sources
        self.max_age = max_age
        self._buffers: OrderedDict[Hashable, tuple[float, list[str]]] = OrderedDict()
        self._connections: OrderedDict[Hashable, _Connection] = OrderedDict()

    @property
    def size(self) -> tuple[int, int]:
        """Buffers and connections held (for tests and the bounds)."""
        return len(self._buffers), len(self._connections)

    def feed(self, source: Hashable, text: str, now: float) -> Result:
        """The outcome of ``text``, the latest line of ``source``, given the lines before."""
        self._expire(now)
        if self.filter.maxlines > 1:
            _, lines = self._buffers.pop(source, (now, []))
            # A regex reads no more than max_text characters; a longer line is held cut to
            # that, or 4096 sources of 1 MiB messages would hold 4 GiB.
            lines.append(text[: self.filter.max_text])
            del lines[: -self.filter.maxlines]
            # A regex sees the first max_text characters of a text: keep the newest lines
            # within that, so the line just come is never cut off (and a buffer's size bound).
            while len(lines) > 1 and sum(map(len, lines)) + len(lines) > self.filter.max_text:
                del lines[0]
            result = self.filter.examine("\n".join(lines), prefilter=True)
            if result[0] is Outcome.MATCHED and result[1] is not None:
                lines = self._unmatched(lines, result[1])
            if lines:
                self._buffers[source] = (now, lines)
                _bound(self._buffers, self.max_sources)
        else:
            result = self.filter.examine(text, prefilter=True)
        outcome, found, index = result
        if found is None or "mlfid" not in found.fields:
            if outcome is Outcome.MATCHED and found is not None and not found.host:
                return Outcome.MISSED, None, None
            return result
        return self._connection((source, found.fields["mlfid"]), outcome, found, index, now)

    def _connection(
        self, key: Hashable, outcome: Outcome, found: Match, index: int | None, now: float
    ) -> Result:
        """A hit of a connection: merged with what its earlier lines captured."""
        forget = "mlfforget" in found.fields
        conn = self._connections.pop(key, None) or _Connection(now)
        conn.seen = now
        if found.user is not None and len(conn.users) < 2:  # one user or several is all it asks
            conn.users.add(found.user)
        earlier = conn.match
        if not found.host and earlier is not None:
            found = found._replace(
                host=earlier.host, address=earlier.address, prefix=earlier.prefix
            )
        if found.user is None and earlier is not None and earlier.user is not None:
            found = found._replace(user=earlier.user)
        if earlier is not None and earlier.fields:
            fields = {**earlier.fields, **found.fields}
            fields.pop("mlfforget", None)
            found = found._replace(fields=MappingProxyType(fields))
        if found.host:
            conn.match = found
        if not forget:
            self._connections[key] = conn
            _bound(self._connections, self.max_sources)
        if outcome is Outcome.IGNORED and (len(conn.users) > 1 or (conn.pending and found.host)):
            # A second user name tried, or the address of a failure seen before it: a failure.
            outcome = Outcome.MATCHED
        if not found.host:
            conn.pending = conn.pending or outcome is Outcome.MATCHED
            return (Outcome.MISSED if outcome is Outcome.MATCHED else outcome), None, None
        if outcome is Outcome.MATCHED:
            conn.pending = False
        return outcome, found, index

    def _unmatched(self, lines: list[str], found: Match) -> list[str]:
        """``lines`` without those a failure matched: the lines before the one it starts on
        (the last from which the lines still match), and the lines it skipped."""
        starts = range(len(lines) - 1, 0, -1)
        examine = self.filter.examine
        start = next(
            (k for k in starts if examine("\n".join(lines[k:]), prefilter=True)[0] is MATCHED), 0
        )
        # Compared stripped: a \s* before <SKIPLINES> may take a skipped line's leading space.
        skipped = {line.strip() for line in found.fields.get("skiplines", "").split("\n")}
        return lines[:start] + [line for line in lines[start:] if line.strip() in skipped]

    def _expire(self, now: float) -> None:
        horizon = now - self.max_age
        buffers, connections = self._buffers, self._connections
        while buffers and next(iter(buffers.values()))[0] <= horizon:
            buffers.popitem(last=False)
        while connections and next(iter(connections.values())).seen <= horizon:
            connections.popitem(last=False)


def _bound(kept: OrderedDict[Hashable, _V], most: int) -> None:
    while len(kept) > most:
        kept.popitem(last=False)
