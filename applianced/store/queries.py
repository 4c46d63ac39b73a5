"""The SQL the SQLite offenders store runs, and the address spans it binds: the statements that
insert a ban and its lines, and the containment queries (which stored networks contain a
queried one) as probes of the ``bans_net`` index. Pure text and integer arithmetic; only
``store/sqlite.py`` imports it.
"""

from __future__ import annotations

import json
from typing import Any

from applianced.rules.decision import IPNetwork

__all__ = [
    "BAN_COLUMNS",
    "FIND",
    "HISTORY",
    "INSERT",
    "INSERT_LINES",
    "LINES_JSON",
    "containment_params",
    "span",
]

BAN_COLUMNS = "jail, network, started_at, expires_at, kind, count"
INSERT = (
    "INSERT INTO bans (id, jail, network, version, first, last, started_at, expires_at, kind,"
    " count, node, sender) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_LINES = "INSERT INTO ban_lines (ban_id, lines) VALUES (?, ?)"
# A ban's lines as JSON, UTF-8 kept as is. One encoder for all: json.dumps with an argument
# builds a new one per call, a third of the encoding's cost for a storm's short lists.
LINES_JSON = json.JSONEncoder(ensure_ascii=False).encode


def containing(bits: int, select: str, where: str, tail: str) -> str:
    # A stored network N contains the queried Q when N.first <= Q.first and N.last >= Q.last
    # (same version). As a range on `first` that would scan every row below Q.first. But N is
    # a CIDR block, so N.first is Q.first with its low bits cleared: one of bits + 1 values.
    # Passing all of them as an IN list turns the query into at most 33 (IPv4) or 129 (IPv6)
    # probes of bans_net, whatever the table's size. The list always has bits + 1 entries
    # (repeats are harmless), so there are only a few distinct statements, all cached.
    marks = ", ".join("?" * (bits + 1))
    return f"{select} WHERE version = ? AND first IN ({marks}) AND last >= ? {where} {tail}"


FIND = {
    (bits, by_jail): containing(
        bits,
        f"SELECT {BAN_COLUMNS} FROM bans",
        "AND ended_at IS NULL" + (" AND jail = ?" if by_jail else ""),
        "ORDER BY started_at, id",
    )
    for bits in (32, 128)
    for by_jail in (False, True)
}
HISTORY = {
    bits: containing(
        bits,
        f"SELECT {BAN_COLUMNS}, ended_at, end_reason, lines, node, sender"
        " FROM bans LEFT JOIN ban_lines ON ban_id = id",
        "",
        "ORDER BY started_at DESC, id DESC LIMIT ?",
    )
    for bits in (32, 128)
}


def span(network: IPNetwork) -> tuple[bytes, bytes]:
    """The first and last address of ``network``, big-endian, 4 or 16 bytes."""
    # Integer arithmetic: ``broadcast_address`` builds an address object, 3x slower in batches.
    bits = network.max_prefixlen
    first = int(network.network_address)
    last = first | ((1 << (bits - network.prefixlen)) - 1)
    return first.to_bytes(bits // 8, "big"), last.to_bytes(bits // 8, "big")


def containment_params(network: IPNetwork) -> list[Any]:
    bits = network.max_prefixlen
    width = bits // 8
    first = int(network.network_address)
    full = (1 << bits) - 1
    candidates = [
        (first & (full ^ ((1 << (bits - p)) - 1))).to_bytes(width, "big") for p in range(bits + 1)
    ]
    return [network.version, *candidates, span(network)[1]]
