"""Ban mails (fail2ban's ``sendmail-whois-lines``) that stay readable during a storm.

The Appliance calls ``Notifier.banned(ban, lines)`` for every NEW ban (never for bans restored
at start); that call only appends to a bounded queue. Later, on the reactor:

- storm control: at most ``max_per_minute`` bans get a mail of their own in any 60 s; the rest
  are gathered into one digest per ``digest_interval`` that lists every one of them;
- a single mail waits for whois (``whois.py``, with its timeout and cache) and reverse DNS
  when enabled; a failed lookup never holds the mail back ("whois unavailable: reason");
- mails go out one at a time through a ``Mailer`` (``mailer.py``: SMTP or ``sendmail -t``); a
  failed delivery is retried with doubling backoff, a refused one (5xx) is dropped;
- the backlog (bans not yet delivered, in any form) is bounded by ``backlog``; beyond it bans
  are dropped, counted, and the next digest says how many.

Mails are built by ``mails.py``, from text sanitised first. ``service.py`` wires it; ``status``
and ``appliancectl notify test`` (and its ``--preview``, built here, sent nowhere) read it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from applianced.conf.schema import Config, NotifyAction, NotifyConf
from applianced.enforcement.base import Silence
from applianced.enforcement.mailer import DeliveryError, Mailer
from applianced.enforcement.mails import (
    SAMPLE_NETWORK,
    Pending,
    build_ban_mail,
    build_digest,
    build_preview,
    build_return_mail,
    build_silence_mail,
    build_test_mail,
)
from applianced.enforcement.whois import WhoisClient
from applianced.errors import ApplianceError
from applianced.rules.decision import Ban, IPAddress
from applianced.units import plural

__all__ = ["Notifier"]

log = Logger()

_WINDOW = 60.0  # seconds: max_per_minute counts single mails in this sliding window

Reverse = Callable[[IPAddress], "Deferred[str]"]


@dataclass(slots=True)
class _Outgoing:
    message: EmailMessage
    bans: int  # how many bans this mail reports (1, or a digest's count)
    what: str  # for logs: "sshd 203.0.113.7" or "digest of 490 bans"
    digest: bool = False
    tries: int = 0


@dataclass(slots=True)
class NotifyStats:
    sent: int = 0
    digests: int = 0
    failed_attempts: int = 0
    rejected: int = 0
    dropped: int = 0
    last_error: str | None = None
    last_sent_at: float | None = None
    dropped_unreported: int = field(default=0, repr=False)


class Notifier:
    """Queues, rate-limits, digests and delivers ban mails; see the module docstring.

    ``mailer_for``/``whois_for`` build the delivery path and the whois client from a
    ``NotifyConf`` (again on reload when it changed); ``reverse`` resolves PTR names.
    """

    def __init__(
        self,
        config: Config,
        clock: IReactorTime,
        mailer_for: Callable[[NotifyConf], Mailer],
        whois_for: Callable[[NotifyConf], WhoisClient | None] = lambda conf: None,
        reverse: Reverse | None = None,
    ) -> None:
        self.clock = clock
        self.mailer_for = mailer_for
        self.whois_for = whois_for
        self.reverse = reverse
        self.stats = NotifyStats()
        self._inbox: deque[Pending] = deque()
        self._digest: list[Pending] = []
        self._outbox: deque[_Outgoing] = deque()
        self._singles: deque[float] = deque()  # when recent single mails were started
        self._waiting = 0  # bans not yet delivered, wherever they are
        self._drain_call: IDelayedCall | None = None
        self._digest_call: IDelayedCall | None = None
        self._retry_call: IDelayedCall | None = None
        self._pump_call: IDelayedCall | None = None
        self._sending = False
        self._stopped = False
        self.conf = NotifyConf()
        self.mailer: Mailer | None = None
        self.whois: WhoisClient | None = None
        self._actions: dict[str, tuple[NotifyAction, ...]] = {}
        self._bantimes: dict[str, float] = {}  # for the preview
        self.reconfigure(config)

    def reconfigure(self, config: Config) -> None:
        self._actions = {j.name: j.notify for j in config.enabled_jails if j.notify}
        self._bantimes = {j.name: j.bantime for j in config.enabled_jails if j.notify}
        if self.mailer is None or config.notify != self.conf:
            self.conf = config.notify
            self.mailer = self.mailer_for(self.conf)
            self.whois = self.whois_for(self.conf)
            self._retry_delay = self.conf.retry_first

    # -- the hot path: O(1), no I/O ---------------------------------------------------------

    def banned(self, ban: Ban, lines: tuple[str, ...]) -> None:
        """A new ban: queue its mail (if its jail notifies) and return at once."""
        actions = self._actions.get(ban.jail)
        if not actions or self._stopped:
            return
        if self._waiting >= self.conf.backlog:
            self.stats.dropped += 1
            self.stats.dropped_unreported += 1
            return
        self._waiting += 1
        self._inbox.append(Pending(ban, lines, actions))
        if self._drain_call is None:
            self._drain_call = self.clock.callLater(0, self._drain)

    def sender_silent(self, silence: Silence, now: float) -> None:
        """A watched syslog sender went silent: one mail to [notify] to (none when unset)."""
        self._tell(build_silence_mail(self.conf, silence, now), f"silence of {silence.sender}")

    def sender_returned(self, silence: Silence, now: float) -> None:
        """A silent sender sent again: one mail, as for its silence."""
        self._tell(build_return_mail(self.conf, silence, now), f"return of {silence.sender}")

    def _tell(self, message: EmailMessage, what: str) -> None:
        if self.conf.to:
            self._queue(_Outgoing(message, 0, what))

    # -- off the hot path ---------------------------------------------------------------------

    def _drain(self) -> None:
        self._drain_call = None
        now = self.clock.seconds()
        while self._singles and self._singles[0] <= now - _WINDOW:
            self._singles.popleft()
        while self._inbox:
            pending = self._inbox.popleft()
            if len(self._singles) < self.conf.max_per_minute:
                self._singles.append(now)
                self._single(pending)
            else:
                self._digest.append(pending)
                if self._digest_call is None:
                    self._digest_call = self.clock.callLater(
                        self.conf.digest_interval, self._send_digest
                    )

    def _single(self, p: Pending) -> None:
        net = p.ban.network
        whois: Deferred[Any] = succeed(None)
        if "mail-whois" in p.actions or "mail-whois-lines" in p.actions:
            if self.whois is None:
                whois = succeed("whois unavailable: disabled (whois_server is empty)")
            else:
                whois = self.whois.lookup(net.network_address).addErrback(
                    lambda f: f"whois unavailable: {f.getErrorMessage()}"
                )
        rdns: Deferred[Any] = succeed(None)
        if self.conf.reverse_dns and self.reverse is not None and net.num_addresses == 1:
            rdns = self.reverse(net.network_address)
            rdns.addTimeout(self.conf.whois_timeout, self.clock)
            rdns.addErrback(lambda f: None)

        def build(results: list[Any]) -> None:
            answer, name = results
            message = build_ban_mail(
                self.conf, p.ban, p.lines, p.actions, answer, name, self.clock.seconds()
            )
            self._queue(_Outgoing(message, 1, f"{p.ban.jail} {p.ban.network}"))

        def broken(reason: Failure) -> None:
            self._waiting -= 1
            log.failure("cannot build the ban mail for {what}", reason, what=str(net))

        gatherResults([whois, rdns]).addCallback(build).addErrback(broken)

    def _send_digest(self) -> None:
        self._digest_call = None
        entries, self._digest = self._digest, []
        dropped, self.stats.dropped_unreported = self.stats.dropped_unreported, 0
        if entries:
            message = build_digest(self.conf, entries, dropped, self.clock.seconds())
            self._queue(
                _Outgoing(message, len(entries), f"digest of {plural(len(entries), 'ban')}", True)
            )

    def _queue(self, out: _Outgoing) -> None:
        if self._stopped:
            return
        self._outbox.append(out)
        self._pump()

    def _pump(self) -> None:
        self._pump_call = None
        if self._sending or not self._outbox or self._stopped or self.mailer is None:
            return
        if self._retry_call is not None and self._retry_call.active():
            return
        self._sending = True
        out = self._outbox[0]
        out.tries += 1
        d = self.mailer.send(out.message, self.conf.sender, self.conf.to)
        d.addCallbacks(self._sent, self._failed, callbackArgs=(out,), errbackArgs=(out,))

    def _next(self) -> None:
        # Later, not now: a mailer that answers at once must not recurse through the outbox.
        self._sending = False
        if self._pump_call is None and not self._stopped:
            self._pump_call = self.clock.callLater(0, self._pump)

    def _sent(self, outcome: str, out: _Outgoing) -> None:
        self._outbox.popleft()
        self._waiting -= out.bans
        self.stats.sent += 1
        self.stats.digests += int(out.digest)
        self.stats.last_sent_at = self.clock.seconds()
        self._retry_delay = self.conf.retry_first
        log.info("mailed {what} via {via}", what=out.what, via=self._via())
        self._next()

    def _failed(self, reason: Failure, out: _Outgoing) -> None:
        error = reason.value
        text = str(error) or type(error).__name__
        self.stats.last_error = text
        if isinstance(error, DeliveryError) and error.permanent:
            self._outbox.popleft()
            self._waiting -= out.bans
            self.stats.rejected += 1
            log.error(
                "the mail for {what} was refused, dropped: {error}", what=out.what, error=text
            )
        else:
            self.stats.failed_attempts += 1
            log.warn(
                "cannot mail {what} (try {tries}); retrying in {delay:g}s: {error}",
                what=out.what,
                tries=out.tries,
                delay=self._retry_delay,
                error=text,
            )
            self._retry_call = self.clock.callLater(self._retry_delay, self._next)
            self._retry_delay = min(self._retry_delay * 2, self.conf.retry_max)
            self._sending = False
            return
        self._next()

    def _via(self) -> str:
        return self.mailer.description if self.mailer is not None else "nothing"

    # -- operator ---------------------------------------------------------------------------

    def test(self) -> Deferred[dict[str, Any]]:
        """Send a test mail now (no queue, no rate limit); the outcome or a DeliveryError
        whose message includes the dialogue."""
        assert self.mailer is not None
        if not self.conf.to:
            raise DeliveryError("[notify] has no 'to': nowhere to send a test mail")
        via = self._via()
        message = build_test_mail(self.conf, via, self.clock.seconds())

        def ok(outcome: str) -> dict[str, Any]:
            return {"via": via, "to": list(self.conf.to), "dialogue": outcome}

        def failed(reason: Failure) -> dict[str, Any]:
            error = reason.value
            transcript = getattr(error, "transcript", "")
            raise DeliveryError(
                f"test mail NOT delivered via {via}: {error}"
                + (f"\n{transcript}" if transcript else "")
            )

        return self.mailer.send(message, self.conf.sender, self.conf.to).addCallbacks(ok, failed)

    def preview(self, jail: str | None = None) -> dict[str, Any]:
        """The mail a ban in ``jail`` (by default the first jail that mails) would send, built
        from sample data and sent nowhere: its headers and its body."""
        if not self._actions:
            raise ApplianceError(
                "no enabled jail sets notify, so a ban sends no mail; set e.g. "
                'notify = ["mail-whois-lines"] in a jail (and [notify] to), then reload'
            )
        name = jail or min(self._actions)
        actions = self._actions.get(name)
        if actions is None:
            raise ApplianceError(
                f"jail {name!r} sends no ban mail (no notify, or not enabled); jails that do: "
                + ", ".join(sorted(self._actions))
            )
        now = self.clock.seconds()
        message = build_preview(self.conf, name, actions, self._bantimes[name], now)
        return {
            "jail": name,
            "address": str(SAMPLE_NETWORK.network_address),
            "via": self._via(),
            "headers": [[key, str(value)] for key, value in message.items()],
            "body": message.get_content(),
        }

    def status(self) -> dict[str, Any]:
        s = self.stats
        whois = self.whois
        return {
            "via": self._via(),
            "jails": sorted(self._actions),
            "sent": s.sent,
            "digests": s.digests,
            "backlog": self._waiting,
            "queued_mails": len(self._outbox),
            "in_next_digest": len(self._digest),
            "failed_attempts": s.failed_attempts,
            "rejected": s.rejected,
            "dropped": s.dropped,
            "last_error": s.last_error,
            "last_sent_at": s.last_sent_at,
            "retrying": self._retry_call is not None and self._retry_call.active(),
            "whois": None
            if whois is None
            else {
                "lookups": whois.lookups,
                "cache_hits": whois.cache_hits,
                "failed": whois.failures,
            },
        }

    def stop(self) -> None:
        """Stop sending; what is still queued is logged, not mailed (bans stay in the store)."""
        self._stopped = True
        for call in (self._drain_call, self._digest_call, self._retry_call, self._pump_call):
            if call is not None and call.active():
                call.cancel()
        if self._waiting:
            log.warn("{count} ban notifications were not sent before stop", count=self._waiting)
