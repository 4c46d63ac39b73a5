"""How ``appliancectl`` prints: JSON with ``--json``, else the verb's human form; times, and the
table of bans that ``banned`` and ``blacklist list`` share. Used by the verb modules.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from applianced.units import format_duration

__all__ = ["bans_table", "console", "out", "when"]


def out(args: argparse.Namespace, data: Any, human: Callable[[Any], object]) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=None if isinstance(data, list) else 2))
    else:
        human(data)


def when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def console() -> Console:
    """A console for tables: a terminal's own width, or wide enough when piped (addresses and
    jail names are never cut)."""
    return Console() if sys.stdout.isatty() else Console(width=160)


def bans_table(bans: list[dict[str, Any]], title: str) -> None:
    con = console()
    if not bans:
        con.print(f"{title}: none")
        return
    table = Table(title=title)
    for col in ("jail", "address", "kind", "ban #", "started", "expires", "left"):
        table.add_column(col, no_wrap=col in ("jail", "address"))
    for b in bans:
        table.add_row(
            b["jail"],
            b["address"],
            b["kind"],
            str(b["count"]),
            when(b["started_at"]),
            when(b["expires_at"]),
            format_duration(b["remaining"]),
        )
    con.print(table)
