"""fail2ban's own sample logs as our conformance suite: every filter of Debian's fail2ban 1.0.2
``filter.d`` that has a sample log is run over it through ``appliancectl test-filter --json``
(the same path an operator uses), and its answers are compared with the log's annotations.

Owns reading the annotated logs and the table; ``test_conformance.py`` holds the targets, and
``python -m tests.conf.filterfiles.conformance [FILTER ...]`` prints the table (the README's
fail2ban section carries it). The package comes from ``tests/debian_fail2ban.py``'s cache.

A sample log is fail2ban's format: each log line follows a ``# failJSON: {...}`` annotation
(``match``, and where given ``host``, ``user``, ``time``, ``constraint``); ``# filterOptions:``
starts a group of lines run once per option set it lists (``mode``, ``logtype``, and the
``test.condition``/``test.prefix-line`` keys of the test harness); ``# fileOptions:`` applies
to the whole file. A group is one file for test-filter, so multi-line matches see their lines.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from applianced.cli.parser import main as appliancectl
from tests.debian_fail2ban import debian_filter_d, debian_sample_logs

__all__ = [
    "MAIL_AND_AUTH",
    "Result",
    "run_all",
    "run_filter",
    "table",
]

# The filters that must pass every case (issue 21).
MAIL_AND_AUTH = (
    "postfix",
    "dovecot",
    "exim",
    "exim-spam",
    "courier-auth",
    "courier-smtp",
    "sendmail-auth",
    "sendmail-reject",
    "roundcube-auth",
    "kerio",
    "qmail",
    "horde",
    "sogo-auth",
    "squirrelmail",
    "sshd",
)

# Where applianced differs from fail2ban on purpose (the README's fail2ban section says why):
# (filter, text of the annotated line) -> the reason. Such a case counts as on_purpose, never ok.
ON_PURPOSE = {
    ("sshd", "from 192.030.0.6"): "an octet with a leading zero is no address (octal or decimal?)",
}

# fail2ban's test suite computes the annotated times of zoned dates in this zone.
_ANNOTATION_ZONE = ZoneInfo("Europe/Zurich")
_DIRECTIVE = re.compile(r"^#+ ?(?P<key>failJSON|filterOptions|fileOptions):(?P<value>.+)$")


@dataclass
class Result:
    """One filter's cases, counted over every option set of its log."""

    name: str
    cases: int = 0
    ok: int = 0
    missed: int = 0
    wrong_host: int = 0
    wrong_time: int = 0
    false_positives: int = 0
    on_purpose: int = 0  # missed as ON_PURPOSE says
    load_error: str | None = None
    failures: list[str] = field(default_factory=list)


@dataclass
class _Group:
    """Lines that share the ``filterOptions`` before them: (line number, text, annotation)."""

    variants: list[dict[str, Any]]
    lines: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)


def _groups(log: Path) -> tuple[dict[str, Any], list[_Group]]:
    """The file's options and its groups of annotated lines."""
    file_options: dict[str, Any] = {}
    groups = [_Group([{}])]
    pending: dict[str, Any] = {}
    text = log.read_text(encoding="utf-8", errors="surrogateescape")
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("#"):
            m = _DIRECTIVE.match(line)
            if m is None:
                continue
            value = json.loads(m.group("value"))
            if m.group("key") == "failJSON":
                pending = value
            elif m.group("key") == "fileOptions":
                file_options.update(value)
            else:
                groups.append(_Group(value if isinstance(value, list) else [value]))
            continue
        if line.strip():
            groups[-1].lines.append((number, line, pending))
            pending = {}
    return file_options, [g for g in groups if g.lines]


def _holds(condition: str | None, name: str, opts: Mapping[str, Any]) -> bool:
    """A ``test.condition``/``constraint``: a Python expression over ``name`` and ``opts``
    (Debian's own files, nothing else, are read here)."""
    if not condition:
        return True
    return bool(eval(condition, {"__builtins__": {}}, {"name": name, "opts": opts}))


def _spec(conf: Path, options: Mapping[str, Any]) -> str:
    if not options:
        return str(conf)
    args = ", ".join(f'{k}="{v}"' for k, v in options.items())
    return f"{conf}[{args}]"


def _test_filter(spec: str, lines: Iterable[str]) -> tuple[int, str, list[dict[str, Any]]]:
    """``appliancectl test-filter SPEC LOG --json`` on ``lines``: exit status, stderr, rows."""
    with tempfile.NamedTemporaryFile(
        "w", suffix=".log", encoding="utf-8", errors="surrogateescape"
    ) as f:
        f.write("".join(f"{line}\n" for line in lines))
        f.flush()
        out, err = io.StringIO(), io.StringIO()
        argv = ["--config", "/nonexistent/applianced.toml", "test-filter", spec, f.name, "--json"]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = appliancectl(argv) or 0
            except SystemExit as e:
                status = e.code if isinstance(e.code, int) else 1
    rows = [json.loads(r) for r in out.getvalue().splitlines() if r.startswith('{"lineno"')]
    return status, err.getvalue(), rows


def _same_time(expected: str, got: str, line: str) -> bool:
    """The annotated local time against the one test-filter read: zoned times in fail2ban's
    test zone; a date without a year (syslog) matches whatever year the annotation says, and
    one written to the second matches whatever fraction the line has."""
    want = datetime.fromisoformat(re.sub(r"-(\d)T", r"-0\1T", expected))
    when = datetime.fromisoformat(got)
    if when.tzinfo is not None:
        when = when.astimezone(_ANNOTATION_ZONE).replace(tzinfo=None)
    if expected[:4] not in line:  # "Jun 21 16:47:46": only the rest must agree
        when = when.replace(year=want.year)
    if "." not in expected:  # an annotation without a fraction gives whole seconds
        when = when.replace(microsecond=0)
    return when == want


def run_filter(name: str, filter_d: Path, logs: Path) -> Result:
    """One filter's log through test-filter, counted against its annotations."""
    result = Result(name)
    conf = filter_d / f"{name}.conf"
    file_options, groups = _groups(logs / name)
    for group in groups:
        for variant in group.variants:
            opts = {**file_options, **variant}
            if not _holds(opts.get("test.condition"), name, opts):
                continue
            prefix = str(opts.get("test.prefix-line", ""))
            options = {k: v for k, v in opts.items() if not k.startswith("test.")}
            status, err, rows = _test_filter(
                _spec(conf, options), (prefix + text for _, text, _ in group.lines)
            )
            if status != 0:
                shown = err.replace(f"{filter_d}/", "").removeprefix("appliancectl: ")
                result.load_error = " ".join(shown.split()) or f"exit {status}"
                return result
            _count(result, name, options, group, {row["lineno"]: row for row in rows})
    return result


def _count(
    result: Result,
    name: str,
    options: Mapping[str, Any],
    group: _Group,
    rows: Mapping[int, dict[str, Any]],
) -> None:
    for index, (number, text, note) in enumerate(group.lines, start=1):
        if not _holds(note.get("constraint"), name, options):
            continue
        result.cases += 1
        row = rows.get(index)
        where = f"{name}:{number} {dict(options) or ''}"
        if not note.get("match", False):
            if row is None:
                result.ok += 1
            else:
                result.false_positives += 1
                result.failures.append(f"{where}: false positive {row}")
            continue
        if row is None and any(f == name and t in text for f, t in ON_PURPOSE):
            result.on_purpose += 1
        elif row is None:
            result.missed += 1
            result.failures.append(f"{where}: missed {text[:100]}")
        elif ("host" in note and not _same_host(note["host"], row.get("host"))) or (
            "user" in note and row.get("user") != note["user"]
        ):
            result.wrong_host += 1
            result.failures.append(f"{where}: got {row}, want {note}")
        elif "time" in note and "time" in row and not _same_time(note["time"], row["time"], text):
            result.wrong_time += 1
            result.failures.append(f"{where}: time {row['time']}, want {note['time']}")
        else:
            result.ok += 1


def _same_host(want: str | None, got: str | None) -> bool:
    """An address compared as an address: test-filter prints the canonical form the daemon
    bans (``2001:db8::1`` where the log wrote ``2001:DB8::1``, as fail2ban's IPAddr has it too);
    a host name as written."""
    try:
        return ip_address(str(want)) == ip_address(str(got))
    except ValueError:
        return want == got


def run_all(names: Iterable[str] | None = None) -> list[Result]:
    """Every filter of Debian's filter.d with a sample log (or those named)."""
    filter_d, logs = debian_filter_d(), debian_sample_logs()
    if names is None:
        names = sorted(
            p.name for p in logs.iterdir() if p.is_file() and (filter_d / f"{p.name}.conf").exists()
        )
    return [run_filter(name, filter_d, logs) for name in names]


def table(results: list[Result]) -> str:
    """The per-filter table, in Markdown."""
    head = "| filter | cases | ok | missed | wrong host | wrong time | false pos. | load error |"
    out = [head, "|" + " --- |" * 8]
    for r in results:
        error = (r.load_error or "").replace("|", "\\|")[:110]
        out.append(
            f"| {r.name} | {r.cases} | {r.ok} | {r.missed} | {r.wrong_host} | {r.wrong_time} "
            f"| {r.false_positives} | {error} |"
        )
    return "\n".join(out)


def summary(results: list[Result]) -> str:
    cases = sum(r.cases for r in results)
    ok = sum(r.ok for r in results)
    mail = [r for r in results if r.name in MAIL_AND_AUTH]
    mail_cases, mail_ok = sum(r.cases for r in mail), sum(r.ok for r in mail)
    errors = sum(1 for r in results if r.load_error)
    fps = sum(r.false_positives for r in results)
    on_purpose = sum(r.on_purpose for r in results)
    return (
        f"{len(results)} filters, {errors} refuse to load; {ok}/{cases} cases ok "
        f"({100 * ok / max(cases, 1):.1f}%); mail and auth {mail_ok}/{mail_cases} "
        f"({100 * mail_ok / max(mail_cases, 1):.1f}%); {fps} false positives; "
        f"{on_purpose} differ on purpose"
    )


if __name__ == "__main__":
    import time

    started = time.monotonic()
    wanted = [a for a in sys.argv[1:] if not a.startswith("-")]
    found = run_all(wanted or None)
    print(table(found))
    print()
    print(summary(found))
    print(f"({time.monotonic() - started:.1f} s)")
    if "-v" in sys.argv:
        for r in found:
            for failure in r.failures:
                print(failure)
