"""Filters: compiled failregex/ignoreregex sets that turn a message's text into a failure address.

This module owns the tag language of our filters (``<HOST>``, ``<ADDR>``, ``<IP4>``, ``<IP6>``,
``<F-USER>...</F-USER>`` and other ``<F-NAME>...</F-NAME>`` captures), the literal prefilter that
keeps the hot path cheap. The engine calls :meth:`Filter.match` once per routed message; the
offline ``appliancectl test-filter`` calls :meth:`Filter.examine`; the filter-file readers of
``conf/filterfiles/`` (native TOML, fail2ban ``.conf``) build Filters from what they read.

Pure: no I/O (reading filter files is ``conf/filterfiles/``'s job), no logging, no DNS. A
hostname captured by ``<HOST>`` (only with ``allow_dns``) comes back unresolved, with
``Match.address`` None; resolving it is the caller's business, off the hot path.

Semantics: every regex is searched in the message text: the syslog MSG part for our filters, the
traditional ``host app[pid]: msg`` line for fail2ban filters (``on_line``), or the ``<F-CONTENT>``
part of it when a ``prefregex`` is set. Filters whose regexes all compile under RE2 run there
(``rules/regex.py``), the others under ``re``, every text cut at ``MAX_TEXT``. A message is a
failure when some failregex matches, with a capture that is a valid address, and no ignoreregex
matches. Failregexes are tried in order; the first one that matches decides the address.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import NamedTuple

from applianced.errors import FilterError
from applianced.rules.addresses import canonical_address
from applianced.rules.decision import IPAddress
from applianced.rules.regex import MAX_TEXT, MatchLike, Pattern, compile_re2

__all__ = [
    "MAX_TEXT",
    "Filter",
    "Match",
    "Outcome",
    "required_literal",
]

# --- address patterns ---------------------------------------------------------------------------
#
# The patterns are deliberately a little loose (octets up to 999, leading zeros); every capture
# is then validated exactly as ``ipaddress`` would (see _parse_address), and an invalid one is
# no match (999.1.1.1, 01.2.3.4). What they must never do is capture *part* of an address, so
# each carries look-arounds: an IPv4 address may not continue another number or sit inside an
# IPv6 address, and an IPv6 address may not start in the middle of another one. A colon right
# before an IPv6 address is allowed when what precedes it cannot be a hex group
# (``user@example.org:2001:db8::1``) or is the last label of a domain name (``…@example.de:…``).

_H = "[0-9A-Fa-f]{1,4}"
_V4_BODY = r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}"
_V4_BEFORE = r"(?<![0-9A-Za-z_.])(?<!::)" + "".join(
    f"(?<!:[0-9A-Fa-f]{{{n}}}:)" for n in range(1, 5)
)
_V4_AFTER = r"(?![0-9A-Za-z_]|\.[0-9A-Za-z_])"
_V6_BODY = (
    f"(?:(?:{_H}:){{7}}{_H}"
    f"|(?:{_H}:){{6}}{_V4_BODY}"
    f"|(?:{_H}(?::{_H}){{0,6}})?::(?:(?:{_H}:){{0,5}}(?:{_V4_BODY}|{_H}))?)"
)
_V6_BEFORE = (
    r"(?:(?<![0-9A-Za-z_:.])|(?<=[^0-9A-Fa-f:]:)"
    + "".join(f"|(?<=\\.[0-9A-Fa-f]{{{n}}}:)" for n in range(1, 5))
    + ")"
)
_V6_AFTER = r"(?![0-9A-Za-z_]|:[0-9A-Fa-f:]|\.[0-9A-Za-z_])"
_LABEL = "[0-9A-Za-z_](?:[0-9A-Za-z_-]{0,61}[0-9A-Za-z_])?"
_DNS_BEFORE = r"(?<![0-9A-Za-z_.-])"
_DNS_BODY = rf"(?:{_LABEL}\.)*{_LABEL}\.?"
_DNS_AFTER = r"(?![0-9A-Za-z_-]|\.[0-9A-Za-z_-])"
# A tag's look-arounds only test the characters next to it. When the regex puts a fixed character
# outside this set there (``\[<ADDR>\]``, ``from <ADDR> port``), they always hold and are left
# out: the regex means the same under ``re`` and has a form RE2 can compile (see regex.py).
_VERBOSE = re.compile(r"\(\?[a-zA-Z]*x")
_NEAR_ADDRESS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_.:-")


def _tag_pattern(kind: str, before: bool, after: bool) -> str:
    """The pattern of an address (IP4, IP6) or name (DNS) with the look-arounds asked for."""
    parts = {
        "IP4": (_V4_BEFORE, _V4_BODY, _V4_AFTER),
        "IP6": (_V6_BEFORE, _V6_BODY, _V6_AFTER),
        "DNS": (_DNS_BEFORE, _DNS_BODY, _DNS_AFTER),
    }[kind]
    return (parts[0] if before else "") + parts[1] + (parts[2] if after else "")


_IP4 = _tag_pattern("IP4", True, True)
_IP6 = _tag_pattern("IP6", True, True)
_DNS = _tag_pattern("DNS", True, True)
_ADDR = f"{_IP4}|{_IP6}"
_TAG = re.compile(
    r"<(?P<host>HOST|ADDR|IP4|IP6|CIDR|SUBNET|DNS)>|<(?P<close>/?)F-(?P<name>[A-Za-z][A-Za-z0-9_]*)>"
)
# <CIDR> is an address with a required /prefix, <SUBNET> one with an optional /prefix.
_PREFIX_LEN = "(?P<prefixlen>[0-9]{1,3})"
# A failregex hit whose <F-NOFAIL> (or <F-MLFGAINED>) group took part is no failure.
_NOFAIL_GROUPS = ("nofail", "mlfgained")
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


@dataclass(frozen=True, slots=True)
class _Reader:
    """Where one failregex's captures sit in a compiled pattern."""

    host: int
    user: int | None
    fields: tuple[tuple[str, int], ...]
    dns: bool  # the tag is <HOST> with allow_dns on (or <DNS>): a hostname may be captured
    prefix: int | None = None  # the /prefix group of <CIDR>/<SUBNET>
    nofail: tuple[int, ...] = ()  # <F-NOFAIL>/<F-MLFGAINED> groups: a hit is no failure


@dataclass(frozen=True, slots=True)
class _Expansion:
    """A regex with its tags substituted."""

    text: str  # what to compile
    stand_in: str  # the operator's text with same-length tag stand-ins, to place re.error
    host_tags: int
    host_kind: str  # the last host tag's name


# --- the filter ----------------------------------------------------------------------------------


class Filter:
    """A compiled set of failregexes and ignoreregexes (see the module docstring for semantics).

    Raises FilterError, naming the filter, the regex (``failregex #N``, 1-based) and the reason,
    when a regex is invalid or a failregex lacks exactly one ``<HOST>``/``<ADDR>``/``<IP4>``/
    ``<IP6>`` tag.

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

    ReDoS guard (see regex.py): with ``engine="auto"`` every regex runs under RE2, in time linear
    in the text, when all of the filter's regexes compile there; ``engine`` then reads ``"re2"``,
    else ``"re"``. Either way a regex sees at most the first ``max_text`` characters of a text.
    """

    __slots__ = (
        "_fail",
        "_ignore",
        "_pref",
        "allow_dns",
        "engine",
        "failregex",
        "ignoreregex",
        "literals",
        "max_text",
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
    ) -> None:
        if isinstance(failregex, str) or isinstance(ignoreregex, str):
            raise TypeError("failregex and ignoreregex are sequences of regexes, not one string")
        self.name = name
        self.allow_dns = allow_dns
        self.on_line = on_line
        self.prefregex = prefregex
        self.max_text = max_text
        self._pref: Pattern | None = None if prefregex is None else self._compile_pref(prefregex)
        self.failregex: tuple[str, ...] = tuple(failregex)
        self.ignoreregex: tuple[str, ...] = tuple(ignoreregex)
        if not self.failregex:
            raise FilterError(f"{self._who()}: no failregex; a filter needs at least one")
        fail: list[tuple[str, Pattern, _Reader]] = []
        for number, regex in enumerate(self.failregex, start=1):
            expansion = self._expand("failregex", number, regex)
            if expansion.host_tags != 1:
                raise self._error("failregex", number, regex, _host_tag_problem(expansion))
            compiled = self._re_compile("failregex", number, regex, expansion)
            literal = required_literal(expansion.text)
            fail.append((literal, compiled, self._reader(compiled, expansion)))
        self._fail = tuple(fail)
        # Each ignoreregex with its required literal ("" when none): a failure's text without
        # the literal cannot match it, and most failures are no exception.
        self._ignore: tuple[tuple[str, Pattern], ...] = tuple(
            self._compile_ignore(number, regex)
            for number, regex in enumerate(self.ignoreregex, start=1)
        )
        if engine not in ("auto", "re"):
            raise ValueError(f"engine is 'auto' or 're', not {engine!r}")
        self.engine = "re2" if engine == "auto" and self._use_re2() else "re"
        lits = tuple(literal for literal, _, _ in fail)
        self.literals: tuple[str, ...] = (
            lits if all(len(lit) >= MIN_LITERAL for lit in lits) else ()
        )
        # The literals as UTF-8, for a gate that tests a message before decoding it: a literal
        # is in the decoded text only if these bytes are in the message (a U+FFFD in the text
        # may stand for any invalid bytes, so a literal holding one gives no such test).
        self.needles: tuple[bytes, ...] = (
            tuple(lit.encode() for lit in self.literals)
            if not any("\ufffd" in lit for lit in self.literals)
            else ()
        )

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
        if self._pref is not None:  # only fail2ban filters have one: after the prefilter
            pm = self._pref.search(text)
            if pm is None:
                return None
            text = pm.group("content") or ""
        for literal, regex, reader in self._fail:
            if literal in text:
                m = regex.search(text)
                if m is not None:
                    found = _read(reader, m)
                    if found is not None:
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
        """Outcome, match and 0-based index of the failregex that hit, for ``test-filter``.

        For IGNORED the match and index are those of the failregex that an ignoreregex
        overrode, or of a ``<F-NOFAIL>`` hit. Runs each regex on its own without the prefilter,
        so it doubles as the reference for :meth:`match`; ``prefilter=True`` skips the
        regexes whose required literal is not in the text (same outcome, less work).
        """
        if len(text) > self.max_text:
            text = text[: self.max_text]
        if self._pref is not None:
            pm = self._pref.search(text)
            if pm is None:
                return Outcome.MISSED, None, None
            text = pm.group("content") or ""
        for index, (literal, regex, reader) in enumerate(self._fail):
            if prefilter and literal not in text:
                continue
            m = regex.search(text)
            found = None if m is None else _read(reader, m)
            if found is None:
                continue
            if m is not None and any(m.group(i) is not None for i in reader.nofail):
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
        if expansion.host_tags > 1:
            raise self._error("ignoreregex", number, regex, _host_tag_problem(expansion))
        compiled = self._re_compile("ignoreregex", number, regex, expansion)
        return required_literal(expansion.text), compiled

    def _compile_pref(self, regex: str) -> re.Pattern[str]:
        expansion = self._expand("prefregex", 1, regex)
        if expansion.host_tags:
            why = "a host tag in prefregex is not supported; capture the address in failregex"
            raise self._error("prefregex", 1, regex, why)
        compiled = self._re_compile("prefregex", 1, regex, expansion)
        if "content" not in compiled.groupindex:
            why = "has no <F-CONTENT>...</F-CONTENT> for the failregexes to examine"
            raise self._error("prefregex", 1, regex, why)
        return compiled

    def _reader(self, compiled: re.Pattern[str], expansion: _Expansion) -> _Reader:
        groups = compiled.groupindex
        special = ("host", "user", "prefixlen")
        return _Reader(
            host=groups["host"],
            user=groups.get("user"),
            fields=tuple((n, i) for n, i in groups.items() if n not in special),
            dns=(expansion.host_kind == "HOST" and self.allow_dns) or expansion.host_kind == "DNS",
            prefix=groups.get("prefixlen"),
            nofail=tuple(groups[n] for n in _NOFAIL_GROUPS if n in groups),
        )

    def _expand(self, kind: str, number: int, regex: str) -> _Expansion:
        """Substitute the tags, and make a same-length stand-in to place re.error positions."""
        if not isinstance(regex, str):
            raise self._error(kind, number, str(regex), "is not a string")
        out: list[str] = []
        pad: list[str] = []
        open_fields: list[str] = []
        host_tags = 0
        host_kind = ""
        pos = 0
        for t in _TAG.finditer(regex):
            pos_after_tag = pos  # where the previous tag ended: right before t, no fixed char
            out.append(regex[pos : t.start()])
            pad.append(regex[pos : t.start()])
            pos = t.end()
            width = t.end() - t.start()
            if t.group("host"):
                host_kind = t.group("host")
                host_tags += 1
                if host_kind == "DNS" and not self.allow_dns:
                    why = "<DNS> matches host names only; it needs use_dns = true"
                    raise self._error(kind, number, regex, why)
                verbose = _VERBOSE.search(regex) is not None  # (?x): a space is no character
                before = verbose or not _fixed_neighbour(regex, t.start(), -1, pos_after_tag)
                after = host_kind != "CIDR" and (
                    verbose or not _fixed_neighbour(regex, t.end(), 1, -1)
                )
                out.append(f"(?P<host>{self._host_pattern(host_kind, before, after)})")
                if host_kind == "CIDR":
                    out.append(f"/{_PREFIX_LEN}")
                elif host_kind == "SUBNET":
                    out.append(f"(?:/{_PREFIX_LEN})?")
                pad.append("(?:" + "x" * (width - 4) + ")")
                continue
            name = t.group("name")
            if t.group("close"):
                if not open_fields or open_fields[-1] != name:
                    why = f"</F-{name}> closes no open <F-{name}>"
                    raise self._error(kind, number, regex, why)
                open_fields.pop()
                out.append(")")
                pad.append("(?#" + "x" * (width - 5) + "))")
                continue
            group = name.lower()
            if group == "host":
                why = "<F-HOST> is reserved; capture the address with <HOST>"
                raise self._error(kind, number, regex, why)
            open_fields.append(name)
            out.append(f"(?P<{group}>")
            pad.append("((?#" + "x" * (width - 5) + ")")
        if open_fields:
            tag = open_fields[-1]
            raise self._error(kind, number, regex, f"<F-{tag}> is not closed by </F-{tag}>")
        out.append(regex[pos:])
        pad.append(regex[pos:])
        return _Expansion("".join(out), "".join(pad), host_tags, host_kind)

    def _host_pattern(self, tag: str, before: bool = True, after: bool = True) -> str:
        """The tag's pattern; ``before``/``after`` False drop look-arounds that always hold."""
        kinds: tuple[str, ...] = (tag,) if tag in ("IP4", "IP6", "DNS") else ("IP4", "IP6")
        if tag == "HOST" and self.allow_dns:
            kinds = ("IP4", "IP6", "DNS")
        return "|".join(_tag_pattern(k, before, after) for k in kinds)

    def _re_compile(
        self, kind: str, number: int, regex: str, expansion: _Expansion
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


def _fixed_neighbour(regex: str, at: int, step: int, tag_end: int) -> bool:
    """Whether every match of ``regex`` has, next to offset ``at`` (before it for ``step`` -1,
    after it for +1), a character that is not in _NEAR_ADDRESS, or the start/end of the text.

    Conservative: only a single unquantified literal (``\\[``, `` ``, ``=``), ``\\s``,
    ``\\s+`` or an anchor (``^`` before, ``$`` after) counts; a group, a set, an alternation or
    another tag (``tag_end`` == ``at``) does not."""
    if step < 0:
        if at == 0 or at == tag_end:
            return False
        c = regex[at - 1]
        if c == "+" and regex[max(0, at - 3) : at - 1] == "\\s" and not _escaped(regex, at - 3):
            return True
        if _escaped(regex, at - 1):
            return c in "stnrfv" or (not c.isalnum() and c not in _NEAR_ADDRESS)
        if c == "^":
            return True
        return c not in "()|?*+{}[]$.\\" and c not in _NEAR_ADDRESS
    if at >= len(regex) or _TAG.match(regex, at):
        return False
    c = regex[at]
    if c == "$":
        return True
    if c == "\\":
        e = regex[at + 1 : at + 2]
        fixed = e in set("stnrfv") or (e != "" and not e.isalnum() and e not in _NEAR_ADDRESS)
        nxt = at + 2
    else:
        fixed = c not in "()|?*+{}[].^" and c not in _NEAR_ADDRESS
        nxt = at + 1
    # An optional next character may be absent: then another one follows the address.
    return fixed and not (regex[nxt : nxt + 1] in ("?", "*") or regex.startswith(("{0", "{,"), nxt))


def _escaped(regex: str, at: int) -> bool:
    """Whether the character at ``at`` is escaped (an odd run of backslashes before it)."""
    run = 0
    while at - run - 1 >= 0 and regex[at - run - 1] == "\\":
        run += 1
    return run % 2 == 1


def _host_tag_problem(expansion: _Expansion) -> str:
    if expansion.host_tags == 0:
        return (
            "has no <HOST>, <ADDR>, <IP4> or <IP6> tag; a failregex must capture the address to ban"
        )
    return (
        f"has {expansion.host_tags} host tags (<HOST>, <ADDR>, <IP4>, <IP6>, <CIDR>, <SUBNET>, "
        "<DNS>); use one"
    )


def _read(reader: _Reader, m: MatchLike) -> Match | None:
    """The Match for a regex hit, or None when the capture is not a valid address/hostname."""
    host = m.group(reader.host)
    if host is None:  # e.g. "a <HOST>|b" matched by its branch without the tag
        return None
    address = _parse_address(host)
    if address is None and not (reader.dns and _is_hostname(host)):
        return None
    prefix = None
    if reader.prefix is not None and (plen := m.group(reader.prefix)) is not None:
        prefix = int(plen)
        if address is not None and address.version == 4 and ":" in host:
            prefix -= 96  # ::ffff:203.0.113.0/120 is 203.0.113.0/24
        if address is None or not 0 <= prefix <= address.max_prefixlen:
            return None
    user = None if reader.user is None else m.group(reader.user)
    fields: Mapping[str, str] = _NO_FIELDS
    if reader.fields:
        found = {name: v for name, i in reader.fields if (v := m.group(i)) is not None}
        if found:
            fields = MappingProxyType(found)
    return Match(host, address, user, fields, prefix)


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


# --- the prefilter literal ------------------------------------------------------------------------

_BRACE_QUANTIFIER = re.compile(r"\{\d*(?:,\d*)?\}")
_GLOBAL_FLAGS = re.compile(r"\(\?([aiLmsux]+)\)")
_ESCAPE_ARG = {"x": 2, "u": 4, "U": 8}
_ASCII_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


def required_literal(pattern: str) -> str:
    """A substring that every match of ``pattern`` contains: the longest run of plain literal
    characters at nesting depth 0 that no quantifier applies to ("" when there is none).

    Conservative by construction: groups, classes, escapes such as ``\\d`` and anything under a
    quantifier end a run; an alternation at depth 0, or an inline ``(?i)``/``(?x)`` flag, means
    there is no required literal at all.
    """
    best = ""
    run: list[str] = []
    depth = 0
    last_literal = False  # the previous atom is a literal char at depth 0, the last of `run`
    i = 0
    n = len(pattern)

    def flush() -> None:
        nonlocal best
        if len(run) > len(best):
            best = "".join(run)
        run.clear()

    while i < n:
        c = pattern[i]
        literal: str | None = None
        if c == "\\":
            nxt = pattern[i + 1] if i + 1 < n else ""
            if nxt in _ASCII_ALNUM:
                # A class (\d), an anchor (\b), a backreference or a coded char: not literal.
                i += 2 + _ESCAPE_ARG.get(nxt, 0)
                if nxt == "N":
                    close = pattern.find("}", i)
                    i = n if close < 0 else close + 1
                elif nxt.isdigit():
                    while i < n and pattern[i].isdigit():
                        i += 1
            else:
                literal = nxt
                i += 2
        elif c == "[":
            j = i + 1
            if j < n and pattern[j] == "^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            i = j + 1
        elif c == "(":
            if pattern.startswith("(?#", i):
                j = i + 3
                while j < n and pattern[j] != ")":
                    j += 2 if pattern[j] == "\\" else 1
                i = j + 1
                continue  # a comment is no atom: a quantifier after it applies to what precedes
            flags = _GLOBAL_FLAGS.match(pattern, i)
            if flags is not None:
                if "i" in flags.group(1) or "x" in flags.group(1):
                    return ""  # case-insensitive or verbose: the text is not the input's
                i = flags.end()
                continue
            if depth == 0:
                flush()
            depth += 1
            last_literal = False
            i += 1
            continue
        elif c == ")":
            depth -= 1
            last_literal = False  # the atom is the group, not the run's last char
            i += 1
            continue
        elif c in "*+?" or (c == "{" and _BRACE_QUANTIFIER.match(pattern, i)):
            brace = _BRACE_QUANTIFIER.match(pattern, i) if c == "{" else None
            i = brace.end() if brace is not None else i + 1
            if i < n and pattern[i] in "?+":  # lazy or possessive
                i += 1
            if depth == 0:
                if last_literal:
                    run.pop()  # the repeated char may occur zero times (or differ in count)
                flush()
            last_literal = False
            continue
        elif c == "|":
            if depth == 0:
                return ""  # either side may match: no single literal is required
            i += 1
            continue
        elif c in ".^$":
            i += 1
        else:
            literal = c
            i += 1
        if depth > 0:
            continue
        if literal is None:
            flush()
            last_literal = False
        else:
            run.append(literal)
            last_literal = True
    flush()
    return best
