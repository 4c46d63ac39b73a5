"""The engine's evidence: each counted failure is kept as the line the sender wrote."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

from applianced.rules.decision import Offence
from applianced.rules.engine import Engine
from applianced.rules.filters import Filter
from applianced.rules.jail import Jail
from tests.helpers import SSHD_REGEX, jail_conf, message, ssh_failure


def test_evidence_keeps_each_message_s_own_utc_offset() -> None:
    """The same instant written in two offsets (two senders' time zones, or both sides of a
    DST change) compare equal as datetimes; the evidence still shows each as written."""
    engine = Engine([Jail(jail_conf(maxretry=2), Filter(SSHD_REGEX))])
    utc = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    paris = utc.astimezone(timezone(timedelta(hours=1)))
    assert utc == paris
    found = []
    for stamp in (utc, paris):
        msg = replace(message(ssh_failure("192.0.2.7")), timestamp=stamp)
        found += engine.feed(msg, 1_800_000_000.0)
    (offence,) = found
    assert isinstance(offence, Offence)
    assert [line.split(" ")[1] for line in offence.lines] == [
        "2026-11-22T09:00:00+00:00",
        "2026-11-22T10:00:00+01:00",
    ]
