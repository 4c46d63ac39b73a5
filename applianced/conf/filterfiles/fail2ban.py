"""fail2ban filter.d compatibility: a fail2ban filter ``.conf`` file loaded into a :class:`Filter`.

Owns building the filter from what fail2ban's format says: multi-line ``failregex``/
``ignoreregex``, ``prefregex``, filter options given as ``name[mode=aggressive]``. Reading the
files (includes, ``.local``, sections, ``%(name)s`` and ``<name>`` substitution) is
``f2bini.py``'s; the programs derived from ``_daemon``, ``f2bprograms.py``'s. The tags
(``<HOST>``, ``<F-USER>``, ``<F-NOFAIL>`` ...) are the same as our own and compiled by
:class:`Filter`.

Called by the config loader (a jail's ``filter`` that is a path, or a name with
``filter_dir``) and by ``appliancectl test-filter``. Reads files, nothing else: no logging, no
DNS; compiling and matching is ``rules/filters.py``'s.

Multi-line filters (``maxlines`` > 1 with ``<SKIPLINES>``, ``<F-MLFID>``) compile to a Filter
whose multi-line state ``rules/multiline.py`` keeps. What fail2ban filters use that applianced
does not do is a FilterError naming the file, the line and the feature, never a silent
mismatch. Failregexes without a host tag in a filter where no prefregex host or
``<F-MLFID>`` can give them an address are left out with a note.

``datepattern`` is read and checked here (a FilterError names its file and line) and applied by
``rules/dates.py``: a filter whose pattern is fail2ban's default has its date cut by the syslog
header in the daemon, and by test-filter in plain files; any other pattern (kerio's
``[%d/%b/%Y %H:%M:%S]``, dovecot's TAI64N) is the filter's own, cut from the text before
the failregexes run, in the daemon and in test-filter alike.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from applianced.conf.filterfiles.f2bini import Located, Resolver, Sections, all_names
from applianced.conf.filterfiles.f2bprograms import programs_of
from applianced.errors import FilterError
from applianced.rules.dates import date_finder, is_default_pattern
from applianced.rules.filters import Filter

__all__ = [
    "F2bFilter",
    "is_fail2ban_filter",
    "load_fail2ban_filter",
    "parse_filter_spec",
    "resolve_fail2ban_filter",
]

_SPEC = re.compile(r"^\s*(?P<name>[^\[\]\s]+)\s*(?:\[(?P<args>.*)\])?\s*$", re.DOTALL)
_ARG = re.compile(
    r"""\s*(?P<key>[\w-]+)\s*=\s*(?P<value>"[^"]*"|'[^']*'|[^,]*?)\s*(?:,|$)""", re.DOTALL
)
_MID_FLAGS = re.compile(r"(?<!\\)\(\?(?P<flags>[aiLmsux]+)\)")
# <SKIPLINES>: the rest of the line, then any whole lines, of the buffered maxlines; captured,
# so that a failure leaves the lines it skipped in the buffer (rules/multiline.py).
_SKIPLINES = r"<F-SKIPLINES>\n?(?:[^\n]*\n)*?</F-SKIPLINES>"
MAX_LINES = 100  # a maxlines above this is refused: every buffered line is searched again


@dataclass(frozen=True, slots=True)
class F2bFilter:
    """A fail2ban filter, fully resolved: regexes with our tags, ready to compile.

    ``programs`` are app-name globs derived from the filter's ``_daemon`` when its regexes use
    it (empty: every program). ``where`` holds the file and line of each failregex and then each
    ignoreregex, for error messages. ``notes`` lists what was read but is not applied.
    """

    name: str
    path: Path
    failregex: tuple[str, ...]
    ignoreregex: tuple[str, ...]
    prefregex: str | None
    programs: tuple[str, ...]
    datepattern: str | None
    notes: tuple[str, ...]
    files: tuple[Path, ...]
    where: tuple[tuple[Path, int], ...] = field(default=())
    prefregex_where: tuple[Path, int] | None = None
    maxlines: int = 1

    @property
    def own_dates(self) -> str | None:
        return None if is_default_pattern(self.datepattern) else self.datepattern

    def compile(self, allow_dns: bool = False) -> Filter:
        """The Filter (matched against ``message.line``); FilterError names file and line."""
        try:
            return Filter(
                self.failregex,
                self.ignoreregex,
                allow_dns=allow_dns,
                name=self.name,
                prefregex=self.prefregex,
                on_line=True,
                maxlines=self.maxlines,
                dates=None if self.own_dates is None else date_finder(self.own_dates),
            )
        except FilterError as exc:
            raise self._locate(exc, allow_dns) from None

    def _locate(self, exc: FilterError, allow_dns: bool) -> FilterError:
        """Find the regex at fault by compiling each alone, and name its file and line."""
        tries: list[tuple[tuple[Path, int] | None, dict[str, object]]] = []
        if self.prefregex is not None:
            tries.append((self.prefregex_where, {"prefregex": self.prefregex}))
        n = len(self.failregex)
        for i, rx in enumerate(self.failregex):
            tries.append((self.where[i] if i < len(self.where) else None, {"failregex": [rx]}))
        for i, rx in enumerate(self.ignoreregex):
            at = self.where[n + i] if n + i < len(self.where) else None
            tries.append((at, {"ignoreregex": [rx]}))
        for at, kw in tries:
            fail = kw.get("failregex", ["<HOST>"])
            if "failregex" in kw and self.prefregex is not None:
                kw["prefregex"] = self.prefregex  # a failregex may take its host from it
            ignore = kw.get("ignoreregex", [])
            pref = kw.get("prefregex")
            try:
                Filter(
                    fail,  # type: ignore[arg-type]
                    ignore,  # type: ignore[arg-type]
                    allow_dns=allow_dns,
                    name=self.name,
                    prefregex=pref,  # type: ignore[arg-type]
                )
            except FilterError as one:
                where = f"{at[0]}:{at[1]}" if at else str(self.path)
                return FilterError(f"{where}: {one}")
        return FilterError(f"{self.path}: {exc}")


# --- the filter spec: NAME[opt=value, ...] or a path -----------------------------------------


def is_fail2ban_filter(spec: str) -> bool:
    """Whether a jail's ``filter`` value names a fail2ban file by path (not a shipped name)."""
    name = parse_filter_spec(spec)[0] if "[" in spec else spec.strip()
    return "/" in name or name.endswith((".conf", ".local"))


def parse_filter_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``postfix[mode=aggressive, publickey="invalid"]`` -> ("postfix", {"mode": ...})."""
    m = _SPEC.match(spec)
    if m is None:
        raise FilterError(f"filter {spec!r}: expected NAME or NAME[option=value, ...]")
    options: dict[str, str] = {}
    args = m.group("args")
    if args is not None and args.strip():
        pos = 0
        while pos < len(args):
            a = _ARG.match(args, pos)
            if a is None or a.end() == pos:
                raise FilterError(
                    f"filter {spec!r}: cannot read the options at {args[pos:]!r}; "
                    "write NAME[option=value, ...]"
                )
            value = a.group("value")
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            options[a.group("key")] = value
            pos = a.end()
    return m.group("name"), options


def resolve_fail2ban_filter(spec: str, filter_dir: Path | None, base: Path) -> F2bFilter:
    """A jail's filter: a path to a ``.conf`` (relative to ``base``), or a name in ``filter_dir``;
    either may carry ``[option=value, ...]``."""
    name, options = parse_filter_spec(spec)
    path = Path(name)
    if not is_fail2ban_filter(name):
        if filter_dir is None:
            raise FilterError(f"filter {spec!r}: give a path to a .conf file or set filter_dir")
        path = filter_dir / f"{name}.conf"
    if not path.is_absolute():
        path = base / path
    return load_fail2ban_filter(path, options)


# --- the loader ------------------------------------------------------------------------------


def load_fail2ban_filter(path: Path, options: Mapping[str, str] | None = None) -> F2bFilter:
    """Read a fail2ban filter file (and ``.local``, and their includes) into an F2bFilter.

    ``options`` are the jail's ``filter = name[option=value]`` options (``mode`` ...). Raises
    FilterError naming the file, the line and the feature for what applianced cannot honour.
    """
    path = Path(path)
    if not path.exists():
        raise FilterError(f"{path}: no such fail2ban filter file")
    sections = Sections()
    sections.read(path)
    local = path.with_suffix(".local")
    if path.suffix == ".conf" and local.exists():
        sections.read(local)
    if "Definition" not in sections.sections:
        raise FilterError(f"{path}: no [Definition] section; is this a fail2ban filter?")
    options = dict(options or {})
    notes: list[str] = []
    if options.get("logtype") == "rfc5424":
        # The daemon and test-filter hand every filter the traditional line, whatever the wire
        # format: an RFC 5424 message too ("<38>1 ... host app 57915 - - msg" is read as
        # "host app[57915]: msg"), so the file form of __prefix_line is the one that fits.
        options["logtype"] = "file"
        notes.append("logtype=rfc5424 read as file: filters see 'host app[pid]: msg' lines")
    r = Resolver(sections, options, path)
    maxlines = _maxlines(r, path)
    prefregex, pref_where = _prefregex(r)
    hostless_ok = prefregex is not None and (_has_host_tag(prefregex) or "<F-MLFID>" in prefregex)
    fail = _failregexes(r, notes, hostless_ok)
    if not fail:
        raise FilterError(f"{path}: no failregex with a host tag (<HOST>, <ADDR>, ...)")
    ignore = [Located(_fix_regex(x), x.path, x.line) for x in r.lines("ignoreregex")]
    datepattern = _datepattern(r)
    for extra in sorted(set(r.options) - set(all_names(sections)) - {"mode"}):
        notes.append(f"filter option {extra}={r.options[extra]!r} is used by no variable")
    programs = programs_of(r)
    return F2bFilter(
        name=path.stem,
        path=path,
        failregex=tuple(x.text for x in fail),
        ignoreregex=tuple(x.text for x in ignore),
        prefregex=prefregex,
        programs=programs,
        datepattern=datepattern,
        notes=tuple(notes),
        files=tuple(sections.files),
        where=tuple((x.path, x.line) for x in (*fail, *ignore)),
        prefregex_where=pref_where,
        maxlines=maxlines,
    )


def _maxlines(r: Resolver, path: Path) -> int:
    """The lines a multi-line failregex may span (1 when not set)."""
    maxlines = r.entry("maxlines")
    if "maxlines" not in r.options and maxlines is None:
        return 1
    value = r.value("maxlines").strip()
    at = f"{maxlines.path}:{maxlines.line}" if maxlines else str(path)
    if not value.isdigit() or not 1 <= int(value) <= MAX_LINES:
        raise FilterError(f"{at}: maxlines = {value!r}: give a number of lines, 1 to {MAX_LINES}")
    return int(value)


def _prefregex(r: Resolver) -> tuple[str | None, tuple[Path, int] | None]:
    """The filter's prefregex, if any, and where it is set."""
    pref_lines = r.lines("prefregex")
    if not pref_lines:
        return None, None
    if len(pref_lines) > 1:
        second = pref_lines[1]
        raise FilterError(f"{second.path}:{second.line}: prefregex must be one regex, not several")
    first = pref_lines[0]
    return _fix_regex(first), (first.path, first.line)


def _failregexes(r: Resolver, notes: list[str], hostless_ok: bool) -> list[Located]:
    """The failregexes; those without a host tag are left out with a note unless the
    prefregex gives them an address (its host tag, or the multi-line state by <F-MLFID>)."""
    fail: list[Located] = []
    for located in r.lines("failregex"):
        rx = _fix_regex(located)
        if not (hostless_ok or _has_host_tag(rx) or "<F-MLFID>" in rx):
            notes.append(
                f"{located.path}:{located.line}: failregex without a host tag left out "
                f"(no prefregex host or <F-MLFID> can give it an address): {located.text}"
            )
            continue
        fail.append(Located(rx, located.path, located.line))
    return fail


def _datepattern(r: Resolver) -> str | None:
    """The filter's datepattern, checked: a FilterError names where it is set and what is
    wrong."""
    if not r.known("datepattern"):
        return None
    datepattern = r.value("datepattern").strip() or None
    try:
        date_finder(datepattern)
    except FilterError as e:
        at = r.entry("datepattern")
        raise FilterError(f"{at.path}:{at.line}: {e}" if at else f"{r.path}: {e}") from None
    return datepattern


_HOST_TAG = re.compile(r"<(?:HOST|ADDR|IP4|IP6|CIDR|SUBNET|DNS|F-IP4|F-IP6|F-ADDR|F-DNS)>")


def _has_host_tag(regex: str) -> bool:
    return _HOST_TAG.search(regex) is not None


def _fix_regex(located: Located) -> str:
    """Substitute ``<SKIPLINES>``; move a global flag such as ``(?i)`` written mid-pattern to
    the start, which is what it meant to the Pythons fail2ban filters were written for (3.11
    refuses it)."""
    rx = located.text.replace("<SKIPLINES>", _SKIPLINES)
    flags = ""
    for m in _MID_FLAGS.finditer(rx):
        if m.start() > 0:
            flags += m.group("flags")
    if flags:
        rx = rx[0] + _MID_FLAGS.sub("", rx[1:]) if rx.startswith("(?") else _MID_FLAGS.sub("", rx)
        rx = f"(?{''.join(sorted(set(flags)))}){rx}"
    return rx
