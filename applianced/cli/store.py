"""``appliancectl store recover``: a damaged offenders store replaced, offline, by a new one
built from what can be read of it (``store/recover.py``). ``parser.py`` dispatches here. The
daemon must be stopped: the verb refuses while its control socket answers.
"""

from __future__ import annotations

import argparse
import socket
from datetime import UTC, datetime
from typing import Any

from applianced.cli.client import EXIT_REFUSED, CliError
from applianced.cli.offline import load
from applianced.cli.output import out
from applianced.conf.paths import config_path
from applianced.errors import StoreError
from applianced.store.recover import recover
from applianced.store.sqlite import STORE_FILE

__all__ = ["cmd_store"]


def cmd_store(args: argparse.Namespace) -> None:
    config = load(config_path(args.config))
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(config.control_socket))
    except OSError:
        pass
    else:
        raise CliError(
            f"applianced answers on {config.control_socket}; stop it first "
            "(systemctl stop applianced), then run `appliancectl store recover` again",
            EXIT_REFUSED,
        )
    finally:
        probe.close()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    try:
        done = recover(config.state_dir / STORE_FILE, stamp)
    except (StoreError, OSError) as e:
        raise CliError(f"store recover failed: {e}", EXIT_REFUSED) from None
    report = {
        "store": str(config.state_dir / STORE_FILE),
        "damaged_file": str(done.aside),
        "bans": done.bans,
        "active": done.active,
        "lines": done.lines,
        "unreadable": done.unreadable,
        "unreadable_tables": list(done.unreadable_tables),
    }
    out(args, report, _summary)


def _summary(r: dict[str, Any]) -> None:
    lost = (
        f"SQLite could not read its tables {', '.join(r['unreadable_tables'])} at all "
        "(is it a SQLite file?)"
        if r["unreadable_tables"]
        else f"{r['unreadable']} bans could not be read"
    )
    print(
        f"moved the damaged store to {r['damaged_file']} (kept); the new {r['store']} holds "
        f"{r['bans']} bans ({r['active']} active) and {r['lines']} sets of matched lines; "
        f"{lost}. Start applianced: it adopts the bans the kernel holds and the new store "
        "lacks (its log says how many)"
    )
