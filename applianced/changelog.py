"""A bounded, sequence-numbered log of changes: what the decision stream's delta polls read.

``bans.BanBook`` appends one entry per ban that starts or ends; ``decisions/stream.py`` keeps a
sequence number per bouncer and asks for what came after it, which costs the number of changes,
not the number of entries kept. The oldest entries fall off past ``capacity``; a reader whose
sequence fell off (or that comes from before a ``clear``) gets None and must resynchronise.
Generic and pure: it imports nothing of applianced.
"""

from __future__ import annotations

from collections import deque
from itertools import islice
from typing import Generic, TypeVar

__all__ = ["ChangeLog"]

T = TypeVar("T")


class ChangeLog(Generic[T]):
    """Entries numbered from 0 in order of arrival; ``head`` is the number the next one gets."""

    def __init__(self, capacity: int) -> None:
        self._entries: deque[T] = deque(maxlen=capacity)
        self.head = 0
        self._floor = 0  # the oldest number a reader may still ask from (raised by clear)

    def append(self, entry: T) -> None:
        self._entries.append(entry)
        self.head += 1

    def clear(self) -> None:
        """Forget every entry: every reader resynchronises (a number is skipped, so that even
        a reader that was up to date is from before the clear)."""
        self._entries.clear()
        self.head += 1
        self._floor = self.head

    def kept(self) -> list[T]:
        """Every entry still kept (since the last ``clear``), oldest first."""
        return list(self._entries)

    def since(self, number: int) -> list[T] | None:
        """The entries numbered ``number`` and after, oldest first; None when some of them
        are gone (fell off, cleared) or ``number`` is not one this log gave."""
        oldest = max(self._floor, self.head - len(self._entries))
        if not oldest <= number <= self.head:
            return None
        newest = list(islice(reversed(self._entries), self.head - number))
        newest.reverse()
        return newest
