"""``appliancectl test-filter``'s arguments: which of the two is the LOG and which the FILTER
(ours, ``FILTER LOG``, or fail2ban-regex's, ``LOG REGEX``), and the filter they name, an inline
failregex among the rest, with an IGNOREREGEX added. Called by ``cli/testfilter.py``; reads
the config and filter files, as the config loader does (``conf/filterref.py``).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from applianced.cli.client import EXIT_USAGE, CliError
from applianced.conf.filterfiles.fail2ban import F2bFilter, resolve_fail2ban_filter
from applianced.conf.filterfiles.native import shipped_filter_names
from applianced.conf.filterref import UnknownFilterError, resolve_filter
from applianced.conf.load import load_config
from applianced.conf.paths import config_path
from applianced.errors import ConfigError, FilterError
from applianced.rules.filters import Filter
from applianced.rules.jail import jail_filter

__all__ = ["filter_of", "order_arguments"]

# A failregex given inline holds a host tag; a filter's name, a jail's or a file's path does not
# (a file's options may: "NAME.conf[...]" is a file).
_INLINE = re.compile(r"<(?:HOST|ADDR|IP4|IP6|CIDR|SUBNET|DNS)>")


def _is_log(arg: str) -> bool:
    """A log: ``-`` (stdin) or an existing file (a pipe such as ``<(zcat maillog.gz)`` too)."""
    path = Path(arg)
    return arg == "-" or (path.exists() and not path.is_dir())


def _is_filter_file(arg: str) -> bool:
    return arg.split("[", 1)[0].strip().endswith((".conf", ".local"))


def order_arguments(first: str, second: str) -> tuple[str, str]:
    """(FILTER, LOG) from the two positional arguments in either order: ours, ``FILTER LOG``, or
    fail2ban-regex's, ``LOG REGEX``. The LOG is the one that is ``-`` or an existing file; when
    both are files, the first is the filter unless the second is a fail2ban filter file
    (``.conf``, ``.local``)."""
    if _is_log(second) and not (_is_log(first) and _is_filter_file(second)):
        return first, second
    if _is_log(first):
        return second, first
    raise CliError(
        f"no log to read: neither {first!r} nor {second!r} is an existing file (or - for stdin); "
        "give the log file and the filter, in either order",
        EXIT_USAGE,
    )


def filter_of(
    spec: str, ignore: str | None, config_file: Path | None
) -> tuple[Filter, tuple[str, ...]]:
    """The filter to run and its programs: ``spec`` compiled (an inline failregex, a jail, a
    shipped filter or a fail2ban file), with ``ignore``'s ignoreregex added when given."""
    programs: tuple[str, ...] = ()  # an inline failregex reads every program
    try:
        if _INLINE.search(spec) and not _is_filter_file(spec):
            # Read as fail2ban-regex reads a failregex: on the whole line after its date.
            filt = Filter([spec], name="inline", on_line=True)
        else:
            filt, programs = _named_filter(spec, config_file)
        if ignore is None:
            return filt, programs
        return _with_ignoreregex(filt, _ignoreregex(ignore)), programs
    except FilterError as e:
        raise CliError(str(e), EXIT_USAGE) from None


def _named_filter(name: str, config_file: Path | None) -> tuple[Filter, tuple[str, ...]]:
    """FILTER is a jail of the config, else what a jail's ``filter`` could name (a path taken
    from the working directory); returns it compiled and its programs."""
    try:
        config = load_config(config_path(config_file))
    except ConfigError:
        config = None
    jail = config.jail(name) if config else None
    try:
        if jail is not None:
            return jail_filter(jail), jail.programs
        source = resolve_filter(name, None, Path.cwd())
        if isinstance(source, F2bFilter):
            for note in source.notes:
                print(f"note: {note}", file=sys.stderr)
        # As fail2ban-regex: a host name is reported as the name (a jail's usedns decides
        # whether the daemon resolves it).
        return source.compile(allow_dns=True), source.programs
    except UnknownFilterError:
        jails = ", ".join(j.name for j in config.jails) if config else "none (no config)"
        raise CliError(
            f"{name!r} is neither a jail ({jails}), a shipped filter "
            f"({', '.join(shipped_filter_names())}), a fail2ban filter file (a path to a .conf) "
            "nor a failregex (one holds a host tag: <HOST>, <ADDR> ...)",
            EXIT_USAGE,
        ) from None


def _ignoreregex(arg: str) -> tuple[str, ...]:
    """IGNOREREGEX: a fail2ban filter file's ignoreregexes (as fail2ban-regex takes one), else
    the regex itself."""
    if _is_filter_file(arg) and Path(arg.split("[", 1)[0].strip()).exists():
        return resolve_fail2ban_filter(arg, None, Path.cwd()).ignoreregex
    return (arg,)


def _with_ignoreregex(filt: Filter, more: tuple[str, ...]) -> Filter:
    """``filt`` with ``more`` ignoreregexes, searched in the same text as its failregexes."""
    return Filter(
        filt.failregex,
        (*filt.ignoreregex, *more),
        allow_dns=filt.allow_dns,
        name=filt.name,
        prefregex=filt.prefregex,
        on_line=filt.on_line,
        max_text=filt.max_text,
        dates=filt.dates,
    )
