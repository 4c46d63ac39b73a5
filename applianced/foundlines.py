"""The optional ``found`` log lines, fail2ban's ``Found 1.2.3.4``: one per failure a jail
with ``log_found = true`` counted, with the jail, the address, the syslog sender that delivered
the message and the line, within a per-second budget (``logs.LogBudget``; a storm's rest
summarised in one line per second).

The Appliance keeps one and hands it the engine's ``Found`` items (``rules/engine.py`` makes
them, before the offence they complete, so a found line comes before its ban line).
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from applianced.logs import LogBudget, log_text
from applianced.rules.decision import Found

__all__ = ["FoundLines"]

log = Logger(namespace="applianced.found")

# Found lines logged one by one per second; a storm's rest is summarised.
FOUND_PER_SECOND = 50


class FoundLines:
    """Logs failures; ``close`` (the daemon stops) summarises what is still counted."""

    def __init__(self, clock: IReactorTime) -> None:
        self._budget = LogBudget(clock, FOUND_PER_SECOND, _log_unlogged)

    def found(self, found: Found, now: float) -> None:
        if self._budget.allow(1, now):
            log.info(
                'found {jail} {address}; sender {sender}: "{line}"',
                jail=found.jail,
                address=str(found.address),
                sender=found.sender,
                line=log_text(found.line),
            )

    def close(self) -> None:
        self._budget.close()


def _log_unlogged(more: int) -> None:
    log.info(
        "... and {more} more failures found in the last second, not logged one by one",
        more=more,
    )
