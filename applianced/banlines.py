"""The log's lines about bans: a ban, a cluster ban, an unban, and a storm's lines within a
per-second budget (``logs.LogBudget``; the rest summarised in one line per second).

The Appliance keeps one and tells it what it enforced, adopted from the cluster or ended; an
operator's ban or unban is always logged, a storm's bans and the unbans of an expiry, a flush
or the cluster share one budget. A ban enforced here names the syslog sender and the line that
decided it (the last failure's, escaped and bounded by ``logs.log_text``). The lines keep the
``applianced.appliance`` namespace they have always had (the journal shows it).
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from applianced.logs import LogBudget, log_text
from applianced.rules.decision import Ban
from applianced.rules.engine import split_evidence
from applianced.units import format_duration, plural

__all__ = ["BanLines"]

log = Logger(namespace="applianced.appliance")

# Ban lines logged one by one per second; a storm's rest is summarised.
BANS_PER_SECOND = 20


class BanLines:
    """Logs bans and unbans; ``close`` (the daemon stops) summarises what is still counted."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._budget = LogBudget(clock, BANS_PER_SECOND, self._log_unlogged)
        self._unlogged_unbans = 0  # of the budget's unlogged lines, the unbans

    def banned(
        self, bans: Sequence[Ban], lines: Sequence[str], now: float, *, budgeted: bool
    ) -> None:
        """New bans enforced here, each with the line that decided it (as the rules keep it:
        ``[sender] line``); ``budgeted``: a storm's, counted against the budget."""
        shown = self._budget.allow(len(bans), now) if budgeted else len(bans)
        for ban, line in zip(bans[:shown], lines, strict=False):
            sender, text = split_evidence(line)
            log.info(
                "ban {jail} {network} for {duration} ({kind}, ban #{count}); "
                'sender {sender}: "{line}"',
                jail=ban.jail,
                network=str(ban.network),
                kind=str(ban.kind),
                count=ban.count,
                duration=format_duration(ban.remaining(now)),
                sender=sender or "unknown",
                line=log_text(text),
            )

    def adopted(self, fresh: Sequence[Ban], lifted: Sequence[Ban], now: float) -> None:
        """The cluster's bans started here (within the budget) and ours it lifted."""
        for ban in fresh[: self._budget.allow(len(fresh), now)]:
            log.info(
                "ban {jail} {network} from the cluster ({kind}, ban #{count})",
                jail=ban.jail,
                network=str(ban.network),
                kind=str(ban.kind),
                count=ban.count,
            )
        for ban in lifted[: self._unbans_shown(len(lifted), now)]:
            log.info(
                "unban {jail} {network} (from the cluster)",
                jail=ban.jail,
                network=str(ban.network),
            )

    def ended(self, bans: Sequence[Ban], reason: str) -> None:
        """Bans ended here: ``reason`` is expired, unban (an operator's: always logged) or
        flush."""
        now = self._clock.seconds()
        shown = len(bans) if reason == "unban" else self._unbans_shown(len(bans), now)
        for ban in bans[:shown]:
            log.info(
                "unban {jail} {network} ({reason})",
                jail=ban.jail,
                network=str(ban.network),
                reason=reason,
            )

    def close(self) -> None:
        self._budget.close()

    def _unbans_shown(self, lines: int, now: float) -> int:
        shown = self._budget.allow(lines, now)
        self._unlogged_unbans += lines - shown
        return shown

    def _log_unlogged(self, more: int) -> None:
        unbans, self._unlogged_unbans = self._unlogged_unbans, 0
        if more > unbans:
            log.info(
                "... and {bans} in the last second, not logged one by one"
                " (`appliancectl banned` lists them)",
                more=more - unbans,
                bans=plural(more - unbans, "more ban", "more bans"),
            )
        if unbans:
            log.info(
                "... and {unbans} in the last second, not logged one by one",
                more=unbans,
                unbans=plural(unbans, "more unban", "more unbans"),
            )
