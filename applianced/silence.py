"""The silence alarm: a watched sender (``sender_silence``) that has sent nothing for its
silence is logged (one WARNING), marked silent in the book (``status``, the metrics) and
mailed once through the notifier; its next message is noted the same way (an INFO line, the
mark cleared, a mail).

One reactor call at the soonest deadline (``SenderBook.next_deadline``), rescheduled after each
alarm and return; nothing on the hot path but the book's ``on_return`` check. A watched
sender that never sent is alarmed ``sender_silence`` after the watch began (the start, or
the reload that added it): a mail server that never starts forwarding is the same blind spot
as one that stops. The Appliance builds it, starts it and reconfigures it on reload.
"""

from __future__ import annotations

from datetime import UTC, datetime

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from applianced.enforcement.base import BanNotifier, Silence
from applianced.receiver.senders import Sender, SenderBook
from applianced.units import format_duration

__all__ = ["SilenceWatch"]

log = Logger(namespace="applianced.senders")


def _at(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _silence(sender: Sender) -> Silence:
    since = sender.silent_since
    assert since is not None and sender.silence is not None
    return Silence(sender.address, since, sender.last_seen, sender.listener, sender.silence)


class SilenceWatch:
    """Alarms and returns of the book's watched senders; see the module docstring."""

    def __init__(
        self, clock: IReactorTime, book: SenderBook, notifier: BanNotifier | None = None
    ) -> None:
        self.clock = clock
        self.book = book
        self.notifier = notifier
        self._call: IDelayedCall | None = None
        self._at: float | None = None
        book.on_return = self._returned

    def watch(self, silences: dict[str, float], pinned: tuple[str, ...] = ()) -> None:
        """Watch these senders (address → seconds) from now on, and keep ``pinned`` in the
        book; a start or a reload."""
        self.book.watch(silences, self.clock.seconds(), pinned)
        self.schedule()

    def schedule(self) -> None:
        """One call at the soonest deadline (none when no watched sender can go silent)."""
        deadline = self.book.next_deadline()
        if deadline == self._at and self._call is not None and self._call.active():
            return
        self.stop()
        if deadline is not None:
            self._at = deadline
            self._call = self.clock.callLater(
                max(0.0, deadline - self.clock.seconds()), self._check
            )

    def _check(self) -> None:
        self._call = self._at = None
        now = self.clock.seconds()
        for sender in self.book.overdue(now):
            sender.silent_since = sender.quiet_since
            self._alarm(sender, now)
        self.schedule()

    def _alarm(self, sender: Sender, now: float) -> None:
        assert sender.silence is not None
        if sender.last_seen is None:
            heard = f"nothing since the watch began at {_at(sender.watched_since)}"
        else:
            heard = f"its last message at {_at(sender.last_seen)} over {sender.listener}"
        log.warn(
            "syslog sender {sender} is silent: no message for {silence} ({heard}); "
            "bans from its logs stop until it sends again: check its syslog forwarding "
            "(service running, target and port, firewall) and the network to this appliance",
            sender=sender.address,
            silence=format_duration(now - sender.quiet_since),
            heard=heard,
        )
        if self.notifier is not None:
            self.notifier.sender_silent(_silence(sender), now)

    def _returned(self, sender: Sender, now: float) -> None:
        since = sender.silent_since
        assert since is not None
        log.info(
            "syslog sender {sender} is back after {silence} of silence (since {since}), "
            "over {listener}",
            sender=sender.address,
            silence=format_duration(now - since),
            since=_at(since),
            listener=sender.listener,
        )
        if self.notifier is not None:
            self.notifier.sender_returned(_silence(sender), now)
        sender.silent_since = None
        self.schedule()  # its deadline may come before the one the timer waits for

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = self._at = None
