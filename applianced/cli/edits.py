"""The verbs that edit the config file, keeping its comments: ``jail``, ``whitelist``,
``general``. ``conf/edit.py`` validates and writes; then a running daemon is asked to reload
(none running is fine: the change applies at its next start). ``parser.py`` dispatches here.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from applianced.cli.client import EXIT_DOWN, EXIT_REFUSED, EXIT_USAGE, CliError, request
from applianced.cli.online import reloaded
from applianced.cli.output import out
from applianced.conf import edit
from applianced.conf.files import FileWriteError
from applianced.conf.paths import config_path
from applianced.errors import ConfigError

__all__ = ["cmd_general", "cmd_jail", "cmd_whitelist"]


def cmd_jail(args: argparse.Namespace) -> None:
    path = config_path(args.config)
    if args.action == "set":
        if args.option is None or args.value is None:
            raise CliError("usage: appliancectl jail set JAIL OPTION VALUE", EXIT_USAGE)
        _edit(args, lambda: edit.jail_set(path, args.jail, args.option, args.value))
    else:
        if args.option is not None:
            raise CliError(f"usage: appliancectl jail {args.action} JAIL", EXIT_USAGE)
        _edit(args, lambda: edit.jail_enable(path, args.jail, args.action == "enable"))


def cmd_whitelist(args: argparse.Namespace) -> None:
    path = config_path(args.config)
    add = args.action == "add"
    if args.everywhere:
        if args.address is not None:
            raise CliError(f"usage: appliancectl whitelist {args.action} --global ADDR", EXIT_USAGE)
        jail, address = None, args.jail_or_addr
    else:
        if args.address is None:
            raise CliError(
                f"usage: appliancectl whitelist {args.action} JAIL ADDR (or --global ADDR)",
                EXIT_USAGE,
            )
        jail, address = args.jail_or_addr, args.address
    _edit(args, lambda: edit.whitelist(path, jail, address, add))


def cmd_general(args: argparse.Namespace) -> None:
    path = config_path(args.config)
    _edit(args, lambda: edit.general_enable(path, args.action == "enable"))


def _edit(args: argparse.Namespace, make: Callable[[], edit.EditResult]) -> None:
    """Run one edit (validated, written atomically), then ask the daemon to reload."""
    try:
        result = make()
    except ConfigError as e:
        raise CliError.config(e, f"refused, nothing written: {e}") from None
    except (edit.EditError, FileWriteError) as e:
        raise CliError(f"refused, nothing written: {e}", EXIT_REFUSED, "edit_refused") from None
    except OSError as e:
        raise CliError(f"cannot write the config: {e}", EXIT_REFUSED) from None
    report: dict[str, Any] = {
        "config": str(result.path),
        "changed": result.changed,
        "created": result.created,
        "changes": [
            {"table": c.table, "key": c.key, "old": c.old, "new": c.new} for c in result.changes
        ],
        "reload": "unchanged",
    }
    lines = [f"{result.path}: added [jails.{result.created}]"] if result.created else []
    lines += [
        f"{result.path}: {c.table}.{c.key}: {'(unset)' if c.old is None else json.dumps(c.old)} "
        f"-> {json.dumps(c.new)}"
        for c in result.changes
    ]
    if not result.changed:
        lines.append(f"{result.path}: already so; nothing changed")
    else:
        assert result.config is not None
        sock = Path(args.socket) if args.socket is not None else result.config.control_socket
        try:
            answer = request(sock, "reload")
        except CliError as e:
            if e.code != EXIT_DOWN:
                raise CliError(
                    f"{result.path} was changed, but applianced refused to reload it: {e}"
                ) from None
            if not str(e).startswith("applianced is not running"):  # no permission, lost...
                raise CliError(
                    f"{result.path} was changed, but applianced could not be told to reload: "
                    f"{e}; then run `appliancectl reload`",
                    EXIT_DOWN,
                ) from None
            report["reload"] = "daemon not running"
            lines.append(f"applianced is not running ({sock}): the change applies at next start")
        else:
            report["reload"] = "done"
            report["jails"] = answer["jails"]
            lines.append(reloaded(answer))
            running = answer.get("config")
            if running and Path(running).resolve() != Path(result.path).resolve():
                lines.append(f"warning: the running daemon reads {running}, not {result.path}")
                report["warning"] = f"the running daemon reads {running}"
    out(args, report, lambda _: print("\n".join(lines)))
