"""``appliancectl test-filter``: a shipped filter, a jail of the config, a fail2ban ``.conf`` or an
inline failregex over a log file, offline, with fail2ban-regex's habits: its argument order
(``LOG REGEX [IGNOREREGEX]``) as well as ours (``FILTER LOG``), its ``--print-all-*`` lists and
a report in the shape of its own. The filter is found as the config loader finds a jail's
(``conf/filterref.py``); the lines go through the daemon's own routing and parser.
``parser.py`` dispatches here; ``filterargs.py`` tells the filter from the log,
``filterhint.py`` says why a filter matched nothing. Dates: a
syslog line's header is its date; a plain line's is found and cut by ``rules/dates.py`` (the
filter's own ``datepattern``, else fail2ban's default forms), and the report says which form
dated how many lines.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from applianced.cli.client import EXIT_USAGE, CliError
from applianced.cli.filterargs import filter_of, order_arguments
from applianced.cli.filterhint import why_missed
from applianced.errors import ApplianceError
from applianced.receiver.parse import Dropped, escape_controls, parse_routed
from applianced.rules.dates import DateHit, default_dates
from applianced.rules.engine import GateCache
from applianced.rules.filters import Filter, Outcome
from applianced.rules.jail import ProgramSelector
from applianced.rules.message import SyslogMessage
from applianced.rules.multiline import MultiLine
from applianced.units import plural

__all__ = ["cmd_test_filter"]


def _open_log(source: str) -> IO[bytes]:
    """The log file as bytes, or stdin for ``-``."""
    return sys.stdin.buffer if source == "-" else open(source, "rb")


def _subject(
    filt: Filter, raw: bytes, message: SyslogMessage | None
) -> tuple[str, str | None, DateHit | None] | None:
    """The text ``filt`` examines in a log line (``message`` is it parsed, None if
    unparsable), the line's program and its date; None if unparsable.

    A fail2ban filter gets the line as fail2ban would: the date cut off (syslog lines go
    through our parser, so both read the same ``host app[pid]: msg``), other lines with their
    control characters escaped as the parser escapes them and their date cut: by the filter
    itself when it has a datepattern of its own, else here with fail2ban's default forms. A
    line without a host name field (``pop3-login: Info: ...``, ``[sshd]: ...``, as a program's
    own log file writes them) is such another line, read whatever its first word: it names no
    syslog program to route by, and ``__prefix_line`` takes it as is."""
    if not filt.on_line:
        if message is None:
            return None
        text = message.msg
        return text, message.app_name, filt.dates.find(text) if filt.dates else None
    if (
        message is not None
        and message.timestamp is not None
        and message.hostname
        and message.app_name
    ):
        text = " " + message.line
        if filt.dates is not None:
            return text, message.app_name, filt.dates.find(text)
        return text, message.app_name, _HEADER
    text = _decoded(raw)
    if filt.dates is not None:
        return text, None, filt.dates.find(text)
    hit = default_dates().find(text)
    if hit is not None:
        text = text[: hit.start] + text[hit.end :]
    return text, None, hit


def _decoded(raw: bytes) -> str:
    return escape_controls(raw).decode("utf-8", "replace")


# A syslog line's date is its header's, which the parser read; its time, as written, is looked
# up only for a failure that --json prints (a date search a line costs a fifth of the rate).
_HEADER = DateHit(0, 0, "", None, "the syslog header")


def _time_of(dated: DateHit | None, raw: bytes) -> str | None:
    """The time of a failure's line for --json, as written (ISO 8601), or None."""
    if dated is _HEADER:
        dated = default_dates().find(_decoded(raw))
    return None if dated is None or dated.when is None else dated.when.isoformat()


def _progress(source: str) -> tuple[Progress, TaskID] | None:
    """A progress bar on stderr for a big file when stderr is a terminal."""
    if source == "-" or not sys.stderr.isatty():
        return None
    try:
        size = Path(source).stat().st_size
    except OSError:
        return None
    if size < _PROGRESS_MIN_BYTES:
        return None
    bar = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    return bar, bar.add_task(Path(source).name, total=size)


_PROGRESS_MIN_BYTES = 8 << 20


def _advancing(lines: Iterable[bytes], bar: Progress, task: TaskID) -> Iterator[bytes]:
    """``lines`` unchanged, moving the progress bar every 8192 lines (only on a terminal: off
    it, the log is read without this generator in the way)."""
    done = 0
    for number, raw in enumerate(lines, start=1):
        done += len(raw)
        if number % 8192 == 0:
            bar.update(task, completed=done)
        yield raw


def cmd_test_filter(args: argparse.Namespace) -> None:
    # Kept whole, over 60 lines: the loop runs once a line of logs of millions of lines, and its
    # locals and plain counters are what bench/filters.py measures (no call per line).
    spec, log = order_arguments(args.first, args.second)
    filt, programs = filter_of(spec, args.ignoreregex, args.config)
    selects = ProgramSelector(programs)
    # The common syslog shape only: a line of another shape is parsed whole, ungated, and
    # _subject reads it (a log file's own line has no program to route by).
    gate = GateCache(
        lambda tag: filt.needles if selects(tag.decode("utf-8", "replace")) else None
    ).__getitem__
    now = datetime.now(UTC)
    # Plain counters, not a dict: the loop below runs once a line of a log of millions.
    matched = ignored = missed = other_program = blank = 0
    per_regex: dict[int, int] = {}
    dates: dict[str, int] = {}
    header_dated = 0
    # The lines listed (number, raw line), as many as _keeps says.
    matched_lines: list[tuple[int, bytes]] = []
    missed_lines: list[tuple[int, bytes]] = []
    ignored_lines: list[tuple[int, bytes]] = []
    want_json = args.json
    want_line = args.print_all_matched and want_json
    keep_matched, keep_missed, keep_ignored = _keeps(args)
    progress = _progress(log)
    # A multi-line filter keeps its state over the whole file (one source); in the daemon,
    # per sender, program and pid.
    lines_state = MultiLine(filt) if filt.multiline else None
    started = time.monotonic()
    number = 0
    try:
        if progress is not None:
            progress[0].start()
        with _open_log(log) as stream:
            lines = stream if progress is None else _advancing(stream, *progress)
            for number, raw in enumerate(lines, start=1):
                # Most lines of a mail log are other programs', or lack every literal the
                # filter needs: known from the bytes alone, as in the daemon. parse_routed cuts
                # the line end itself, and a line it drops has the common syslog shape, so is
                # not blank: the blank test and the strip wait for the lines it keeps.
                try:
                    routed = parse_routed(raw, gate, now, gate_other_shapes=False)
                except ApplianceError:
                    routed = None
                if routed is Dropped.UNREAD:
                    other_program += 1
                    continue
                if routed is Dropped.HOPELESS:
                    missed += 1
                    if missed <= keep_missed:
                        missed_lines.append((number, raw))
                    continue
                raw = raw.rstrip(b"\r\n")
                if not raw.strip():
                    blank += 1
                    continue
                subject = _subject(filt, raw, routed)
                if subject is None:
                    missed += 1
                    if missed <= keep_missed:
                        missed_lines.append((number, raw))
                    continue
                text, app_name, dated = subject
                if app_name is not None and not selects(app_name):
                    other_program += 1
                    continue
                if dated is _HEADER:  # most lines: a counter, not a dict update
                    header_dated += 1
                else:
                    form = "none" if dated is None else dated.form
                    dates[form] = dates.get(form, 0) + 1
                if lines_state is None:
                    outcome, match, index = filt.examine(text, prefilter=True)
                else:
                    outcome, match, index = lines_state.feed(None, text, 0.0)
                if outcome is Outcome.MATCHED and match is not None:
                    matched += 1
                    per_regex[index or 0] = per_regex.get(index or 0, 0) + 1
                    if matched <= keep_matched:
                        matched_lines.append((number, raw))
                    if want_json:
                        # What the daemon bans: the canonical address (::ffff:192.0.2.1 is
                        # 192.0.2.1), or the name a usedns jail resolves.
                        host = match.host if match.address is None else str(match.address)
                        row: dict[str, Any] = {"lineno": number, "host": host}
                        if match.user is not None:
                            row["user"] = match.user
                        when = _time_of(dated, raw)
                        if when is not None:
                            row["time"] = when
                        if want_line:
                            row["line"] = _shown(raw)
                        print(json.dumps(row))
                elif outcome is Outcome.IGNORED:
                    ignored += 1
                    if ignored <= keep_ignored:
                        ignored_lines.append((number, raw))
                else:
                    missed += 1
                    if missed <= keep_missed:
                        missed_lines.append((number, raw))
    except OSError as e:
        raise CliError(f"cannot read {log}: {e}", EXIT_USAGE) from None
    finally:
        if progress is not None:
            progress[0].stop()
    elapsed = time.monotonic() - started
    if header_dated:
        dates[_HEADER.form] = header_dated
    counts = {
        "lines": number - blank,
        "matched": matched,
        "ignored": ignored,
        "missed": missed,
        "other_program": other_program,
    }
    listed = {"matched": matched_lines, "ignored": ignored_lines, "missed": missed_lines}
    _finish(args, spec, filt, now, elapsed, counts, dates, per_regex, listed)


_FEW = 20


def _keeps(args: argparse.Namespace) -> tuple[int, int, int]:
    """How many matched, missed and ignored lines to keep for the lists: all those asked for
    (matched ones go in --json's rows instead), else the first _FEW missed and ignored ones
    (fail2ban-regex lists that many unasked, and a hint is looked for in them)."""
    return (
        sys.maxsize if args.print_all_matched and not args.json else 0,
        sys.maxsize if args.print_all_missed else _FEW,
        sys.maxsize if args.print_all_ignored else _FEW,
    )


def _finish(
    args: argparse.Namespace,
    spec: str,
    filt: Filter,
    now: datetime,
    elapsed: float,
    counts: dict[str, int],
    dates: dict[str, int],
    per_regex: dict[int, int],
    listed: dict[str, list[tuple[int, bytes]]],
) -> None:
    """The summary on stderr, then the report or --json's tail, with the hint when nothing
    matched."""
    rate = counts["lines"] / elapsed if elapsed > 0 else 0.0
    summary = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items())
    print(f"{spec}: {summary} ({rate:,.0f} lines/s)", file=sys.stderr)
    print(f"dates of the lines examined: {_dates(dates)}", file=sys.stderr)
    hint = None if counts["matched"] else why_missed(filt, listed["missed"][:_FEW], now)
    if args.json:
        _json_tail(args, listed, counts, dates, hint)
    else:
        _report(filt, per_regex, counts, dates, listed, hint)


def _dates(dates: dict[str, int]) -> str:
    """Which date form dated how many lines, most first (``none``: no date found)."""
    ranked = sorted(dates.items(), key=lambda kv: -kv[1])
    return "; ".join(f"{n} by {form}" for form, n in ranked) or "no line examined"


def _shown(raw: bytes) -> str:
    """A log line as the lists print it: its control characters escaped, as filters read them
    (and harmless to a terminal)."""
    return escape_controls(raw.rstrip(b"\r\n")).decode("utf-8", "replace")


def _json_tail(
    args: argparse.Namespace,
    listed: dict[str, list[tuple[int, bytes]]],
    counts: dict[str, int],
    dates: dict[str, int],
    hint: str | None,
) -> None:
    """After the failures: the missed and ignored lines asked for, one object each, then the
    summary (its counts, which date form dated how many lines, the hint)."""
    for outcome, wanted in (
        ("ignored", args.print_all_ignored),
        ("missed", args.print_all_missed),
    ):
        for number, raw in listed[outcome] if wanted else ():
            print(json.dumps({"lineno": number, "outcome": outcome, "line": _shown(raw)}))
    print(json.dumps({"summary": {**counts, "dates": dates, "hint": hint}}))
    if hint is not None:
        print(f"hint: {hint}", file=sys.stderr)


def _report(
    filt: Filter,
    per_regex: dict[int, int],
    counts: dict[str, int],
    dates: dict[str, int],
    listed: dict[str, list[tuple[int, bytes]]],
    hint: str | None,
) -> None:
    """The human report, in the shape of fail2ban-regex's."""
    print(f"Failregex: {counts['matched']} total")
    print("|- #) [# of hits] regular expression")
    for index, regex in enumerate(filt.failregex):
        print(f"|  failregex #{index + 1}: [{plural(per_regex.get(index, 0), 'hit')}] {regex}")
    print(f"`- Ignored (ignoreregex or a <F-NOFAIL> hit): {counts['ignored']} total")
    for index, regex in enumerate(filt.ignoreregex):
        print(f"   ignoreregex #{index + 1}: {regex}")
    if filt.prefregex is not None:
        print(f"prefregex: {filt.prefregex}")
    print("\nDate template hits:\n|- [# of hits] date format")
    for form, n in sorted(dates.items(), key=lambda kv: -kv[1]):
        print(f"|  [{n}] {form}")
    print("`-\n")
    print(
        f"Lines: {plural(counts['lines'], 'line')}, {counts['ignored']} ignored, "
        f"{counts['matched']} matched, {counts['missed']} missed, "
        f"{counts['other_program']} of other programs"
    )
    for outcome, lines in listed.items():
        total = counts[outcome]
        if not total or (outcome == "matched" and not lines):
            continue
        if len(lines) < total:
            print(
                f"{outcome.capitalize()} line(s): too many to print. "
                f"Use --print-all-{outcome} to print all {total} lines"
            )
            continue
        print(f"|- {outcome.capitalize()} line(s):")
        for number, raw in lines:
            print(f"|  {number}: {_shown(raw)}")
        print("`-")
    if hint is not None:
        print(f"hint: {hint}")
