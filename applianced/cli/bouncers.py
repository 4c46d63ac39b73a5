"""``appliancectl bouncer add NAME | list | remove NAME``: the CrowdSec bouncers that may pull
the decision stream. The keys live in the state directory (``bouncers.py``), so add and remove
work without the daemon, which reads the file again at the next pull; ``list`` asks a running
daemon for each bouncer's last pull, address and version. The state directory and the control
socket are read alone from the config file (``conf/paths.py``), so a file with mistakes does
not lock the keys out. ``parser.py`` dispatches here.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from applianced.bouncers import add_bouncer, read_keys, remove_bouncer
from applianced.cli.client import EXIT_DOWN, EXIT_USAGE, CliError, request
from applianced.cli.output import console, out, when
from applianced.conf.load import load_config
from applianced.conf.paths import config_path, control_socket, state_dir
from applianced.conf.schema import DecisionsConf
from applianced.errors import ApplianceError, ConfigError

__all__ = ["cmd_bouncer"]


def cmd_bouncer(args: argparse.Namespace) -> None:
    if args.action != "list" and not args.name:
        raise CliError(f"bouncer {args.action} needs a NAME", EXIT_USAGE)
    if args.action == "list" and args.name:
        raise CliError("bouncer list takes no NAME: it lists every bouncer", EXIT_USAGE)
    # The state directory and the control socket read alone: the keys stay manageable while
    # the file has mistakes (the daemon runs on the config it loaded).
    path = config_path(args.config)
    try:
        state = state_dir(path)
        if args.action == "add":
            key = add_bouncer(state, args.name)
            out(args, {"name": args.name, "api_key": key}, lambda d: _added(d, _stream(path)))
        elif args.action == "remove":
            remove_bouncer(state, args.name)
            out(args, {"removed": args.name}, lambda d: print(f"removed bouncer {d['removed']}"))
        else:
            _list(args, state, control_socket(path))
    except ConfigError as e:
        raise CliError.config(e) from None
    except ApplianceError as e:  # BouncerError; FileWriteError: the state directory
        raise CliError(str(e)) from None


def _stream(path: Path) -> DecisionsConf | str:
    """The config's [decisions] for the new key's hint, or why there is none to show."""
    try:
        stream = load_config(path).decisions
    except ConfigError:
        return "The config file has mistakes (`appliancectl check` lists them)."
    return stream or "No [decisions] table in the config yet: the stream is off until you add one."


def _added(d: dict[str, str], stream: DecisionsConf | str) -> None:
    print(f"API key for bouncer {d['name']} (shown once, only its hash is kept):\n")
    print(f"  {d['api_key']}\n")
    if isinstance(stream, str):
        print(stream)
        return
    if stream.tls is None:  # plain HTTP is only on loopback: the bouncer runs on this host
        scheme, host = "http", f"[{stream.address}]" if ":" in stream.address else stream.address
    else:  # a name or address the certificate holds
        scheme, host = "https", "THIS-APPLIANCE"
    print(
        "In the bouncer's config (crowdsec-firewall-bouncer.yaml):\n"
        f"  api_url: {scheme}://{host}:{stream.port}/\n"
        f"  api_key: {d['api_key']}"
    )


def _list(args: argparse.Namespace, state: Path, socket: Path) -> None:
    seen: dict[str, dict[str, Any]] = {}
    note = ""
    try:
        sock = Path(args.socket) if args.socket is not None else socket
        for b in request(sock, "bouncers") or []:
            seen[b["name"]] = b
    except CliError as e:
        if e.code != EXIT_DOWN:
            raise
        note = "applianced is not running: no last pulls to show"
    listed = [
        {
            "name": name,
            "added": reg.added,
            "last_pull": seen.get(name, {}).get("last_pull"),
            "address": seen.get(name, {}).get("address"),
            "version": seen.get(name, {}).get("version"),
        }
        for name, reg in sorted(read_keys(state).items())
    ]
    out(args, listed, lambda rows: _table(rows, note))


def _table(rows: list[dict[str, Any]], note: str) -> None:
    con = console()
    if not rows:
        con.print("no bouncers; add one with `appliancectl bouncer add NAME`")
        return
    table = Table()
    for col in ("name", "last pull", "address", "version", "added"):
        table.add_column(col, no_wrap=True)
    for r in rows:
        pulled = when(r["last_pull"]) if r["last_pull"] is not None else "never (since start)"
        added = when(datetime.fromisoformat(r["added"]).timestamp())  # as the last pull
        table.add_row(r["name"], pulled, r["address"] or "-", r["version"] or "-", added)
    con.print(table)
    if note:
        con.print(note)
