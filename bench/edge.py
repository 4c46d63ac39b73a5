"""The receiver's hot path in process (issue 17's senders): ``Edge.deliver`` per message, from
the datagram's bytes through the routing gate, the parse, the sender's count in the
``SenderBook`` and the shipped jails (all enabled) to the engine's verdict. No socket, no
kernel: what one message costs the reactor thread, the figure a per-message counter moves.

``python -m bench.edge`` prints one JSON object {"ns_per_message": the best pass's mean, in CPU
time, so that other processes on the machine count less}: the generated mail log's first
100,000 lines sent as 1,000 senders (the book's bound), 9 passes.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path

from twisted.internet.task import Clock

from applianced.conf.load import load_config
from applianced.receiver.edge import Edge, ReceiverStats
from applianced.receiver.senders import SenderBook
from applianced.rules.engine import Engine
from applianced.rules.jail import Jail, jail_filter
from applianced.rules.message import SyslogMessage
from bench.filters import SHIPPED_CONFIG, mail_log

LINES = 100_000
SENDERS = 1_000
PASSES = 9


def engine(book: SenderBook) -> tuple[Engine, Edge]:
    """The shipped jails, every one enabled, behind one UDP listener's edge."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "appliance.toml"
        text = SHIPPED_CONFIG.read_text().replace("enabled = false", "enabled = true")
        path.write_text(re.sub(r'"/(var/lib|run)/applianced[^"]*"', f'"{tmp}/x"', text))
        config = load_config(path)
    eng = Engine(
        [Jail(j, jail_filter(j)) for j in config.enabled_jails], on_unmatched=book.unmatched
    )

    def sink(message: SyslogMessage) -> None:
        eng.feed(message, message.received_at)

    edge = Edge(config.listeners[0], sink, ReceiverStats(), Clock(), eng.gate, book)
    return eng, edge


def main() -> None:
    book = SenderBook()
    _, edge = engine(book)
    with mail_log(1_000_000).open("rb") as f:
        data = [b"<22>" + line.rstrip(b"\n") for _, line in zip(range(LINES), f, strict=False)]
    hosts = [
        f"192.0.2.{i % 250}" if i < 250 else f"198.51.{i >> 8}.{i & 255}" for i in range(SENDERS)
    ]
    work = [(d, hosts[i % SENDERS]) for i, d in enumerate(data)]
    deliver = edge.deliver
    best = float("inf")
    for _ in range(PASSES):
        started = time.process_time()
        for datagram, host in work:
            deliver(datagram, host)
        best = min(best, time.process_time() - started)
    print(json.dumps({"ns_per_message": best / len(work) * 1e9, "senders": len(book)}))


if __name__ == "__main__":
    main()
