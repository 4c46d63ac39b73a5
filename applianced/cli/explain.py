"""``appliancectl explain``: one message (a log line, or a raw syslog frame on stdin) walked
through the jails, printed step by step as ``cscli explain`` walks its pipeline: how it was
parsed, which jails read it, which regex matched and what it took, or why none did.

Against the running daemon over the control socket (``views.explain`` walks its jails), or,
with ``--config``, against the jails of that file (offline: the walk runs here, and the
never-ban list holds the jails' ignoreip and the allowed senders, not the appliance's own
addresses, which only the daemon knows). ``parser.py`` dispatches here; the walk itself is
``rules/explain.py``.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from applianced.cli.client import EXIT_USAGE, CliError, request
from applianced.cli.offline import load
from applianced.cli.output import out
from applianced.conf.paths import config_path
from applianced.errors import ApplianceError
from applianced.receiver.parse import message_fields, parse, shape
from applianced.rules.explain import explain
from applianced.rules.jail import Jail, jail_filter

__all__ = ["cmd_explain"]


def cmd_explain(args: argparse.Namespace) -> None:
    frame = _frame(args.line)
    if args.config is None:
        result = request(args.sock, "explain", {"frame": frame})
    else:
        result = _offline(frame, args)
    out(args, result, _print)


def _frame(line: str | None) -> str:
    """The message: the argument, or stdin (a raw frame, its line end cut) for none or "-"."""
    if line is not None and line != "-":
        text = line
    else:
        text = sys.stdin.buffer.read().decode("utf-8", "replace").rstrip("\r\n")
    if not text.strip():
        raise CliError("explain: give a log line or a syslog frame (argument or stdin)", EXIT_USAGE)
    return text


def _offline(frame: str, args: argparse.Namespace) -> dict[str, Any]:
    path = config_path(args.config)
    config = load(path)
    senders = [n for n in config.allowed_senders if n.prefixlen > 0]
    jails = [Jail(conf, jail_filter(conf), senders) for conf in config.enabled_jails]
    data = frame.encode()
    try:
        message = parse(data, datetime.now(UTC))
    except ApplianceError as e:
        raise CliError(f"explain: {e}", EXIT_USAGE) from None
    return explain(message, shape(data), message_fields(message), jails).as_json()


def _print(r: dict[str, Any]) -> None:
    m = r["message"]
    print(f"parsed as {r['shape']}")
    for key in ("timestamp", "hostname", "app_name", "procid", "msgid", "structured_data"):
        if m.get(key) is not None:
            print(f"  {key}: {m[key]}")
    print(f"  msg: {m['msg']}")
    for walk in r["jails"]:
        print(f"jail {walk['jail']}: {walk['verdict']}")
        for step in walk["steps"]:
            print(f"  - {step}")
        for tried in walk["failregex"]:
            if tried["result"] != "not tried":
                print(f"    failregex #{tried['number']} {tried['result']}: {tried['regex']}")
        for tried in walk["ignoreregex"]:
            print(f"    ignoreregex #{tried['number']} {tried['result']}: {tried['regex']}")
        match = walk["match"]
        if match is not None:
            taken = {"host": match["host"], "user": match["user"], **match["fields"]}
            shown = ", ".join(f"{k}={v!r}" for k, v in taken.items() if v is not None)
            print(f"    took: {shown}")
    if not r["jails"]:
        print("no jail is enabled")
    print(f"=> {r['summary']}")
