"""``appliancectl explain``'s walk: one parsed message through the jails, step by step, the way
the engine takes it (the gate: which jails read its program and sender; each jail's prefilter
literals; its failregexes in order; its ignoreregexes; its never-ban list), saying at each jail
what it found or why it found nothing.

Pure: it reads the jails and the message, counts nothing and changes no window (the engine's
``feed`` is not called). Called by ``views.explain`` (the daemon's jails, over the control
socket) and by ``cli/explain.py`` (the jails of a config file, offline); both parse the line
with ``receiver/parse.py`` first and print or send :meth:`Explanation.as_json`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from applianced.rules.filters import Filter, Match, Outcome
from applianced.rules.jail import Jail
from applianced.rules.message import SyslogMessage

__all__ = ["Explanation", "JailWalk", "Tried", "explain"]


@dataclass(frozen=True, slots=True)
class Tried:
    """One regex of a jail and what it did with the message's text."""

    number: int  # 1-based, as `check` and the filter errors count them
    regex: str
    result: str  # "matched", "not matched", "not tried" (an earlier one matched)


@dataclass(frozen=True, slots=True)
class JailWalk:
    """One jail's way with the message: ``verdict`` is "unread" (its programs or senders do
    not take it), "no literal", "missed", "ignored", "never ban", "lookup" (a hostname, for
    usedns), "no address" (a multi-line filter's hit whose address an earlier line names) or
    "failure"; ``steps`` say it in words, in order."""

    jail: str
    verdict: str
    steps: tuple[str, ...]
    reads: str | None = None  # which text the filter reads: "msg" or "line"
    text: str | None = None
    failregex: tuple[Tried, ...] = ()
    ignoreregex: tuple[Tried, ...] = ()
    match: dict[str, Any] | None = None  # host, address, user, fields, prefix


@dataclass(frozen=True, slots=True)
class Explanation:
    shape: str  # the grammar the parser read it by (receiver.parse.shape)
    message: dict[str, Any]  # the parsed fields (receiver.parse.message_fields)
    jails: tuple[JailWalk, ...]
    summary: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def explain(
    message: SyslogMessage, shape: str, fields: dict[str, Any], jails: Iterable[Jail]
) -> Explanation:
    """The walk of ``message`` (read as ``shape``, its ``fields`` as ``message_fields`` gives
    them) through ``jails``, in their order."""
    walks = tuple(_walk(jail, message) for jail in jails)
    return Explanation(shape, fields, walks, _summary(message, walks))


def _summary(message: SyslogMessage, walks: tuple[JailWalk, ...]) -> str:
    program = repr(message.app_name) if message.app_name else "no program"
    read = [w for w in walks if w.verdict != "unread"]
    if not read:
        return f"no jail reads it ({program}): counted as gated_unread"
    failures = [w.jail for w in read if w.verdict in ("failure", "lookup")]
    if failures:
        return f"a failure for {', '.join(failures)}"
    partial = [w.jail for w in read if w.verdict == "no address"]
    if partial:
        return (
            f"read by {', '.join(partial)}, a failure only with the address an earlier line "
            "named (explain reads one line)"
        )
    spared = [w.jail for w in read if w.verdict == "never ban"]
    if spared:
        return f"a failure of an address {', '.join(spared)} never bans: counted as ignored"
    names = ", ".join(w.jail for w in read)
    if all(w.verdict == "no literal" for w in read):
        return f"read by {names}, none of their literals in it: counted as gated_no_literal"
    return f"read by {names}, and no failure found: counted as unmatched"


def _walk(jail: Jail, message: SyslogMessage) -> JailWalk:
    programs = ", ".join(jail.conf.programs) or "every program"
    if not jail.reads_program(message.app_name):
        program = repr(message.app_name) if message.app_name else "none"
        why = f"reads {programs}; the message's program is {program}"
        return JailWalk(jail.name, "unread", (why,))
    steps = [f"reads {programs}: {jail.reads_program.entry(message.app_name)} takes it"]
    if jail.conf.senders:
        allowed = ", ".join(str(n) for n in jail.conf.senders)
        if message.sender is None:
            steps.append(f"reads only senders {allowed}; this line has no sender: not checked")
        elif not jail.reads_sender(message.sender):
            steps.append(f"reads only senders {allowed}, not {message.sender}")
            return JailWalk(jail.name, "unread", tuple(steps))
    filt = jail.filter
    steps.append(f"its filter reads the {'traditional line' if filt.on_line else 'MSG'}")
    return _examine(jail, " " + message.line if filt.on_line else message.msg, steps)


def _examine(jail: Jail, text: str, steps: list[str]) -> JailWalk:
    """The jail's filter on ``text``: its prefilter, failregexes, ignoreregexes, never-ban."""
    filt = jail.filter

    def walk(verdict: str, step: str, **found: Any) -> JailWalk:
        steps.append(step)
        reads = "line" if filt.on_line else "msg"
        return JailWalk(jail.name, verdict, tuple(steps), reads, text, **found)

    if filt.literals and not any(literal in text for literal in filt.literals):
        shown = ", ".join(repr(literal) for literal in filt.literals)
        return walk(
            "no literal",
            f"the text holds none of the prefilter literals {shown} (a message that no jail "
            "reading it finds a literal in is dropped at the gate: gated_no_literal)",
        )
    if filt.multiline:
        steps.append(
            "a multi-line filter: explain reads this line alone; the daemon reads it with the "
            "lines before it from the same sender, program and pid"
        )
    outcome, match, index = filt.examine(text)
    tried = _failregexes(filt, index)
    if outcome is Outcome.MISSED or match is None or index is None:
        pref = f"its prefregex {filt.prefregex!r} did not match, or " if filt.prefregex else ""
        return walk("missed", f"{pref}none of its {len(tried)} failregexes matched",
                    failregex=tried)  # fmt: skip
    steps.append(f"failregex #{index + 1} matched: host {match.host!r}")
    found = {"failregex": tried, "match": _match_json(match)}
    if outcome is Outcome.IGNORED:
        ignored = _ignoreregexes(filt, index, text)
        hit = next((t for t in ignored if t.result == "matched"), None)
        why = "its <F-NOFAIL> group" if hit is None else f"ignoreregex #{hit.number}"
        return walk("ignored", f"{why} matched: not a failure", ignoreregex=ignored, **found)
    if not match.host:
        return walk("no address", "it took no address: a failure only for the address an "
                    "earlier line of its connection (<F-MLFID>) named", **found)  # fmt: skip
    if match.address is None:
        return walk("lookup", f"{match.host!r} is a hostname: the daemon resolves it (usedns)",
                    **found)  # fmt: skip
    if jail.ignores(match.address):
        network = next(str(n) for n in jail.never_ban if match.address in n)
        why = "ignoreip, an allowed sender or the appliance's own address"
        return walk("never ban", f"{match.address} is in {network}, never banned ({why})",
                    **found)  # fmt: skip
    conf = jail.conf
    rule = f"{conf.maxretry} within {conf.findtime:g} s ban it"
    return walk("failure", f"a failure of {match.address}: {rule}", **found)


def _failregexes(filt: Filter, hit: int | None) -> tuple[Tried, ...]:
    """Each failregex and what examine did with it: they run in order until one matches."""
    return tuple(
        Tried(number + 1, regex, _result(number, hit))
        for number, regex in enumerate(filt.failregex)
    )


def _result(number: int, hit: int | None) -> str:
    if hit is None or number < hit:
        return "not matched"
    return "matched" if number == hit else "not tried"


def _ignoreregexes(filt: Filter, hit: int, text: str) -> tuple[Tried, ...]:
    """Each ignoreregex tried alone against the failure the ``hit``-th failregex found."""
    failregex = filt.failregex[hit]
    return tuple(
        Tried(
            number,
            regex,
            "matched"
            if _alone(filt, [failregex], [regex]).examine(text)[0] is Outcome.IGNORED
            else "not matched",
        )
        for number, regex in enumerate(filt.ignoreregex, start=1)
    )


def _alone(filt: Filter, failregex: list[str], ignoreregex: list[str]) -> Filter:
    """A filter of the same options with only these regexes (compiled once per explain)."""
    return Filter(
        failregex,
        ignoreregex,
        allow_dns=filt.allow_dns,
        name=filt.name,
        prefregex=filt.prefregex,
        on_line=filt.on_line,
    )


def _match_json(match: Match) -> dict[str, Any]:
    return {
        "host": match.host,
        "address": None if match.address is None else str(match.address),
        "user": match.user,
        "fields": dict(match.fields),
        "prefix": match.prefix,
    }
