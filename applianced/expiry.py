"""The expiry timer: one reactor call at the soonest ban's end, moved earlier when a sooner one
arrives.

The Appliance owns one. It calls ``schedule`` after every change to its book of active bans
(the timer asks ``next_expiry``, ``bans.BanBook.next_expiry``, when the soonest end is) and
``stop`` at shutdown; when the call fires, the timer runs ``expire`` (the Appliance ends the due
bans) and schedules the next. Time is the injected clock's, never a global one.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["ExpiryTimer"]


class ExpiryTimer:
    """At most one pending call, at the soonest expiry known when it was last scheduled."""

    def __init__(
        self,
        clock: IReactorTime,
        next_expiry: Callable[[], float | None],
        expire: Callable[[], None],
    ) -> None:
        self._clock = clock
        self._next_expiry = next_expiry
        self._expire = expire
        self._call: IDelayedCall | None = None

    def schedule(self) -> None:
        """Call ``expire`` at the soonest expiry, unless a call at that time or sooner waits."""
        at = self._next_expiry()
        if at is None:
            return
        call = self._call
        if call is not None and call.active():
            if call.getTime() <= at:
                return
            call.cancel()
        self._call = self._clock.callLater(max(0.0, at - self._clock.seconds()), self._fire)

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _fire(self) -> None:
        self._call = None
        self._expire()
        self.schedule()
