"""``appliancectl import-fail2ban [DIR]``: a fail2ban tree's enabled jails as our TOML config,
on stdout or into ``--output FILE`` (never over a file without ``--force``), with ``--json`` a
summary of the jails, where each value came from and what was not carried. Offline;
``parser.py`` dispatches here, ``conf/f2bimport.py`` does the work.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from applianced.cli.client import EXIT_USAGE, CliError
from applianced.conf.f2bimport import Imported, import_tree
from applianced.conf.files import FileWriteError, write_atomic
from applianced.conf.filterfiles.f2bjails import JailTreeError
from applianced.errors import ConfigError
from applianced.units import plural

__all__ = ["cmd_import_fail2ban"]


def cmd_import_fail2ban(args: argparse.Namespace) -> None:
    output: Path | None = args.output
    if output is not None and output.exists() and not args.force:
        raise CliError(
            f"{output} exists; pass --force to replace it, or another --output", EXIT_USAGE
        )
    try:
        result = import_tree(Path(args.dir), (output or Path("appliance.toml")).absolute())
    except JailTreeError as e:
        raise CliError(str(e), EXIT_USAGE, "fail2ban_tree_unreadable") from None
    except ConfigError as e:
        raise CliError.config(e) from None
    if output is not None:
        try:
            write_atomic(output, result.text)
        except (FileWriteError, OSError) as e:
            raise CliError(f"cannot write {output}: {e}", EXIT_USAGE) from None
    if args.json:
        summary = result.summary()
        summary["output"] = str(output) if output is not None else None
        if output is None:
            summary["config"] = result.text
        print(json.dumps(summary, indent=2))
        return
    if output is None:
        print(result.text, end="")
    print(_report(result, output), file=sys.stderr)


def _report(result: Imported, output: Path | None) -> str:
    """One line for the operator: what was imported, where, and what was left out."""
    names = ", ".join(j.name for j in result.jails) or "none"
    lines = [f"imported {plural(len(result.jails), 'jail')} from {result.root}: {names}"]
    if output is not None:
        lines[0] += f"; wrote {output}"
    lines += [f"not imported: jail {name}: {why}" for name, why in result.skipped.items()]
    notes = sum(len(j.not_carried) for j in result.jails) + len(result.not_carried)
    if notes:
        lines.append(f"{plural(notes, 'value')} not carried: see the 'not carried' comments")
    lines.append("next: appliancectl check --config FILE, then set listeners (README)")
    return "\n".join(lines)
