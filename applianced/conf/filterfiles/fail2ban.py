"""fail2ban filter.d compatibility: a fail2ban filter ``.conf`` file loaded into a :class:`Filter`.

Owns the reading of fail2ban's filter format: ``[INCLUDES]`` ``before``/``after`` (relative to
the including file's directory), ``NAME.local`` read after ``NAME.conf``, ``[DEFAULT]``,
``[Definition]`` and ``[Init]`` variables, ``%(name)s`` / ``%(section/name)s`` /
``%(known/name)s`` interpolation and fail2ban's ``<name>`` substitution (``<mdre-<mode>>``,
``<lt_<logtype>/__prefix_line>``), multi-line ``failregex``/``ignoreregex``, ``prefregex``,
filter options given as ``name[mode=aggressive]``. The tags (``<HOST>``, ``<F-USER>``,
``<F-NOFAIL>`` ...) are the same as our own and compiled by :class:`Filter`.

ARCHITECTURE. Called by the config loader (a jail's ``filter`` that is a path, or a name with
``filter_dir``) and by ``appliancectl test-filter``. Reads files, nothing else: no logging, no
DNS; compiling and matching is ``rules/filters.py``'s.

What fail2ban filters use that applianced does not do is a FilterError naming the file, the
line and the feature (multi-line matching: ``maxlines`` > 1, ``<SKIPLINES>``; a host tag in
``prefregex``), never a silent mismatch. Two things are reported as ``notes`` instead of
refused, because Debian's own filters use them: ``datepattern`` (the appliance takes time from
the syslog header; ``strip_date`` handles plain files) and failregexes without a host tag,
which in fail2ban only count through multi-line tracking by ``<F-MLFID>``; they are left out.

The file format is configparser's (``=``/``:``, indented continuation lines, ``#``/``;``
comments, ``;`` inline comments after whitespace); configparser reads it, with its own
interpolation off: fail2ban's ``%(section/name)s`` and ``<name>`` forms are resolved here.
"""

from __future__ import annotations

import configparser
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from applianced.errors import FilterError
from applianced.rules.filters import Filter

__all__ = [
    "F2bFilter",
    "is_fail2ban_filter",
    "load_fail2ban_filter",
    "parse_filter_spec",
    "resolve_fail2ban_filter",
    "strip_date",
]

_SPEC = re.compile(r"^\s*(?P<name>[^\[\]\s]+)\s*(?:\[(?P<args>.*)\])?\s*$", re.DOTALL)
_ARG = re.compile(
    r"""\s*(?P<key>[\w-]+)\s*=\s*(?P<value>"[^"]*"|'[^']*'|[^,]*?)\s*(?:,|$)""", re.DOTALL
)
_PERCENT = re.compile(r"%\((?P<name>[^)]+)\)s|%%|%")
_TAG_NAME = re.compile(r"(?<!\?P)<(?P<name>[^<>\s]+)>")
_ALONE = re.compile(r"^\s*(?:%\((?P<pct>[^)]+)\)s|<(?P<tag>[^<>\s]+)>)\s*$")
_MID_FLAGS = re.compile(r"(?<!\\)\(\?(?P<flags>[aiLmsux]+)\)")
_MAX_DEPTH = 60
_IGNORED = frozenset({"journalmatch", "datepattern", "maxlines", "mode", "logtype"})
_UNSUPPORTED_TAGS = {
    "SKIPLINES": "multi-line matching (<SKIPLINES>)",
}


@dataclass(frozen=True, slots=True)
class _Entry:
    """One option's value as one file set it; ``previous`` is what it overrode (``known/``)."""

    value: str
    path: Path
    line: int  # of the ``name =`` line
    value_lines: tuple[int, ...]  # the line of each non-empty line of the value
    previous: _Entry | None = None


@dataclass(frozen=True, slots=True)
class _Located:
    text: str
    path: Path
    line: int


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


# --- reading the files -----------------------------------------------------------------------


class _Sections:
    """Every section's options over the files read so far; later files override."""

    def __init__(self) -> None:
        self.sections: dict[str, dict[str, _Entry]] = {}
        self.files: list[Path] = []

    def read(self, path: Path, stack: tuple[Path, ...] = ()) -> None:
        """Read ``path`` with its ``before`` includes first and its ``after`` includes last."""
        path = path.resolve()
        if path in stack:
            chain = " -> ".join(str(p) for p in (*stack, path))
            raise FilterError(f"{path}: include loop: {chain}")
        text = _read_text(path)
        parser = configparser.RawConfigParser(
            interpolation=None,
            default_section="\x00",  # [DEFAULT] is an ordinary section here; merged below
            inline_comment_prefixes=(";",),
            strict=False,
            empty_lines_in_values=True,  # as fail2ban: a comment line does not end a value
        )
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        try:
            parser.read_string(text, source=str(path))
        except configparser.Error as exc:
            errors = getattr(exc, "errors", None)
            line = errors[0][0] if errors else getattr(exc, "lineno", None)
            at = f":{line}" if line else ""
            raise FilterError(f"{path}{at}: not a fail2ban filter file: {exc.message}") from None
        lines = _value_lines(text)
        includes = parser["INCLUDES"] if parser.has_section("INCLUDES") else {}
        for which in ("before", "after"):
            if which == "after":
                self._take(parser, path, lines)
            for name in str(includes.get(which, "")).split():
                target = path.parent / name
                if not target.exists():
                    if target.suffix == ".local":
                        continue  # an optional override that is not there
                    number = lines.get(("INCLUDES", which), (0, ()))[0]
                    raise FilterError(
                        f"{path}:{number}: [INCLUDES] {which} = {name}: no such file {target}"
                    )
                self.read(target, (*stack, path))

    def _take(
        self,
        parser: configparser.RawConfigParser,
        path: Path,
        lines: Mapping[tuple[str, str], tuple[int, tuple[int, ...]]],
    ) -> None:
        self.files.append(path)
        for section in parser.sections():
            if section == "INCLUDES":
                continue
            into = self.sections.setdefault(section, {})
            for option, value in parser.items(section, raw=True):
                line, value_lines = lines.get((section, option), (0, ()))
                into[option] = _Entry(value or "", path, line, value_lines, into.get(option))


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FilterError(f"{path}: cannot read the fail2ban filter: {exc}") from None


_HEADER = re.compile(r"^\[(?P<section>[^\]]+)\]")
_OPTION = re.compile(r"^(?P<name>[^\s=:][^=:]*?)\s*[=:]")


def _value_lines(text: str) -> dict[tuple[str, str], tuple[int, tuple[int, ...]]]:
    """Where each (section, option) is set, and the line of each non-empty line of its value,
    following configparser's rules (comment lines inside a value are skipped)."""
    out: dict[tuple[str, str], tuple[int, tuple[int, ...]]] = {}
    section = ""
    current: tuple[str, str] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        if raw[0].isspace() and current is not None:
            start, vals = out[current]
            out[current] = (start, (*vals, number))
            continue
        header = _HEADER.match(raw)
        if header:
            section, current = header.group("section"), None
            continue
        option = _OPTION.match(raw)
        if option:
            current = (section, option.group("name").strip())
            after = raw[option.end() :].split(" ;")[0].strip()
            out[current] = (number, (number,) if after else ())
    return out


# --- resolving variables ---------------------------------------------------------------------


class _Resolver:
    """fail2ban's two substitutions over the Definition section's view of the options.

    Precedence for a name: the filter options from the jail (``name[mode=...]``), ``[Init]``,
    then ``[Definition]``, then ``[DEFAULT]``. ``%(name)s`` and ``<name>`` both resolve names;
    a ``<TAG>`` that is no option (``<HOST>``, ``<F-USER>``) stays for the Filter.
    """

    def __init__(self, s: _Sections, options: Mapping[str, str], path: Path) -> None:
        self.s = s
        self.path = path
        self.options = dict(options)
        self.used: set[str] = set()

    def entry(self, name: str, section: str = "Definition") -> _Entry | None:
        if "/" in name:
            section, _, name = name.partition("/")
            if section == "known":  # the value before the one in force: an earlier file's,
                found = [  # or else the one of a section below (Definition -> DEFAULT)
                    e
                    for sec in ("Init", "Definition", "DEFAULT")
                    if (e := self.s.sections.get(sec, {}).get(name)) is not None
                ]
                if not found:
                    return None
                return found[0].previous or (found[1] if len(found) > 1 else None)
            got = self.s.sections.get(section, {}).get(name)
            return got or self.s.sections.get("DEFAULT", {}).get(name)
        for sec in ("Init", section, "DEFAULT"):
            got = self.s.sections.get(sec, {}).get(name)
            if got is not None:
                return got
        return None

    def known(self, name: str) -> bool:
        return name in self.options or self.entry(name) is not None

    def raw(self, name: str) -> tuple[str, Path, int]:
        if name in self.options:
            return self.options[name], self.path, 0
        e = self.entry(name)
        if e is None:
            raise FilterError(f"{self.path}: the filter uses %({name})s, which is not defined")
        return e.value, e.path, e.line

    def value(self, name: str, depth: int = 0) -> str:
        """``name`` with every substitution done."""
        if depth > _MAX_DEPTH:
            raise FilterError(f"{self.path}: {name!r} refers to itself (a substitution loop)")
        self.used.add(name.rpartition("/")[2])
        text, path, line = self.raw(name)
        return self.expand(text, path, line, depth + 1)

    def expand(self, text: str, path: Path, line: int, depth: int = 0) -> str:
        def percent(m: re.Match[str]) -> str:
            if m.group(0) == "%%":
                return "%"
            ref = m.group("name")
            if ref is None:
                raise FilterError(f"{path}:{line}: a lone '%' must be written '%%'")
            if not self.known(ref):
                raise FilterError(f"{path}:{line}: %({ref})s is not defined")
            return self.value(ref, depth)

        text = _PERCENT.sub(percent, text)
        for _ in range(_MAX_DEPTH):
            changed = False

            def tag(m: re.Match[str]) -> str:
                nonlocal changed
                ref = m.group("name")
                if not self.known(ref):
                    return m.group(0)
                changed = True
                return self.value(ref, depth)

            text = _TAG_NAME.sub(tag, text)
            if not changed:
                return text
        raise FilterError(f"{path}:{line}: substitutions do not end (a loop of <name> tags)")

    def lines(self, name: str) -> list[_Located]:
        """A multi-line option (failregex): one regex per line, each with its file and line.

        A line that is a lone ``%(x)s`` or ``<x>`` is replaced by x's own lines, so an error
        points at the line that wrote the regex."""
        if name not in self.options and self.entry(name) is None:
            return []
        self.used.add(name)
        vlines: tuple[int, ...] = ()
        if name in self.options:
            text, path = self.options[name], self.path
        else:
            e = self.entry(name)
            assert e is not None
            text, path, vlines = e.value, e.path, e.value_lines
        return self._lines(text, path, vlines, 0)

    def _lines(self, text: str, path: Path, vlines: tuple[int, ...], depth: int) -> list[_Located]:
        if depth > _MAX_DEPTH:
            raise FilterError(f"{path}: a substitution loop in a multi-line option")
        out: list[_Located] = []
        raw_lines = [ln for ln in text.split("\n") if ln.strip()]
        for i, raw in enumerate(raw_lines):
            line = vlines[i] if i < len(vlines) else (vlines[-1] if vlines else 0)
            alone = _ALONE.match(raw)
            if alone is not None:
                ref = alone.group("pct") or alone.group("tag")
                # <tag> may itself contain a <tag> (<mdre-<mode>>): resolve the inner ones first
                ref = self.expand(ref, path, line, depth) if "<" in ref else ref
                if ref is not None and self.known(ref) and ref not in self.options:
                    e = self.entry(ref)
                    assert e is not None
                    self.used.add(ref.rpartition("/")[2])
                    out.extend(self._lines(e.value, e.path, e.value_lines, depth + 1))
                    continue
            for piece in self.expand(raw, path, line, depth).split("\n"):
                if piece.strip():
                    out.append(_Located(piece.strip(), path, line))
        return out


# --- the loader ------------------------------------------------------------------------------


def load_fail2ban_filter(path: Path, options: Mapping[str, str] | None = None) -> F2bFilter:
    """Read a fail2ban filter file (and ``.local``, and their includes) into an F2bFilter.

    ``options`` are the jail's ``filter = name[option=value]`` options (``mode`` ...). Raises
    FilterError naming the file, the line and the feature for what applianced cannot honour.
    """
    path = Path(path)
    if not path.exists():
        raise FilterError(f"{path}: no such fail2ban filter file")
    sections = _Sections()
    sections.read(path)
    local = path.with_suffix(".local")
    if path.suffix == ".conf" and local.exists():
        sections.read(local)
    if "Definition" not in sections.sections:
        raise FilterError(f"{path}: no [Definition] section; is this a fail2ban filter?")
    r = _Resolver(sections, options or {}, path)
    notes: list[str] = []
    maxlines = r.entry("maxlines")
    if "maxlines" in r.options or maxlines is not None:
        value = r.value("maxlines").strip()
        at = f"{maxlines.path}:{maxlines.line}" if maxlines else str(path)
        if not value.isdigit():
            raise FilterError(f"{at}: maxlines = {value!r} is not a number")
        if int(value) > 1:
            raise FilterError(
                f"{at}: maxlines = {value}: multi-line matching is not supported by applianced "
                "(each syslog message is matched on its own)"
            )
    prefregex: str | None = None
    pref_where: tuple[Path, int] | None = None
    pref_lines = r.lines("prefregex")
    if pref_lines:
        if len(pref_lines) > 1:
            second = pref_lines[1]
            raise FilterError(
                f"{second.path}:{second.line}: prefregex must be one regex, not several"
            )
        prefregex = _fix_regex(pref_lines[0])
        pref_where = (pref_lines[0].path, pref_lines[0].line)
        if _has_host_tag(prefregex):
            raise FilterError(
                f"{pref_lines[0].path}:{pref_lines[0].line}: a host tag in prefregex (the "
                "address taken from the prefix) is not supported by applianced"
            )
    fail: list[_Located] = []
    for located in r.lines("failregex"):
        rx = _fix_regex(located)
        if not _has_host_tag(rx):
            notes.append(
                f"{located.path}:{located.line}: failregex without a host tag left out "
                f"(fail2ban needs multi-line tracking by <F-MLFID> for it): {located.text}"
            )
            continue
        fail.append(_Located(rx, located.path, located.line))
    if not fail:
        raise FilterError(f"{path}: no failregex with a host tag (<HOST>, <ADDR>, ...)")
    ignore = [_Located(_fix_regex(x), x.path, x.line) for x in r.lines("ignoreregex")]
    datepattern = None
    if r.known("datepattern"):
        datepattern = r.value("datepattern").strip() or None
        if datepattern and _DEFAULT_DATES.sub("", datepattern).strip():
            notes.append(
                f"datepattern {datepattern!r} not used: the time comes from the syslog header "
                "(test-filter strips syslog and ISO dates from plain files)"
            )
    for extra in sorted(set(r.options) - set(_all_names(sections)) - {"mode"}):
        notes.append(f"filter option {extra}={r.options[extra]!r} is used by no variable")
    programs = _programs(r)
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
    )


def _all_names(s: _Sections) -> Iterator[str]:
    for options in s.sections.values():
        yield from options


_DEFAULT_DATES = re.compile(r"\{\^?LN-BEG\}(?:TAI64N)?|\{DATE\}")
_HOST_TAG = re.compile(r"<(?:HOST|ADDR|IP4|IP6|CIDR|SUBNET|DNS)>")
_UPPER_TAG = re.compile(r"<(?P<tag>[A-Z][A-Z0-9_]*)>")


def _has_host_tag(regex: str) -> bool:
    return _HOST_TAG.search(regex) is not None


def _fix_regex(located: _Located) -> str:
    """Refuse unsupported tags; move a global flag such as ``(?i)`` written mid-pattern to the
    start, which is what it meant to the Pythons fail2ban filters were written for (3.11
    refuses it)."""
    rx = located.text
    for m in _UPPER_TAG.finditer(rx):
        feature = _UNSUPPORTED_TAGS.get(m.group("tag"))
        if feature is not None:
            raise FilterError(
                f"{located.path}:{located.line}: {feature} is not supported by applianced "
                "(each syslog message is matched on its own)"
            )
    flags = ""
    for m in _MID_FLAGS.finditer(rx):
        if m.start() > 0:
            flags += m.group("flags")
    if flags:
        rx = rx[0] + _MID_FLAGS.sub("", rx[1:]) if rx.startswith("(?") else _MID_FLAGS.sub("", rx)
        rx = f"(?{''.join(sorted(set(flags)))}){rx}"
    return rx


# --- programs from _daemon -------------------------------------------------------------------

_MAX_GLOBS = 32
_CLASS_ESCAPES = frozenset("wWdDsS")


def _programs(r: _Resolver) -> tuple[str, ...]:
    """App-name globs for ``_daemon`` when the filter's regexes use it, else () (every
    program). A glob is never narrower than the regex, so routing loses no line fail2ban
    would match at that place."""
    if "_daemon" not in r.used or not r.known("_daemon"):
        return ()
    globs = _globs(r.value("_daemon").strip())
    if not globs or any(g in ("", "*") for g in globs):
        return ()
    return tuple(dict.fromkeys(globs))


def _globs(regex: str) -> list[str] | None:
    """The fnmatch globs covering every string ``regex`` fully matches, or None when the regex
    is beyond this small translator (alternations, optional parts, classes, repeats)."""
    pos = 0

    def alternatives() -> list[str] | None:
        nonlocal pos
        out: list[str] = []
        while True:
            seq = sequence()
            if seq is None:
                return None
            out.extend(seq)
            if pos < len(regex) and regex[pos] == "|":
                pos += 1
                continue
            return out if len(out) <= _MAX_GLOBS else None

    def sequence() -> list[str] | None:
        nonlocal pos
        variants = [""]
        while pos < len(regex) and regex[pos] not in "|)":
            got = atom()
            if got is None:
                return None
            if pos < len(regex) and regex[pos] in "?*+":
                q = regex[pos]
                pos += 1
                if pos < len(regex) and regex[pos] in "?+":
                    pos += 1
                got = [*got, ""] if q == "?" else ["*"]
            elif pos < len(regex) and regex[pos] == "{":
                return None
            variants = [v + a for v in variants for a in got]
            if len(variants) > _MAX_GLOBS:
                return None
        return variants

    def atom() -> list[str] | None:
        nonlocal pos
        c = regex[pos]
        if c == "(":
            pos += 1
            if regex.startswith("?:", pos):
                pos += 2
            elif regex.startswith("?P<", pos):
                pos = regex.index(">", pos) + 1
            elif regex.startswith("?", pos):
                return None
            inner = alternatives()
            if inner is None or pos >= len(regex) or regex[pos] != ")":
                return None
            pos += 1
            return inner
        if c == "\\":
            nxt = regex[pos + 1 : pos + 2]
            pos += 2
            if nxt in _CLASS_ESCAPES:
                return ["?"]
            if not nxt or nxt.isalnum():
                return None
            return None if nxt in "*?[]" else [nxt]
        if c == "[":
            end = regex.find("]", pos + 2)
            if end < 0:
                return None
            pos = end + 1
            return ["?"]
        pos += 1
        if c == ".":
            return ["?"]
        if c in "^$":
            return [""]
        return [c]

    try:
        result = alternatives()
    except (ValueError, IndexError):
        return None
    return result if pos == len(regex) else None


# --- dates at the start of plain log lines -----------------------------------------------------

_DATES = re.compile(
    r"""^\s*(?:
        @[0-9a-f]{24}                                                   # TAI64N (daemontools)
      | (?:[A-Z][a-z]{2}\s+)?[A-Z][a-z]{2}\s+\d{1,2}\s+\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:\s+\d{4})?
      | \d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|\s?[+-]\d{2}:?\d{2})?  # ISO 8601
      | \d{4}/\d{2}/\d{2}\s+\d{2}:\d{2}:\d{2}
    )(?=\s|$)""",
    re.VERBOSE,
)
_BRACKETED = re.compile(
    r"^\s*\[(?:\d{1,2}[-/ ][A-Za-z]{3}[-/ ]\d{4}[ :]\d{2}:\d{2}:\d{2}(?:\s*[+-]\d{4})?"
    r"|\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|\s?[+-]\d{2}:?\d{2})?)\]"
)


def strip_date(line: str) -> str:
    """A plain log line without its leading date, as fail2ban presents it to a filter.

    Syslog (``Nov 22 10:00:01``), ISO 8601, ``YYYY/MM/DD hh:mm:ss`` and TAI64N dates are
    removed and the space after them kept (filters written ``^ `` or ``\\s*`` expect it); a
    bracketed date (``[12-Jul-2022 08:56:39 +0200]``) leaves ``[]``, which fail2ban's
    ``__date_ambit`` expects."""
    m = _DATES.match(line)
    if m is not None:
        return line[m.end() :]
    m = _BRACKETED.match(line)
    if m is not None:
        return "[]" + line[m.end() :]
    return line
