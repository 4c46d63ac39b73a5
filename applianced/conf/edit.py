"""Live edits of the config file that keep its comments and layout, whatever it is (tables in
any order, dotted keys, inline tables): ``appliancectl jail set``, ``jail unset``, ``jail
enable|disable``, ``whitelist add|remove``, ``general enable|disable``.

Each edit reads the file with tomlkit, changes one value (or inserts one key next to the table's
other keys), validates the WHOLE resulting text with the real loader (``parse_config``) and only
then writes it: atomically (a temp file in the same directory, fsync, ``os.replace``) with the
original's mode and owner (``conf/files.py``). A value the loader refuses raises its
``ConfigError`` (file, line, key) and nothing is written. Edits of one file are serialised with
a lock on its directory (``conf/files.py``).
Telling the daemon to reload is the caller's job (``cli/edits.py``). No reactor, no logging here.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.container import Container, OutOfOrderTableProxy
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import Array, Comment, InlineTable, Item, Table, Whitespace
from tomlkit.toml_document import TOMLDocument

from applianced.conf.files import locked, write_atomic
from applianced.conf.filterfiles.native import shipped_filter_names
from applianced.conf.jailkeys import JAIL_OPTIONS, POLICY_KEYS
from applianced.conf.load import parse_config
from applianced.conf.paths import read_config
from applianced.conf.schema import Config
from applianced.errors import ApplianceError, ConfigError
from applianced.rules.addresses import parse_network

__all__ = [
    "JAIL_OPTIONS",
    "Change",
    "EditError",
    "EditResult",
    "general_enable",
    "jail_enable",
    "jail_set",
    "jail_unset",
    "parse_value",
    "whitelist",
]

# How `jail set` reads VALUE for each option. Anything the loader would refuse (``maxretry
# abc``) is passed through as a string so the loader's message, with file and line, says why.
_INTS = {"maxretry", "max_count", "max_tracked", "ipv6_prefix"}
_DURATIONS = {
    "bantime",
    "findtime",
    "findtime_history",
    "bantime_jitter",
    "bantime_increment.maxtime",
}
_FLOATS = {"bantime_increment.factor"}
_BOOLS = {"enabled", "use_dns", "log_found", "bantime_increment.enabled"}
# The comment of an ``enabled = false`` line that ``general disable`` wrote; ``general enable``
# undoes exactly those lines.
GENERAL_MARK = "# appliancectl general disable"
_WAS_TRUE = " (was true)"
_LISTS = {"ports", "ignoreip", "senders", "notify", "programs"}  # VALUE: a comma list
_REGEXES = {"failregex", "ignoreregex"}  # VALUE: one regex (a TOML array for several)
_STRINGS = {"filter", "filter_dir", "protocol", "hook", "verdict", "usedns"}
# usedns replaces the older use_dns: setting one drops the other from the jail's table.
_REPLACES = {"usedns": "use_dns", "use_dns": "usedns"}

# What `jail unset` may drop: a key [defaults] (or the built-in policy) supplies, and enabled.
_UNSETTABLE = {o for o in JAIL_OPTIONS if o.partition(".")[0] in POLICY_KEYS} | {"enabled"}

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


class EditError(ApplianceError):
    """An edit that cannot be made (unknown jail or option, address not listed...)."""


@dataclass(frozen=True, slots=True)
class Change:
    """One value changed in the file: ``table`` is dotted (``jails.sshd``, ``defaults``)."""

    table: str
    key: str
    old: Any
    new: Any


@dataclass(slots=True)
class EditResult:
    """What an edit did. ``config`` is the validated new configuration (the old one when
    nothing changed); ``created`` names a jail table the edit added."""

    path: Path
    changes: list[Change] = field(default_factory=list)
    config: Config | None = None
    created: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self.changes) or self.created is not None


# -- the public edits ---------------------------------------------------------------------------


def jail_set(path: Path, jail: str, option: str, value: str) -> EditResult:
    """Set ``option`` of jail ``jail`` to ``value`` as an operator typed it."""
    if option == "bantime_increment":
        raise EditError(
            "set bantime_increment.enabled, bantime_increment.factor or bantime_increment.maxtime"
        )
    if option not in JAIL_OPTIONS:
        raise EditError(f"unknown jail option {option!r}; options: {', '.join(JAIL_OPTIONS)}")
    parsed = parse_value(option, value)

    def change(doc: TOMLDocument, result: EditResult) -> None:
        table = _jail_table(doc, jail, path)
        head, _, sub = option.partition(".")
        if sub:
            inc = table.get(head)
            if isinstance(inc, Table | InlineTable):
                _set(inc, sub, parsed, result, f"jails.{jail}.{head}")
                return
            if inc is not None:
                raise EditError(f"jails.{jail}.{head} in {path} is not a table; fix it by hand")
            if isinstance(table, InlineTable):  # a nested inline table in an inline one
                nested = tomlkit.inline_table()
                nested[sub] = parsed
                table[head] = nested
                result.changes.append(Change(f"jails.{jail}", option, None, parsed))
                return
            _set(table, tomlkit.key([head, sub]), parsed, result, f"jails.{jail}", option)
            return
        older = _REPLACES.get(option)
        if older is not None and older in table:
            result.changes.append(Change(f"jails.{jail}", older, table[older], None))
            del table[older]
        _set(table, option, parsed, result, f"jails.{jail}")

    return _edit(path, change)


def jail_unset(path: Path, jail: str, option: str) -> EditResult:
    """Remove ``option`` from jail ``jail``: it falls back to ``[defaults]``, or the built-in
    default. Options with nothing to fall back to (``filter``, ``failregex``...) are refused."""
    if option not in JAIL_OPTIONS:
        raise EditError(f"unknown jail option {option!r}; options: {', '.join(JAIL_OPTIONS)}")
    if option not in _UNSETTABLE:
        raise EditError(
            f"{option} has no default to fall back to ([defaults] cannot set it): change it "
            f"with `appliancectl jail set {jail} {option} VALUE`"
        )

    def change(doc: TOMLDocument, result: EditResult) -> None:
        table = _jail_table(doc, jail, path)
        head, _, sub = option.partition(".")
        if not sub:
            _remove(table, option, result, f"jails.{jail}")
            return
        inc = table.get(head)
        if not isinstance(inc, Table | InlineTable | OutOfOrderTableProxy) or sub not in inc:
            return
        if len(inc) == 1 and _is_dotted(table, head):  # bantime_increment.factor = 3: the line
            result.changes.append(Change(f"jails.{jail}", option, inc.unwrap()[sub], None))
            del table[head]
            return
        _remove(inc, sub, result, f"jails.{jail}.{head}")

    return _edit(path, change)


def jail_enable(path: Path, jail: str, enabled: bool) -> EditResult:
    """Enable or disable one jail. Enabling a jail the file lacks but that names a shipped
    filter adds ``[jails.NAME]`` with ``filter = "NAME"`` (every port: set ``ports`` next)."""

    def change(doc: TOMLDocument, result: EditResult) -> None:
        jails = _jails(doc)
        if jail not in jails and enabled and jail in shipped_filter_names():
            new = tomlkit.table()
            new.add("filter", jail)
            if "jails" not in doc:
                doc.add("jails", tomlkit.table(is_super_table=True))
            doc["jails"][jail] = new
            result.created = jail
            return
        _set_enabled(_jail_table(doc, jail, path), jail, enabled, result)

    return _edit(path, change)


def general_enable(path: Path, enabled: bool) -> EditResult:
    """Disable every enabled jail of the file, marking each ``enabled = false`` line with
    ``GENERAL_MARK``; or enable exactly the jails so marked, giving their lines back as they
    were (MailCleaner's ``general enable|disable``, as a round trip: the examples disabled
    before stay disabled)."""

    def change(doc: TOMLDocument, result: EditResult) -> None:
        jails = _jails(doc)
        if not jails:
            raise EditError(f"{path} has no [jails.NAME] tables")
        tables = {name: _jail_table(doc, name, path) for name in jails}
        if not enabled:
            for name, table in tables.items():
                _general_disable(table, name, result)
            return
        marked = [n for n, t in tables.items() if _general_mark(t) is not None]
        if not marked:
            raise EditError(
                f"no jail of {path} was disabled by `appliancectl general disable`; enable "
                "jails one at a time with `appliancectl jail enable NAME`"
            )
        for name in marked:
            _general_enable(tables[name], name, result)

    return _edit(path, change)


def whitelist(path: Path, jail: str | None, address: str, add: bool) -> EditResult:
    """Add ``address`` (an address or CIDR) to, or remove it from, the ``ignoreip`` of jail
    ``jail`` or, with ``jail=None``, of ``[defaults]`` (every jail)."""
    try:
        network = parse_network(address)
    except ValueError:
        raise EditError(
            f"{address!r} is not an address or CIDR (203.0.113.7, 2001:db8::/48)"
        ) from None
    where = "defaults" if jail is None else f"jails.{jail}"

    def change(doc: TOMLDocument, result: EditResult) -> None:
        if jail is None:
            if "defaults" not in doc:
                doc.add("defaults", tomlkit.table())
            table: Any = doc["defaults"]
        else:
            table = _jail_table(doc, jail, path)
        current = table.get("ignoreip")
        if current is not None and not isinstance(current, list):
            raise EditError(f"{where}.ignoreip in {path} is not a list; fix it by hand")
        entries = list(current or [])
        same = [i for i, e in enumerate(entries) if _same_network(e, network)]
        if add and same:
            return  # already listed: nothing to do
        if not add and not same:
            raise EditError(f"{address} is not in {where}.ignoreip of {path}")
        if not isinstance(current, Array):
            _set(table, "ignoreip", [address.strip()], result, where, "ignoreip")
            return
        # Changed in place, so a hand-written multi-line list keeps its comments.
        before = current.as_string()
        if add:
            current.append(address.strip())
        else:
            for i in reversed(same):
                del current[i]
        if "\n" not in before:
            _keep_comment_column(current, len(before))
        result.changes.append(Change(where, "ignoreip", entries, current.unwrap()))

    return _edit(path, change)


def parse_value(option: str, text: str) -> Any:
    """``jail set`` VALUE for ``option``: numbers, durations (``10m`` stays a string), true/false,
    comma lists for list options; a value written as TOML (``[...]``, ``"..."``) is taken as is."""
    raw = text.strip()
    if raw[:1] in ("[", "{", '"', "'"):
        try:
            return tomlkit.parse(f"v = {raw}").unwrap()["v"]
        except TOMLKitError as e:
            raise EditError(f"{option}: {raw!r} is not a TOML value: {e}") from None
    if option in _INTS:
        return int(raw) if re.fullmatch(r"[+-]?\d+", raw) else raw
    if option in _DURATIONS:
        if re.fullmatch(r"\d+", raw):
            return int(raw)
        return float(raw) if re.fullmatch(r"\d+\.\d*", raw) else raw
    if option in _FLOATS:
        try:
            return float(raw)
        except ValueError:
            return raw
    if option in _BOOLS:
        low = raw.lower()
        return True if low in _TRUE else False if low in _FALSE else raw
    if option in _LISTS:
        items = [i.strip() for i in raw.split(",") if i.strip()]
        if option == "ports":
            return [int(i) if i.isdigit() else i for i in items]
        return items
    if option in _REGEXES:
        return [text]
    return raw


# -- the machinery ------------------------------------------------------------------------------


def _edit(path: Path, change: Callable[[TOMLDocument, EditResult], None]) -> EditResult:
    """Read, change, validate, write; the whole cycle under the directory's lock."""
    real = Path(path).resolve()  # a symlinked config: edit its target, keep the link
    result = EditResult(path)
    with locked(real.parent):
        text = read_config(real, Path(path))
        try:
            doc = tomlkit.parse(text)
        except TOMLKitError as e:
            raise ConfigError(path, "", f"not valid TOML: {e}") from None
        change(doc, result)
        new_text = doc.as_string()
        if "\r\n" in text:  # a Windows editor's file: the lines tomlkit adds end in LF alone
            new_text = new_text.replace("\r\n", "\n").replace("\n", "\r\n")
        # The loader sees exactly what would be written; a refusal leaves the file alone.
        try:
            result.config = parse_config(new_text, Path(path))
        except ConfigError as e:
            if e.line is not None:
                raise
            # The loader could not place the key (a dotted key, a missing table): point at
            # the line this edit changed.
            line = _first_changed_line(text, new_text)
            raise ConfigError(e.path, e.key, e.message, line) from None
        if new_text == text:
            result.changes.clear()
            result.created = None
            return result
        write_atomic(real, new_text)
    return result


def _jails(doc: TOMLDocument) -> dict[str, Any]:
    jails = doc.get("jails")
    return dict(jails) if isinstance(jails, Table | InlineTable | OutOfOrderTableProxy) else {}


def _jail_table(doc: TOMLDocument, jail: str, path: Path) -> Any:
    jails = _jails(doc)
    table = jails.get(jail)
    if isinstance(table, Table | InlineTable | OutOfOrderTableProxy):
        return doc["jails"][jail]
    if table is not None:
        raise EditError(f"jails.{jail} in {path} is not a table; fix it by hand")
    hint = ""
    if jail in shipped_filter_names():
        hint = f"; `appliancectl jail enable {jail}` adds it (shipped filter {jail!r})"
    names = ", ".join(jails) or "none"
    raise EditError(f"no jail {jail!r} in {path} (jails: {names}){hint}")


def _set_enabled(table: Any, jail: str, enabled: bool, result: EditResult) -> None:
    if enabled and _general_mark(table) is not None:
        _general_enable(table, jail, result)  # the operator's choice now, not general's
        if "enabled" not in table:
            return
    if "enabled" in table:
        _set(table, "enabled", enabled, result, f"jails.{jail}")
    elif not enabled:  # absent means enabled; `enabled = false` goes first, as in the examples
        _set(table, "enabled", False, result, f"jails.{jail}", first=True)


def _general_mark(table: Any) -> str | None:
    """What follows ``GENERAL_MARK`` in the comment of the jail's ``enabled = false`` line
    ("" when general disable added the line), or None when the line has no mark."""
    table = _concrete(table)
    if "enabled" not in table:
        return None
    item = table.item("enabled")
    comment: str = item.trivia.comment
    if item.unwrap() is not False or not comment.startswith(GENERAL_MARK):
        return None
    return comment[len(GENERAL_MARK) :]


def _general_disable(table: Any, jail: str, result: EditResult) -> None:
    """``enabled = false`` marked with ``GENERAL_MARK``: a line added, or a ``true`` one
    changed (its comment kept after the mark)."""
    table = _concrete(table)
    if isinstance(table, InlineTable):  # no comment fits inside one: no mark to undo
        raise EditError(
            f"jail {jail} is an inline table (jails.{jail} = {{ ... }}), which cannot carry the "
            f"mark `general enable` reads; write it as a [jails.{jail}] table, or disable "
            "jails one at a time with `appliancectl jail disable NAME`"
        )
    if "enabled" not in table:
        _set(table, "enabled", False, result, f"jails.{jail}", first=True)
        _mark(table.item("enabled"), GENERAL_MARK)
    elif table["enabled"] is True or table.item("enabled").unwrap() is True:
        item = table.item("enabled")
        old = item.trivia.comment.removeprefix("#").strip()
        _set(table, "enabled", False, result, f"jails.{jail}")
        _mark(table.item("enabled"), GENERAL_MARK + _WAS_TRUE + (f"; {old}" if old else ""))


def _mark(item: Item, comment: str) -> None:
    item.trivia.comment_ws = item.trivia.comment_ws or "  "
    item.trivia.comment = comment


def _general_enable(table: Any, jail: str, result: EditResult) -> None:
    """Undo ``_general_disable``: the added line removed, the changed one back to ``true``
    with its own comment."""
    table = _concrete(table)
    rest = _general_mark(table)
    if rest is None:
        return
    if not rest.startswith(_WAS_TRUE):
        table.remove("enabled")
        result.changes.append(Change(f"jails.{jail}", "enabled", False, None))
        return
    old = rest.removeprefix(_WAS_TRUE).removeprefix("; ")
    _set(table, "enabled", True, result, f"jails.{jail}")
    item = table.item("enabled")
    item.trivia.comment = f"# {old}" if old else ""
    if not old:
        item.trivia.comment_ws = ""


def _set(
    table: Any,
    key: str | Any,
    value: Any,
    result: EditResult,
    where: str,
    name: str | None = None,
    first: bool = False,
) -> None:
    """Set ``table[key]`` keeping the line's comment (and its column when it can); a new key
    goes after the table's last key, before any trailing comment or blank lines."""
    table = _concrete(table)
    label = name or str(key)
    old_item = table.get(key) if isinstance(key, str) else None
    old = old_item.unwrap() if isinstance(old_item, Item) else old_item
    if old_item is not None:
        if old == value and type(old) is type(value):
            return
        before = len(table.item(key).as_string())
        table[key] = value
        _keep_comment_column(table.item(key), before)
    else:
        container = table.value if isinstance(table, Table) else None
        at = 0 if first or container is None else _after_last_key(container)
        if container is not None and at < len(container.body):
            container._insert_at(at, key, value)
        else:  # an inline table, or the table's end (tomlkit inserts only before an item)
            table[key] = value
    result.changes.append(Change(where, label, old, value))


def _remove(table: Any, key: str, result: EditResult, where: str) -> None:
    """Delete ``table[key]`` and its line; absent: nothing to do."""
    table = _concrete(table)
    if key not in table:
        return
    item = table.get(key)
    result.changes.append(
        Change(where, key, item.unwrap() if isinstance(item, Item) else item, None)
    )
    del table[key]


def _concrete(table: Any) -> Any:
    """The part of an out-of-order table (``[jails.a.bantime_increment]`` before
    ``[jails.a]``) that holds its own keys; any other table as it is."""
    if not isinstance(table, OutOfOrderTableProxy):
        return table
    parts: list[Table] = table._tables
    return next((t for t in parts if not t.is_super_table()), parts[0])


def _is_dotted(table: Any, key: str) -> bool:
    """Whether ``key`` is written as dotted keys (``key.sub = ...``) rather than a table."""
    container = table.value if isinstance(table, Table) else None
    return isinstance(container, Container) and any(
        k is not None and k.key == key and k.is_dotted() for k, _ in container.body
    )


def _after_last_key(container: Container) -> int:
    """The body index just after the last key/value of the table itself (not of sub-tables),
    so a new key does not land below a comment that introduces the next table."""
    index = 0
    for i, (k, item) in enumerate(container.body):
        if isinstance(item, Table):
            break
        if k is not None and not isinstance(item, Whitespace | Comment):
            index = i + 1
    return index


def _first_changed_line(before: str, after: str) -> int | None:
    old, new = before.splitlines(), after.splitlines()
    for tag, _, _, j1, _ in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        if tag != "equal":
            return j1 + 1 if j1 < len(new) else None
    return None


def _keep_comment_column(item: Item, before: int) -> None:
    """A longer or shorter value must not push the line's comment out of its column."""
    trivia = item.trivia
    if not trivia.comment or not trivia.comment_ws:
        return
    grow = len(item.as_string()) - before
    width = len(trivia.comment_ws.expandtabs())
    trivia.comment_ws = " " * max(1, width - grow)


def _same_network(entry: Any, network: Any) -> bool:
    try:
        return bool(parse_network(str(entry)) == network)
    except ValueError:
        return False
