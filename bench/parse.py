"""Parse benchmark: the parser's cost per message (``receiver.parse.parse_routed`` behind a
gate, a ``GateCache`` as the engine's, that reads every program and asks for a literal the
message holds: the cost of a message that goes on to the jails), in microseconds, for the shapes the
standard forwarders send: the common RFC 3164 line, rsyslog's RSYSLOG_ForwardFormat (an RFC
3339 timestamp in an RFC 3164 header), and RFC 5424 as rsyslog's RSYSLOG_SyslogProtocol23Format
and syslog-ng's syslog() send it (tests/data/forwarders.jsonl holds the captured frames).

Run by ``bench/__main__.py`` (``./dev bench --only parse``) as ``python -m bench.parse``; prints
one JSON object mapping a shape to the median over ``REPEATS`` timings of ``NUMBER`` parses.
"""

from __future__ import annotations

import json
import statistics
import timeit
from datetime import UTC, datetime

from applianced.receiver.parse import parse_routed
from applianced.rules.engine import GateCache

REPEATS = 7
NUMBER = 50_000
_D = (
    "imap-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<bob>, method=PLAIN, "
    "rip=203.0.113.7, lip=192.0.2.1, session=<abc>"
)
_ISO = "2026-12-07T08:45:25+00:00"
SHAPES = {
    "rfc3164 common": f"<13>Dec  7 08:45:25 vm dovecot: {_D}",
    "rfc3164 ISO timestamp (RSYSLOG_ForwardFormat)": f"<13>{_ISO} vm dovecot: {_D}",
    "rfc5424 (RSYSLOG_SyslogProtocol23Format)": f"<13>1 {_ISO} vm dovecot - - -  {_D}\n",
    "rfc5424 (syslog-ng syslog())": f"<13>1 {_ISO} vm dovecot - - - {_D}\n",
}


def main() -> None:
    reference = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    gate = GateCache(lambda tag: (b"auth failed",)).__getitem__
    out = {}
    for name, text in SHAPES.items():
        data = text.encode()
        timer = timeit.Timer(lambda data=data: parse_routed(data, gate, reference))
        runs = timer.repeat(REPEATS, NUMBER)
        out[name] = statistics.median(runs) / NUMBER * 1e6
    print(json.dumps(out))


if __name__ == "__main__":
    main()
