"""The verbs that edit the config file, keeping its comments: ``jail``, ``whitelist``,
``general``; ``conf/edit.py`` validates and writes, then a running daemon is asked to reload
(none running is fine: the change applies at its next start). ``jail get`` reads the file
(``conf/jailvalues.py``). ``parser.py`` dispatches here.
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
from applianced.conf.jailvalues import NoSuchJailError, jail_values
from applianced.conf.paths import config_path
from applianced.errors import ConfigError

__all__ = ["cmd_general", "cmd_jail", "cmd_whitelist"]


def cmd_jail(args: argparse.Namespace) -> None:
    path = config_path(args.config)
    if args.action == "get":
        if args.value is not None:
            raise CliError("usage: appliancectl jail get JAIL [OPTION]", EXIT_USAGE)
        _get(args, path)
    elif args.action == "set":
        if args.option is None or args.value is None:
            raise CliError("usage: appliancectl jail set JAIL OPTION VALUE", EXIT_USAGE)
        _edit(args, lambda: edit.jail_set(path, args.jail, args.option, args.value))
    elif args.action == "unset":
        if args.option is None or args.value is not None:
            raise CliError("usage: appliancectl jail unset JAIL OPTION", EXIT_USAGE)
        _edit(args, lambda: edit.jail_unset(path, args.jail, args.option))
    else:
        if args.option is not None:
            raise CliError(f"usage: appliancectl jail {args.action} JAIL", EXIT_USAGE)
        _edit(args, lambda: edit.jail_enable(path, args.jail, args.action == "enable"))


# What an option left unset means, for `jail get` (the others come from the jail's filter).
_UNSET = {"filter": "not set", "senders": "not set: every sender the receiver allows"}
_FROM_FILTER = "not set: the filter's"


def _get(args: argparse.Namespace, path: Path) -> None:
    """`jail get JAIL [OPTION]`: the options as the file sets them, and where each comes from."""
    try:
        values = jail_values(path, args.jail)
    except ConfigError as e:
        raise CliError.config(e) from None
    except NoSuchJailError as e:
        raise CliError(str(e)) from None
    if args.option is not None:
        if args.option not in values:
            raise CliError(
                f"unknown jail option {args.option!r}; options: {', '.join(values)}", EXIT_USAGE
            )
        values = {args.option: values[args.option]}
    shown = {k: {"value": v.value, "from": v.source} for k, v in values.items()}
    width = max(len(k) for k in values)

    def human(_: object) -> None:
        for key, v in values.items():
            if v.source == "unset":
                print(f"{key:<{width}}   {_UNSET.get(key, _FROM_FILTER)}")
            else:
                print(f"{key:<{width}} = {json.dumps(v.value)}  # {v.source}")

    out(args, {"config": str(path), "jail": args.jail, "options": shown}, human)


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
    if args.unban and not add:
        raise CliError("--unban goes with `whitelist add`", EXIT_USAGE)
    follow = _still_banned(jail, address, args.unban) if add else None
    _edit(args, lambda: edit.whitelist(path, jail, address, add), follow)


_Follow = Callable[[Path, dict[str, Any], list[str]], None]  # (socket, report, lines)


def _still_banned(jail: str | None, address: str, lift: bool) -> _Follow:
    """After `whitelist add`: the bans of ``address`` the daemon still holds (in ``jail``, or
    in every jail), lifted with ``lift`` (--unban), else named with how to lift them."""

    def follow(sock: Path, report: dict[str, Any], lines: list[str]) -> None:
        seen = request(sock, "why", {"target": address})
        bans = [
            j["active_ban"]
            for name, j in seen["jails"].items()
            if j["active_ban"] and jail in (None, name)
        ]
        if bans and lift:
            only = {"jail": jail} if jail else {}
            lifted = request(sock, "unban", {"target": address, **only})
            report["unbanned"] = lifted
            lines += [f"unbanned {b['address']} in {b['jail']}" for b in lifted]
        elif bans:
            report["still_banned"] = bans
            where = ", ".join(f"{b['address']} in {b['jail']}" for b in bans)
            lines.append(
                f"still banned: {where}; lift with `appliancectl unban {address}"
                f"{f' --jail {jail}' if jail else ''}` (or whitelist add --unban)"
            )

    return follow


def cmd_general(args: argparse.Namespace) -> None:
    path = config_path(args.config)
    _edit(args, lambda: edit.general_enable(path, args.action == "enable"))


def _shown(value: Any) -> str:
    return "(unset)" if value is None else json.dumps(value)


def _edit(
    args: argparse.Namespace,
    make: Callable[[], edit.EditResult],
    follow: _Follow | None = None,
) -> None:
    """Run one edit (validated, written atomically), then ask the daemon to reload; then
    ``follow`` when the daemon answers."""
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
        f"{result.path}: {c.table}.{c.key}: {_shown(c.old)} -> {_shown(c.new)}"
        for c in result.changes
    ]
    assert result.config is not None
    sock = Path(args.socket) if args.socket is not None else result.config.control_socket
    if not result.changed:
        lines.append(f"{result.path}: already so; nothing changed")
    else:
        _reload(sock, result.path, report, lines)
    if follow is not None and report["reload"] != "daemon not running":
        try:
            follow(sock, report, lines)
        except CliError as e:
            if e.code != EXIT_DOWN:
                raise
    out(args, report, lambda _: print("\n".join(lines)))


def _reload(sock: Path, path: Path, report: dict[str, Any], lines: list[str]) -> None:
    """Ask the daemon to reload the changed file ``path``; a daemon not running is fine."""
    try:
        answer = request(sock, "reload")
    except CliError as e:
        if e.code != EXIT_DOWN:
            raise CliError(
                f"{path} was changed, but applianced refused to reload it: {e}"
            ) from None
        if not str(e).startswith("applianced is not running"):  # no permission, lost...
            raise CliError(
                f"{path} was changed, but applianced could not be told to reload: "
                f"{e}; then run `appliancectl reload`",
                EXIT_DOWN,
            ) from None
        report["reload"] = "daemon not running"
        lines.append(f"applianced is not running ({sock}): the change applies at next start")
        return
    report["reload"] = "done"
    report["jails"] = answer["jails"]
    lines.append(reloaded(answer))
    running = answer.get("config")
    if running and Path(running).resolve() != Path(path).resolve():
        lines.append(f"warning: the running daemon reads {running}, not {path}")
        report["warning"] = f"the running daemon reads {running}"
