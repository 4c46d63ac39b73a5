"""The offline verbs that need no daemon: ``check`` (validate a config file) and ``parse``
(syslog messages on stdin -> their fields). ``parser.py`` dispatches here.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from applianced.cli.client import CliError
from applianced.cli.output import out
from applianced.conf.load import load_config
from applianced.conf.paths import config_path
from applianced.errors import ApplianceError, ConfigError, ConfigErrors
from applianced.receiver.parse import message_fields, parse

__all__ = ["cmd_check", "cmd_parse"]


def cmd_check(args: argparse.Namespace) -> None:
    path = config_path(args.config)
    try:
        config = load_config(path)
    except ConfigErrors as e:
        raise CliError.config(e, f"{len(e.errors)} errors in {path}:\n{e}") from None
    except ConfigError as e:
        raise CliError.config(e) from None
    summary = {
        "config": str(path),
        "listeners": [f"{c.transport}/{c.address}:{c.port}" for c in config.listeners],
        "jails": {j.name: j.enabled for j in config.jails},
    }
    out(
        args,
        summary,
        lambda s: print(
            f"{s['config']}: OK; listeners {', '.join(s['listeners'])}; jails "
            + ", ".join(f"{n}{'' if on else ' (disabled)'}" for n, on in s["jails"].items())
        ),
    )


def cmd_parse(args: argparse.Namespace) -> None:
    now = datetime.now(UTC)
    for line in sys.stdin.buffer:
        raw = line.rstrip(b"\r\n")
        if not raw.strip():
            continue
        try:
            fields: dict[str, Any] = message_fields(parse(raw, now))
        except ApplianceError as e:
            fields = {"error": str(e)}
        if args.json:
            print(json.dumps(fields), flush=False)
        elif "error" in fields:
            print(f"error: {fields['error']}")
        else:
            print("  ".join(f"{k}={v}" for k, v in fields.items() if v is not None))
