"""Live edits of the config file that keep its comments and layout, whatever it is (tables in
any order, dotted keys, inline tables): ``appliancectl jail set``, ``jail unset``, ``jail
enable|disable``, ``whitelist add|remove``, ``general enable|disable``.

Each edit reads the file with tomlkit, changes one value (or inserts one key next to the table's
other keys), validates the WHOLE resulting text with the real loader (``parse_config``) and only
then writes it: atomically (a temp file in the same directory, fsync, ``os.replace``) with the
original's mode and owner (``conf/files.py``). A value the loader refuses raises its
``ConfigError`` (file, line, key) and nothing is written. Edits of one file are serialised with
a lock on its directory (``conf/files.py``). The keys are set and removed in the document by
``conf/tomledit.py``; ``general``'s marks on a jail's ``enabled`` line are ``conf/generalmarks.py``.
Telling the daemon to reload is the caller's job (``cli/edits.py``). No reactor, no logging here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.container import OutOfOrderTableProxy
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import Array, InlineTable, Table
from tomlkit.toml_document import TOMLDocument

from applianced.conf.files import locked, write_atomic
from applianced.conf.filterfiles.native import shipped_filter_names
from applianced.conf.generalmarks import disable_marked, enable_marked, general_mark
from applianced.conf.jailkeys import JAIL_OPTIONS, POLICY_KEYS
from applianced.conf.load import parse_config
from applianced.conf.paths import read_config
from applianced.conf.schema import Config
from applianced.conf.tomledit import (
    Change,
    EditError,
    first_changed_line,
    is_dotted,
    keep_comment_column,
    remove_key,
    set_key,
)
from applianced.errors import ConfigError
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
_LISTS = {"ports", "ignoreip", "senders", "notify", "programs"}  # VALUE: a comma list
_REGEXES = {"failregex", "ignoreregex"}  # VALUE: one regex (a TOML array for several)
_STRINGS = {"filter", "filter_dir", "protocol", "hook", "verdict", "usedns"}
# usedns replaces the older use_dns: setting one drops the other from the jail's table.
_REPLACES = {"usedns": "use_dns", "use_dns": "usedns"}

# What `jail unset` may drop: a key [defaults] (or the built-in policy) supplies, and enabled.
_UNSETTABLE = {o for o in JAIL_OPTIONS if o.partition(".")[0] in POLICY_KEYS} | {"enabled"}

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


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
                set_key(inc, sub, parsed, result.changes, f"jails.{jail}.{head}")
                return
            if inc is not None:
                raise EditError(f"jails.{jail}.{head} in {path} is not a table; fix it by hand")
            if isinstance(table, InlineTable):  # a nested inline table in an inline one
                nested = tomlkit.inline_table()
                nested[sub] = parsed
                table[head] = nested
                result.changes.append(Change(f"jails.{jail}", option, None, parsed))
                return
            set_key(
                table, tomlkit.key([head, sub]), parsed, result.changes, f"jails.{jail}", option
            )
            return
        older = _REPLACES.get(option)
        if older is not None and older in table:
            result.changes.append(Change(f"jails.{jail}", older, table[older], None))
            del table[older]
        set_key(table, option, parsed, result.changes, f"jails.{jail}")

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
            remove_key(table, option, result.changes, f"jails.{jail}")
            return
        inc = table.get(head)
        if not isinstance(inc, Table | InlineTable | OutOfOrderTableProxy) or sub not in inc:
            return
        if len(inc) == 1 and is_dotted(table, head):  # bantime_increment.factor = 3: the line
            result.changes.append(Change(f"jails.{jail}", option, inc.unwrap()[sub], None))
            del table[head]
            return
        remove_key(inc, sub, result.changes, f"jails.{jail}.{head}")

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
        _set_enabled(_jail_table(doc, jail, path), jail, enabled, result.changes)

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
                disable_marked(table, name, result.changes)
            return
        marked = [n for n, t in tables.items() if general_mark(t) is not None]
        if not marked:
            raise EditError(
                f"no jail of {path} was disabled by `appliancectl general disable`; enable "
                "jails one at a time with `appliancectl jail enable NAME`"
            )
        for name in marked:
            enable_marked(tables[name], name, result.changes)

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
            set_key(table, "ignoreip", [address.strip()], result.changes, where, "ignoreip")
            return
        # Changed in place, so a hand-written multi-line list keeps its comments.
        before = current.as_string()
        if add:
            current.append(address.strip())
        else:
            for i in reversed(same):
                del current[i]
        if "\n" not in before:
            keep_comment_column(current, len(before))
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
            line = first_changed_line(text, new_text)
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


def _set_enabled(table: Any, jail: str, enabled: bool, changes: list[Change]) -> None:
    if enabled and general_mark(table) is not None:
        enable_marked(table, jail, changes)  # the operator's choice now, not general's
        if "enabled" not in table:
            return
    if "enabled" in table:
        set_key(table, "enabled", enabled, changes, f"jails.{jail}")
    elif not enabled:  # absent means enabled; `enabled = false` goes first, as in the examples
        set_key(table, "enabled", False, changes, f"jails.{jail}", first=True)


def _same_network(entry: Any, network: Any) -> bool:
    try:
        return bool(parse_network(str(entry)) == network)
    except ValueError:
        return False
