"""Filters: compiled failregex/ignoreregex sets that turn a message's text into a failure address.

This module owns compiling a filter's regexes and matching a text against them, behind the
literal prefilter that keeps the hot path cheap (the tags, ``<HOST>`` & co., are expanded by
``rules/tags.py``; the literals come from ``rules/literals.py``). The engine calls
:meth:`Filter.match` once per routed message; the offline ``appliancectl test-filter`` calls
:meth:`Filter.examine`; the filter-file readers of ``conf/filterfiles/`` (native TOML, fail2ban
``.conf``) build Filters from what they read.

Pure: no I/O (reading filter files is ``conf/filterfiles/``'s job), no logging, no DNS. A
hostname captured by ``<HOST>`` (only with ``allow_dns``) comes back unresolved, with
``Match.address`` None; resolving it is the caller's business, off the hot path.

Semantics: every regex is searched in the message text: the syslog MSG part for our filters, the
traditional ``host app[pid]: msg`` line for fail2ban filters (``on_line``), or the ``<F-CONTENT>``
part of it when a ``prefregex`` is set. Filters whose regexes all compile under RE2 run there
(``rules/regex.py``), the others under ``re``, every text cut at ``MAX_TEXT``. A message is a
failure when some failregex matches, with a capture that is a valid address, and no ignoreregex
matches. Failregexes are tried in order; the first one that matches decides the address: of
several host tags in it, the one that took part; without one, the prefregex's. ``maxlines`` and
``<F-MLFID>`` filters (``multiline``) are matched through ``rules/multiline.py``, which keeps
the lines before.

Over 400 lines and kept whole: compiling and matching share the Filter's state (the compiled
sets, the prefilter, each regex's tag reader); tags, literals, the regex engine, dates and
multi-line state are modules of their own.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Mapping, Sequence
from enum import StrEnum
from types import MappingProxyType
from typing import NamedTuple

from applianced.errors import FilterError
from applianced.rules.addresses import canonical_address
from applianced.rules.dates import DateFinder
from applianced.rules.decision import IPAddress
from applianced.rules.literals import required_literal
from applianced.rules.regex import MAX_TEXT, MatchLike, Pattern, compile_re2
from applianced.rules.tags import Expansion, Reader, expand, host_tag_problem, reader_of

__all__ = [
    "MAX_TEXT",
    "Filter",
    "Match",
    "Outcome",
]

_NO_FIELDS: Mapping[str, str] = MappingProxyType({})

MIN_LITERAL = 3  # a shorter required literal is in nearly every line: not worth a prefilter


# --- values -------------------------------------------------------------------------------------


class Match(NamedTuple):
    """What a failregex captured from one message (a tuple: one is built per failure, and a
    frozen dataclass costs twice as much to build).

    ``host`` is the text as captured; ``address`` is it parsed (IPv4-mapped IPv6 addresses come
    back as IPv4), or None when the capture is a hostname (only possible with ``allow_dns``).
    ``user`` is the ``<F-USER>`` capture; ``fields`` the other named captures, keyed by the tag's
    name in lower case (``<F-ID>`` -> ``"id"``) or by the group's name for plain ``(?P<name>...)``.
    ``prefix`` is the prefix length a ``<CIDR>``/``<SUBNET>`` tag captured (``/24``): the
    failure is then the whole network, not the address alone.
    """

    host: str
    address: IPAddress | None
    user: str | None
    fields: Mapping[str, str]
    prefix: int | None = None


class Outcome(StrEnum):
    """What :meth:`Filter.examine` concluded about one message."""

    MATCHED = "matched"  # a failregex matched and no ignoreregex did: a failure
    IGNORED = "ignored"  # a failregex matched but an ignoreregex did too: not a failure
    MISSED = "missed"  # no failregex matched


# --- the filter ----------------------------------------------------------------------------------


class Filter:
    """A compiled set of failregexes and ignoreregexes (see the module docstring for semantics).

    Raises FilterError, naming the filter, the regex (``failregex #N``, 1-based) and the reason,
    when a regex is invalid or a failregex has no host tag (``<HOST>``, ``<ADDR>``, ``<IP4>``,
    ``<F-IP4>``...) while neither a host tag in ``prefregex`` nor ``<F-MLFID>`` (multi-line,
    ``rules/multiline.py``) can give it an address.

    ``literals`` holds, for each failregex, a substring every match of it contains (see
    :func:`required_literal`); it is empty when some failregex has no such literal of at least
    three characters. :meth:`match` first checks that one of them is in the text, then runs
    only the failregexes whose own literal is there. (Joining all failregexes into one
    alternation was measured too: with this prefilter in front it gained nothing.) ``needles``
    are the same literals as UTF-8 bytes, for the listeners' routing gate (``Engine.gate``),
    which tests a message before decoding it; empty when ``literals`` is, or when a literal
    holds U+FFFD. Each ignoreregex is run only when its own required literal is in the text.

    ``prefregex`` (fail2ban's): when set, a text is only examined if it matches, and the
    failregexes and ignoreregexes then run on its ``<F-CONTENT>...</F-CONTENT>`` capture.
    ``on_line`` says which text of a message the filter is written for: False (native filters)
    the syslog MSG, True (fail2ban filters) the traditional ``host app[pid]: msg`` line.
    ``dates`` (a filter's ``datepattern``, ``rules/dates.py``): the date it finds in a text is
    cut out before prefregex and failregexes run, as fail2ban does; only texts that pass the
    literal prefilter pay for it, and filters without a datepattern not at all.

    ReDoS guard (see regex.py): with ``engine="auto"`` every regex runs under RE2, in time linear
    in the text, when all of the filter's regexes compile there; ``engine`` then reads ``"re2"``,
    else ``"re"``. Either way a regex sees at most the first ``max_text`` characters of a text.
    """

    __slots__ = (
        "_fail",
        "_ignore",
        "_pref",
        "_pref_reader",
        "allow_dns",
        "dates",
        "engine",
        "failregex",
        "ignoreregex",
        "literals",
        "max_text",
        "maxlines",
        "mlfid",
        "name",
        "needles",
        "on_line",
        "prefregex",
    )

    def __init__(
        self,
        failregex: Sequence[str],
        ignoreregex: Sequence[str] = (),
        *,
        allow_dns: bool = False,
        name: str = "",
        prefregex: str | None = None,
        on_line: bool = False,
        engine: str = "auto",
        max_text: int = MAX_TEXT,
        maxlines: int = 1,
        dates: DateFinder | None = None,
    ) -> None:
        if isinstance(failregex, str) or isinstance(ignoreregex, str):
            raise TypeError("failregex and ignoreregex are sequences of regexes, not one string")
        self.name = name
        self.allow_dns = allow_dns
        self.on_line = on_line
        self.prefregex = prefregex
        self.max_text = max_text
        self.maxlines = maxlines
        self._pref: Pattern | None = None
        # The prefregex's captures when it has a host tag or an <F-MLFID>: a failregex without
        # a host tag then takes the prefix's address, or the multi-line state's (multiline.py).
        self._pref_reader: Reader | None = None
        if prefregex is not None:
            self._pref, self._pref_reader = self._compile_pref(prefregex)
        self.mlfid = self._pref is not None and "mlfid" in self._pref.groupindex
        self.dates = dates
        self.failregex: tuple[str, ...] = tuple(failregex)
        self.ignoreregex: tuple[str, ...] = tuple(ignoreregex)
        if not self.failregex:
            raise FilterError(f"{self._who()}: no failregex; a filter needs at least one")
        self._fail = self._compile_fail()
        # Each ignoreregex with its required literal ("" when none): a failure's text without
        # the literal cannot match it, and most failures are no exception.
        self._ignore: tuple[tuple[str, Pattern], ...] = tuple(
            self._compile_ignore(number, regex)
            for number, regex in enumerate(self.ignoreregex, start=1)
        )
        if engine not in ("auto", "re"):
            raise ValueError(f"engine is 'auto' or 're', not {engine!r}")
        self.engine = "re2" if engine == "auto" and self._use_re2() else "re"
        lits = tuple(literal for literal, _, _ in self._fail)
        self.literals: tuple[str, ...] = (
            lits if all(len(lit) >= MIN_LITERAL for lit in lits) else ()
        )
        # The literals as UTF-8, for a gate that tests a message before decoding it: a literal
        # is in the decoded text only if these bytes are in the message (a U+FFFD in the text
        # may stand for any invalid bytes, so a literal holding one gives no such test). Empty
        # with maxlines > 1: a line without them may be the first of a multi-line failure.
        self.needles: tuple[bytes, ...] = (
            tuple(lit.encode() for lit in self.literals)
            if maxlines == 1 and not any("\ufffd" in lit for lit in self.literals)
            else ()
        )

    def _compile_fail(self) -> tuple[tuple[str, Pattern, Reader], ...]:
        """Each failregex with its required literal and its reader. One with an <F-MLFID>
        makes the filter multi-line; one without a host tag is refused unless the prefregex
        or the multi-line state gives the address."""
        fail: list[tuple[str, Pattern, Reader]] = []
        for number, regex in enumerate(self.failregex, start=1):
            expansion = self._expand("failregex", number, regex)
            compiled = self._re_compile("failregex", number, regex, expansion)
            self.mlfid = self.mlfid or "mlfid" in compiled.groupindex
            if not expansion.host_tags and self._pref_reader is None and not self.mlfid:
                raise self._error("failregex", number, regex, host_tag_problem())
            literal = required_literal(expansion.text)
            fail.append((literal, compiled, reader_of(compiled, expansion, self.allow_dns)))
        return tuple(fail)

    @property
    def multiline(self) -> bool:
        """Whether a line's outcome depends on lines before it (``rules/multiline.py``)."""
        return self.maxlines > 1 or self.mlfid

    def __repr__(self) -> str:
        return (
            f"Filter(name={self.name!r}, failregex={len(self.failregex)}, "
            f"ignoreregex={len(self.ignoreregex)}, allow_dns={self.allow_dns})"
        )

    # The hot path: most messages fail the literal prefilter and cost a few `in` tests.
    def match(self, text: str) -> Match | None:
        """The failure in ``text``, or None when it is not one (missed or ignored)."""
        if len(text) > self.max_text:
            text = text[: self.max_text]
        literals = self.literals
        if literals:
            for literal in literals:
                if literal in text:
                    break
            else:
                return None
        pm = None
        if self.dates is not None:  # a datepattern: the date in the text cut, as fail2ban does
            text = self.dates.cut(text)
        if self._pref is not None:  # only fail2ban filters have one: after the prefilter
            pm = self._pref.search(text)
            if pm is None:
                return None
            text = pm.group("content") or ""
        pref = self._pref_reader
        for literal, regex, reader in self._fail:
            if literal in text:
                m = regex.search(text)
                if m is not None:
                    found = _read(reader, m) if pref is None else _with_prefix(pref, pm, reader, m)
                    if found is not None and found.host:
                        # As in examine: a hit counts only with a valid address; then NOFAIL.
                        if reader.nofail and any(m.group(i) is not None for i in reader.nofail):
                            return None
                        break
        else:
            return None
        for literal, rx in self._ignore:
            if literal in text and rx.search(text) is not None:
                return None
        return found

    def examine(
        self, text: str, *, prefilter: bool = False
    ) -> tuple[Outcome, Match | None, int | None]:
        """Outcome, match and 0-based index of the failregex that hit, for ``test-filter``
        and the multi-line state (``rules/multiline.py``).

        For IGNORED the match and index are those of the failregex that an ignoreregex
        overrode, or of a ``<F-NOFAIL>`` hit. Runs each regex on its own without the prefilter,
        so it doubles as the reference for :meth:`match`; ``prefilter=True`` skips the
        regexes whose required literal is not in the text (same outcome, less work). In a
        filter with ``<F-MLFID>`` a hit without an address is returned too, its ``host``
        empty: the multi-line state may know the address from an earlier line.
        """
        if len(text) > self.max_text:
            text = text[: self.max_text]
        pm = None
        if self.dates is not None:
            text = self.dates.cut(text)
        if self._pref is not None:
            pm = self._pref.search(text)
            if pm is None:
                return Outcome.MISSED, None, None
            text = pm.group("content") or ""
        pref = self._pref_reader
        for index, (literal, regex, reader) in enumerate(self._fail):
            if prefilter and literal not in text:
                continue
            m = regex.search(text)
            if m is None:
                continue
            found = _read(reader, m) if pref is None else _with_prefix(pref, pm, reader, m)
            if found is None or not (found.host or self.mlfid):
                continue
            if any(m.group(i) is not None for i in reader.nofail):
                return Outcome.IGNORED, found, index
            if any(
                rx.search(text) is not None
                for literal, rx in self._ignore
                if not prefilter or literal in text
            ):
                return Outcome.IGNORED, found, index
            return Outcome.MATCHED, found, index
        return Outcome.MISSED, None, None

    # --- construction ---------------------------------------------------------------------------

    def _who(self) -> str:
        return f"filter {self.name!r}" if self.name else "filter"

    def _error(self, kind: str, number: int, regex: str, why: str) -> FilterError:
        return FilterError(f"{self._who()}, {kind} #{number} {regex!r}: {why}")

    def _use_re2(self) -> bool:
        """Swap every regex for its RE2 twin if all have one; False (nothing swapped) if not."""
        regexes = [*([self._pref] if self._pref else []), *(rx for _, rx, _ in self._fail)]
        twins = [compile_re2(rx.pattern) for rx in [*regexes, *(rx for _, rx in self._ignore)]]
        if not all(twins):
            return False
        it = iter(t for t in twins if t is not None)
        if self._pref is not None:
            self._pref = next(it)
        self._fail = tuple((literal, next(it), reader) for literal, _, reader in self._fail)
        self._ignore = tuple((literal, next(it)) for literal, _ in self._ignore)
        return True

    def _compile_ignore(self, number: int, regex: str) -> tuple[str, Pattern]:
        expansion = self._expand("ignoreregex", number, regex)
        compiled = self._re_compile("ignoreregex", number, regex, expansion)
        return required_literal(expansion.text), compiled

    def _compile_pref(self, regex: str) -> tuple[re.Pattern[str], Reader | None]:
        """The prefregex, and its captures' Reader when it has a host tag or an <F-MLFID>."""
        expansion = self._expand("prefregex", 1, regex)
        compiled = self._re_compile("prefregex", 1, regex, expansion)
        if "content" not in compiled.groupindex:
            why = "has no <F-CONTENT>...</F-CONTENT> for the failregexes to examine"
            raise self._error("prefregex", 1, regex, why)
        if not expansion.host_tags and "mlfid" not in compiled.groupindex:
            return compiled, None
        return compiled, reader_of(compiled, expansion, self.allow_dns)

    def _expand(self, kind: str, number: int, regex: str) -> Expansion:
        if not isinstance(regex, str):
            raise self._error(kind, number, str(regex), "is not a string")
        try:
            return expand(regex, self.allow_dns)
        except FilterError as e:
            raise self._error(kind, number, regex, str(e)) from None

    def _re_compile(
        self, kind: str, number: int, regex: str, expansion: Expansion
    ) -> re.Pattern[str]:
        try:
            return re.compile(expansion.text)
        except re.error as exc:
            why = exc.msg
        # Locate the mistake in the operator's own text when the stand-in shows it too.
        try:
            re.compile(expansion.stand_in)
        except re.error as exc:
            if exc.pos is not None:
                why = f"{exc.msg} at position {exc.pos}"
        raise self._error(kind, number, regex, f"bad regular expression: {why}")


def _read(reader: Reader, m: MatchLike) -> Match | None:
    """The Match for a regex hit, or None when the capture is not a valid address/hostname.
    A hit where no host tag took part (``a <HOST>|b``, or a regex without one) is a Match
    whose ``host`` is empty: a failure only with an address from elsewhere (prefregex,
    multi-line state)."""
    for spec in reader.hosts:
        host = m.group(spec[0])
        if host is not None:
            _, dns, prefix_group = spec
            break
    else:
        return Match("", None, _user(reader, m), _fields(reader, m))
    address = _parse_address(host)
    if address is None and not (dns and _is_hostname(host)):
        return None
    prefix = None
    if prefix_group is not None and (plen := m.group(prefix_group)) is not None:
        prefix = int(plen)
        if address is not None and address.version == 4 and ":" in host:
            prefix -= 96  # ::ffff:203.0.113.0/120 is 203.0.113.0/24
        if address is None or not 0 <= prefix <= address.max_prefixlen:
            return None
    return Match(host, address, _user(reader, m), _fields(reader, m), prefix)


def _user(reader: Reader, m: MatchLike) -> str | None:
    for i in reader.user:
        if (user := m.group(i)) is not None:
            return user
    return None


def _fields(reader: Reader, m: MatchLike) -> Mapping[str, str]:
    if not reader.fields:
        return _NO_FIELDS
    found: dict[str, str] = {}
    for name, i in reader.fields:
        if name not in found and (v := m.group(i)) is not None:
            found[name] = v
    return MappingProxyType(found) if found else _NO_FIELDS


def _with_prefix(pref: Reader, pm: MatchLike | None, reader: Reader, m: MatchLike) -> Match | None:
    """A failregex hit under a prefregex with captures: the failregex's address, else the
    prefix's; the failregex's user and fields over the prefix's."""
    inner = _read(reader, m)
    outer = None if pm is None else _read(pref, pm)
    if inner is None or outer is None:
        return inner if outer is None and pm is None else None
    base = inner if inner.host else outer
    fields = {**outer.fields, **inner.fields}
    return Match(
        base.host,
        base.address,
        inner.user if inner.user is not None else outer.user,
        MappingProxyType(fields) if fields else _NO_FIELDS,
        base.prefix,
    )


# Parsing is most of a hit's cost: ipaddress takes 2 us for IPv4 and up to 7 us for IPv6, while
# inet_pton (a pure conversion, no I/O) and the packed constructors take under 1 us; both accept
# the same texts (pinned by a test). Attackers repeat their address, so a cache helps too.
@functools.lru_cache(maxsize=4096)
def _parse_address(text: str) -> IPAddress | None:
    try:
        if ":" not in text:
            return ipaddress.IPv4Address(socket.inet_pton(socket.AF_INET, text))
        packed = socket.inet_pton(socket.AF_INET6, text)
    except OSError:
        return None
    return canonical_address(ipaddress.IPv6Address(packed))  # ::ffff:192.0.2.1 is 192.0.2.1


def _is_hostname(text: str) -> bool:
    # A name whose last label is all digits is a mangled address (999.1.1.1), not a host.
    last = text.rstrip(".").rsplit(".", 1)[-1]
    return bool(last) and not last.isdigit()
