"""The frames the standard forwarders send, as captured from the real daemons (rsyslogd
8.2302.0's three forwarding templates, syslog-ng 3.38.1's network() and syslog() destinations,
each fed a dovecot and a postfix line with ``logger``): each parses to the fields a mail
server's own log holds, and the shipped filter for it reads its program and matches it.
tests/e2e/test_forwarders.py runs the daemons themselves."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from applianced.conf.filterfiles.native import shipped_filter
from applianced.receiver.parse import parse
from applianced.rules.jail import ProgramSelector

FRAMES = Path(__file__).resolve().parent.parent / "data" / "forwarders.jsonl"
REF = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def _rows() -> list[Any]:
    rows = [json.loads(line) for line in FRAMES.read_text().splitlines()]
    return [pytest.param(row, id=f"{row['desc']}: {row['filter']}") for row in rows]


@pytest.mark.parametrize("row", _rows())
def test_a_forwarded_frame_parses_as_the_mail_server_wrote_it(row: dict[str, Any]) -> None:
    message = parse(row["wire"].encode(), REF)
    got = {key: getattr(message, key) for key in row["expect"]}
    assert got == row["expect"]


@pytest.mark.parametrize("row", _rows())
def test_the_shipped_filter_reads_and_matches_a_forwarded_frame(row: dict[str, Any]) -> None:
    message = parse(row["wire"].encode(), REF)
    filter_def = shipped_filter(row["filter"])
    assert ProgramSelector(filter_def.programs)(message.app_name)
    match = filter_def.compile().match(message.msg)
    assert match is not None
    assert str(match.address) == row["address"]
