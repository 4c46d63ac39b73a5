"""The shipped kerio jail on what Kerio Connect sends to syslog: its Security log lines, whose
text carries Kerio's own ``[dd/Mon/yyyy hh:mm:ss]`` date, under the tags Kerio is seen with.
Through the engine, as the daemon feeds it; the windows run on the time of receipt.
"""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_address

import pytest

from applianced.conf.load import DEFAULT_CONFIG, load_config
from applianced.rules.decision import Offence
from applianced.rules.engine import Engine
from applianced.rules.jail import Jail, jail_filter
from tests.helpers import message

SPAM = "SMTP Spam attack detected from 192.0.2.7, client closed connection before SMTP greeting"
UNKNOWN = (
    "Attempt to deliver to unknown recipient <nobody@example.org>, from <x@example.net>, "
    "IP address 192.0.2.7"
)


def _engine(maxretry: int = 2) -> Engine:
    conf = load_config(DEFAULT_CONFIG).jail("kerio")
    assert conf is not None
    conf = replace(conf, enabled=True, maxretry=maxretry)
    return Engine([Jail(conf, jail_filter(conf))])


@pytest.mark.parametrize("text", [SPAM, UNKNOWN])
@pytest.mark.parametrize("dated", [True, False])
@pytest.mark.parametrize("tag", ["kerio-connect", "mailserver", "kerio"])
def test_kerio_security_lines_ban_with_or_without_their_own_date(
    text: str, dated: bool, tag: str
) -> None:
    engine = _engine()
    body = f"[17/Jun/2011 17:00:45] {text}" if dated else text
    found = []
    for at in (1_800_000_000.0, 1_800_000_030.0):
        found += engine.feed(message(body, app=tag), at)
    (offence,) = found
    assert isinstance(offence, Offence)
    assert offence.address == ip_address("192.0.2.7")


def test_the_date_in_the_text_does_not_drive_the_window() -> None:
    """Two failures dated years apart in their text, received 30 s apart, are in one window."""
    engine = _engine()
    first = engine.feed(message(f"[17/Jun/2011 17:00:45] {SPAM}", app="kerio-connect"), 1e9)
    second = engine.feed(message(f"[01/Jan/2026 00:00:00] {SPAM}", app="kerio-connect"), 1e9 + 30)
    assert first == []
    assert len(second) == 1


def test_a_kerio_line_of_another_kind_is_no_failure() -> None:
    engine = _engine(maxretry=1)
    line = "[17/Jun/2011 17:00:45] IMAP: User alice@example.org logged in from 192.0.2.7"
    assert engine.feed(message(line, app="kerio-connect"), 1e9) == []
