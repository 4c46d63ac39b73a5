"""fail2ban's tags in a regex: ``<HOST>``, ``<ADDR>``, ``<IP4>``, ``<IP6>``, ``<CIDR>``,
``<SUBNET>``, ``<DNS>`` and the ``<F-NAME>...</F-NAME>`` captures, substituted by the patterns
they stand for, and where a compiled regex holds their captures.

A regex may hold several host tags (``\\[(?:IPv6:<IP6>|<IP4>)\\]``) and a capture may be used in
two branches; re and RE2 refuse a group name twice, so each use after the first is numbered
(``host``, ``host__1``) and the ``Reader`` reads them in order, the first that took part.
``<F-IP4>``, ``<F-IP6>``, ``<F-ADDR>`` and ``<F-DNS>`` are host captures with the operator's own
pattern; ``<F-ALT_USER*>`` stand in for a missing ``<F-USER>``.

Called by ``rules/filters.py`` when it compiles a Filter; pure, no I/O. A problem with the tags
raises FilterError with what is wrong; the Filter adds which filter and which regex.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from applianced.errors import FilterError

# --- address patterns ---------------------------------------------------------------------------
#
# The patterns are deliberately a little loose (octets up to 999, leading zeros); every capture
# is then validated exactly as ``ipaddress`` would (``filters._parse_address``), and an invalid
# one is no match (999.1.1.1, 01.2.3.4). What they must never do is capture *part* of an address, so
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
# RFC 5321's address literal ``[IPv6:2001:db8::1]`` may precede it: "6:" is no hex group there.
_V6_BEFORE = (
    r"(?:(?<![0-9A-Za-z_:.])|(?<=[^0-9A-Fa-f:]:)|(?<=IPv6:)"
    + "".join(f"|(?<=\\.[0-9A-Fa-f]{{{n}}}:)" for n in range(1, 5))
    + ")"
)
# What follows may not continue the address: another hex group (``:1a``) or ``::``. A colon and
# a number that is no group (five digits: ``2001:db8::1234:58430``) or anything after a dotted
# quad (nothing continues one: ``::ffff:192.0.2.1:80``) is an address and a port.
_V6_AFTER = (
    r"(?![0-9A-Za-z_]|\.[0-9A-Za-z_])"
    r"(?:(?<=\.[0-9])|(?<=\.[0-9]{2})|(?<=\.[0-9]{3})"
    r"|(?!::|:[0-9A-Fa-f]{1,4}(?![0-9A-Fa-f])))"
)
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


_TAG = re.compile(
    r"<(?P<host>HOST|ADDR|IP4|IP6|CIDR|SUBNET|DNS)>|<(?P<close>/?)F-(?P<name>[A-Za-z][A-Za-z0-9_]*)>"
)
# <CIDR> is an address with a required /prefix, <SUBNET> one with an optional /prefix.
_PREFIX_LEN = "prefixlen"
# A failregex hit whose <F-NOFAIL> (or <F-MLFGAINED>) group took part is no failure.
_NOFAIL_GROUPS = ("nofail", "mlfgained")
# <F-IP4>...</F-IP4> & co.: the operator's own pattern for the address (or name) to ban.
_NAMED_HOSTS = {"IP4": "IP4", "IP6": "IP6", "ADDR": "ADDR", "DNS": "DNS"}
# A group name used again in one regex (two host tags, <F-USER> in two branches) is numbered:
# host, host__1, host__2; re and RE2 refuse a name twice. Reader reads them in order.
_REPEAT = re.compile(r"^(?P<base>.+?)(?:__(?P<n>[0-9]+))?$")
_SPECIAL = frozenset(("host", "user", "alt_user", _PREFIX_LEN, *_NOFAIL_GROUPS))


@dataclass(frozen=True, slots=True)
class Reader:
    """Where one regex's captures sit in a compiled pattern.

    ``hosts`` holds, for each host tag in order, its group, whether it may capture a hostname
    and its /prefix group (<CIDR>/<SUBNET>); the first that took part is the failure's.
    ``user`` holds the <F-USER> groups, then the <F-ALT_USER*> ones: the first that took part."""

    hosts: tuple[tuple[int, bool, int | None], ...]
    user: tuple[int, ...]
    fields: tuple[tuple[str, int], ...]
    nofail: tuple[int, ...] = ()  # <F-NOFAIL>/<F-MLFGAINED> groups: a hit is no failure


@dataclass(frozen=True, slots=True)
class Expansion:
    """A regex with its tags substituted."""

    text: str  # what to compile
    stand_in: str  # the operator's text with same-length tag stand-ins, to place re.error
    host_kinds: tuple[str, ...]  # each host tag's kind (HOST, IP4, ...), in order

    @property
    def host_tags(self) -> int:
        return len(self.host_kinds)


def host_pattern(tag: str, allow_dns: bool, before: bool = True, after: bool = True) -> str:
    """The tag's pattern; ``before``/``after`` False drop look-arounds that always hold."""
    kinds: tuple[str, ...] = (tag,) if tag in ("IP4", "IP6", "DNS") else ("IP4", "IP6")
    if tag == "HOST" and allow_dns:
        kinds = ("IP4", "IP6", "DNS")
    return "|".join(_tag_pattern(k, before, after) for k in kinds)


def reader_of(compiled: re.Pattern[str], expansion: Expansion, allow_dns: bool) -> Reader:
    """Where the captures of ``compiled``, the regex of ``expansion``, sit."""
    named: dict[str, list[int]] = {}
    for name, index in sorted(compiled.groupindex.items(), key=lambda item: item[1]):
        m = _REPEAT.match(name)
        assert m is not None
        named.setdefault(m.group("base"), []).append(index)
    prefixes = dict(_numbered(compiled.groupindex, _PREFIX_LEN))
    hosts = tuple(
        (
            index,
            (kind == "HOST" and allow_dns) or kind == "DNS",
            prefixes.get(n),
        )
        for (n, index), kind in zip(
            _numbered(compiled.groupindex, "host"), expansion.host_kinds, strict=True
        )
    )
    users = [*named.get("user", ())]
    users += [i for base, ix in named.items() if base.startswith("alt_user") for i in ix]
    return Reader(
        hosts=hosts,
        user=tuple(users),
        fields=tuple(
            (base, i)
            for base, ix in named.items()
            if base not in _SPECIAL and not base.startswith("alt_user")
            for i in ix
        ),
        nofail=tuple(i for n in _NOFAIL_GROUPS for i in named.get(n, ())),
    )


def _numbered(groupindex: Mapping[str, int], base: str) -> list[tuple[int, int]]:
    """(occurrence, group) of ``base``, ``base__1``, ... in ``groupindex``, in order."""
    out = []
    for name, index in groupindex.items():
        m = _REPEAT.match(name)
        if m is not None and m.group("base") == base:
            out.append((int(m.group("n") or 0), index))
    return sorted(out)


def expand(regex: str, allow_dns: bool) -> Expansion:
    """Substitute the tags, and make a same-length stand-in to place re.error positions.
    Raises FilterError (what is wrong, without the filter's name) on a misused tag."""
    out: list[str] = []
    pad: list[str] = []
    open_fields: list[str] = []
    kinds: list[str] = []
    uses: dict[str, int] = {}

    def group(base: str) -> str:
        n = uses.get(base, 0)
        uses[base] = n + 1
        return base if n == 0 else f"{base}__{n}"

    pos = 0
    for t in _TAG.finditer(regex):
        pos_after_tag = pos  # where the previous tag ended: right before t, no fixed char
        out.append(regex[pos : t.start()])
        pad.append(regex[pos : t.start()])
        pos = t.end()
        width = t.end() - t.start()
        if t.group("host"):
            kinds.append(t.group("host"))
            out.append(_host_group(regex, t, pos_after_tag, allow_dns, group))
            pad.append("(?:" + "x" * (width - 4) + ")")
            continue
        name = t.group("name")
        if t.group("close"):
            if not open_fields or open_fields[-1] != name:
                raise FilterError(f"</F-{name}> closes no open <F-{name}>")
            open_fields.pop()
            out.append(")")
            pad.append("(?#" + "x" * (width - 5) + "))")
            continue
        if name == "HOST":
            raise FilterError("<F-HOST> is reserved; capture the address with <HOST>")
        open_fields.append(name)
        if name in _NAMED_HOSTS:
            if name == "DNS" and not allow_dns:
                raise FilterError("<F-DNS> captures host names; it needs usedns other than 'no'")
            kinds.append(_NAMED_HOSTS[name])
            out.append(f"(?P<{group('host')}>")
        else:
            out.append(f"(?P<{group(name.lower())}>")
        pad.append("((?#" + "x" * (width - 5) + ")")
    if open_fields:
        tag = open_fields[-1]
        raise FilterError(f"<F-{tag}> is not closed by </F-{tag}>")
    out.append(regex[pos:])
    pad.append(regex[pos:])
    return Expansion("".join(out), "".join(pad), tuple(kinds))


def _host_group(
    regex: str, t: re.Match[str], pos_after_tag: int, allow_dns: bool, group: Callable[[str], str]
) -> str:
    """The capture a host tag ``t`` of ``regex`` becomes, with its /prefix for CIDR/SUBNET;
    ``group`` names each capture (numbered when the name was used before)."""
    host_kind = t.group("host")
    if host_kind == "DNS" and not allow_dns:
        raise FilterError("<DNS> matches host names only; it needs usedns other than 'no'")
    verbose = _VERBOSE.search(regex) is not None  # (?x): a space is no character
    before = verbose or not _fixed_neighbour(regex, t.start(), -1, pos_after_tag)
    after = host_kind != "CIDR" and (verbose or not _fixed_neighbour(regex, t.end(), 1, -1))
    name = group("host")
    host = f"(?P<{name}>{host_pattern(host_kind, allow_dns, before, after)})"
    prefix = f"(?P<{name.replace('host', _PREFIX_LEN)}>[0-9]{{1,3}})"  # host__1: prefixlen__1
    if host_kind == "CIDR":
        return f"{host}/{prefix}"
    if host_kind == "SUBNET":
        return f"{host}(?:/{prefix})?"
    if host_kind in ("HOST", "ADDR"):
        # As fail2ban's: an address may be written in brackets, each optional on its own
        # ("from [2001:db8::1]:5060", "(TCP:[192.0.2.1]:5060)"); the brackets are not captured.
        return rf"\[?{host}\]?"
    return host


def _fixed_neighbour(regex: str, at: int, step: int, tag_end: int) -> bool:
    """Whether every match of ``regex`` has, next to offset ``at`` (before it for ``step`` -1,
    after it for +1), a character that is not in _NEAR_ADDRESS, or the start/end of the text.

    Conservative: only a single unquantified literal (``\\[``, `` ``, ``=``), ``\\s``,
    ``\\s+`` or an anchor (``^`` before, ``$`` after) counts; a set or another tag
    (``tag_end`` == ``at``) does not. At the edge of a group or of one of its alternatives
    (``(?:IPv6:<IP6>|<IP4>)\\]``) the character outside the group decides, when the group is
    not repeated."""
    edge = _group_edge(regex, at, step)
    if edge is not None:
        return edge >= 0 and _fixed_neighbour(regex, edge, step, tag_end)
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
        if c == ":" and _word_colon(regex, at - 1, tag_end):
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


def _group_edge(regex: str, at: int, step: int) -> int | None:
    """When offset ``at`` is at the start (``step`` -1) or end (+1) of a group's alternative:
    the offset just outside that group (before its opening, after its closing), or -1 when
    what is outside cannot be known (a repeated group, a look-around, a conditional, an
    alternative of the whole regex). None when ``at`` is at no such edge."""
    spans = [g for g in _groups(regex) if g[1] <= at <= g[2]]
    innermost = max(spans, key=lambda g: g[1], default=None)
    if step < 0:
        at_edge = (innermost is not None and at == innermost[1]) or (
            at > 0 and regex[at - 1] == "|" and not _escaped(regex, at - 1)
        )
    else:
        at_edge = (innermost is not None and at == innermost[2]) or (
            at < len(regex) and regex[at] == "|"
        )
    if not at_edge:
        return None
    if innermost is None:
        return -1  # "a|<HOST>": an alternative of the whole regex, unanchored
    start, _, _, end = innermost
    if regex[start : start + 3] in ("(?=", "(?!", "(?<", "(?("):
        return -1  # a look-around or a conditional: what is outside is not next to it
    if regex[end : end + 1] in ("?", "*", "+", "{"):
        return -1  # repeated or optional: another iteration, or nothing, may be next to it
    return start if step < 0 else end


def _groups(regex: str) -> list[tuple[int, int, int, int]]:
    """Each group of ``regex`` as (opening, start of its content, its closing, just after the
    closing): ``(...)`` in any form and ``<F-NAME>...</F-NAME>``; sets and escapes skipped."""
    out: list[tuple[int, int, int, int]] = []
    stack: list[tuple[int, int]] = []
    i, n = 0, len(regex)
    while i < n:
        c = regex[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":
            i += 1
            if regex.startswith("^", i):
                i += 1
            if regex.startswith("]", i):
                i += 1
            while i < n and regex[i] != "]":
                i += 2 if regex[i] == "\\" else 1
            i += 1
            continue
        if c == "(":
            content = i + 1
            if regex.startswith("(?P<", i):
                content = regex.find(">", i) + 1
            elif regex.startswith("(?", i) and (colon := regex.find(":", i)) > 0:
                head = regex[i + 2 : colon]
                content = colon + 1 if head.isalpha() or not head else i + 2
            stack.append((i, max(content, i + 1)))
            i = max(content, i + 1)
            continue
        if c == ")" and stack:
            start, content = stack.pop()
            out.append((start, content, i, i + 1))
            i += 1
            continue
        t = _TAG.match(regex, i) if c == "<" else None
        if t is not None and t.group("name"):
            if not t.group("close"):
                stack.append((i, t.end()))
            elif stack:
                start, content = stack.pop()
                out.append((start, content, i, t.end()))
            i = t.end()
            continue
        i += 1
    return out


def _word_colon(regex: str, colon: int, tag_end: int) -> bool:
    """Whether the ``:`` at ``colon`` ends a literal word that no address holds (``IPv6:``,
    RFC 5321's address literal): the plain characters before it, back to anything else, hold
    one that is neither a hex digit nor a colon, so no address can reach across the word."""
    start = colon
    while start > tag_end and regex[start - 1] in _WORD_CHARS and not _escaped(regex, start - 1):
        start -= 1
    word = regex[start:colon]
    return any(ch not in _HEX for ch in word)


_WORD_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_-")
_HEX = frozenset("0123456789abcdefABCDEF")


def _escaped(regex: str, at: int) -> bool:
    """Whether the character at ``at`` is escaped (an odd run of backslashes before it)."""
    run = 0
    while at - run - 1 >= 0 and regex[at - run - 1] == "\\":
        run += 1
    return run % 2 == 1


def host_tag_problem() -> str:
    return "has no <HOST>, <ADDR>, <IP4> or <IP6> tag; a failregex must capture the address to ban"
