"""The offline verbs that need no daemon: ``check`` (validate a config file, and warn of a
deployment that protects only the appliance) and ``parse`` (syslog messages on stdin -> their
fields). ``parser.py`` dispatches here.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from applianced.cli.client import CliError
from applianced.cli.output import out
from applianced.conf.load import load_config
from applianced.conf.paths import config_path
from applianced.conf.schema import Config
from applianced.errors import ApplianceError, ConfigError, ConfigErrors
from applianced.receiver.parse import message_fields, parse

__all__ = ["cmd_check", "cmd_parse", "load"]


def load(path: Path) -> Config:
    """The config file at ``path`` loaded, its mistakes (every one) as a CliError."""
    try:
        return load_config(path)
    except ConfigErrors as e:
        raise CliError.config(e, f"{len(e.errors)} errors in {path}:\n{e}") from None
    except ConfigError as e:
        raise CliError.config(e) from None


def cmd_check(args: argparse.Namespace) -> None:
    path = config_path(args.config)
    config = load(path)
    summary = {
        "config": str(path),
        "listeners": [f"{c.transport}/{c.address}:{c.port}" for c in config.listeners],
        "jails": {j.name: j.enabled for j in config.jails},
        "warnings": warnings(config),
    }
    if args.connect and config.state.backend != "postgresql":
        summary["database"] = 'no database to connect to: [state] backend is "sqlite"'
    elif args.connect:
        from applianced.cli.cluster import try_database  # psycopg, only when asked

        summary["database"] = try_database(config.state)

    def human(s: dict[str, Any]) -> None:
        print(
            f"{s['config']}: OK; listeners {', '.join(s['listeners'])}; jails "
            + ", ".join(f"{n}{'' if on else ' (disabled)'}" for n, on in s["jails"].items())
        )
        if "database" in s:
            print(s["database"])
        for warning in s["warnings"]:
            print(f"warning: {warning}", file=sys.stderr)

    out(args, summary, human)


def warnings(config: Config) -> list[str]:
    """What a valid config may still get wrong: syslog from remote mail servers while every
    ban is enforced only here (hook = "input") and no bouncer can pull them ([decisions])."""
    remote = [
        f"{c.transport}/{c.address}:{c.port}"
        for c in config.listeners
        if not ip_address(c.address).is_loopback
        and any(not n.is_loopback for n in c.allowed_senders)
    ]
    jails = config.enabled_jails
    if not remote or not jails or any(j.hook != "input" for j in jails) or config.decisions:
        return []
    return [
        f"listeners {', '.join(remote)} take syslog from remote senders, but every jail bans "
        'with hook = "input", which drops traffic to this host only: the mail servers that '
        "send are not protected. If this appliance routes their traffic, set "
        'hook = "forward"; otherwise add a [decisions] table and run a CrowdSec bouncer on '
        "each mail server (README: Remote enforcement: the decision stream for bouncers)"
    ]


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
