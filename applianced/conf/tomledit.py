"""The tomlkit side of the config's live edits (``conf/edit.py``'s verbs, ``conf/generalmarks.py``):
a key set or removed in a table as a person would have written it, its line's comment kept in
its column, a new key after the table's own keys (not below a comment that introduces the next
table), an out-of-order table's own part found; each change recorded as a ``Change``. No file,
no loader: pure edits of a parsed document.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from tomlkit.container import Container, OutOfOrderTableProxy
from tomlkit.items import Comment, Item, Table, Whitespace

from applianced.errors import ApplianceError

__all__ = [
    "Change",
    "EditError",
    "concrete",
    "first_changed_line",
    "is_dotted",
    "keep_comment_column",
    "remove_key",
    "set_key",
]


class EditError(ApplianceError):
    """An edit that cannot be made (unknown jail or option, address not listed...)."""


@dataclass(frozen=True, slots=True)
class Change:
    """One value changed in the file: ``table`` is dotted (``jails.sshd``, ``defaults``)."""

    table: str
    key: str
    old: Any
    new: Any


def set_key(
    table: Any,
    key: str | Any,
    value: Any,
    changes: list[Change],
    where: str,
    name: str | None = None,
    first: bool = False,
) -> None:
    """Set ``table[key]`` keeping the line's comment (and its column when it can); a new key
    goes after the table's last key, before any trailing comment or blank lines."""
    table = concrete(table)
    label = name or str(key)
    old_item = table.get(key) if isinstance(key, str) else None
    old = old_item.unwrap() if isinstance(old_item, Item) else old_item
    if old_item is not None:
        if old == value and type(old) is type(value):
            return
        before = len(table.item(key).as_string())
        table[key] = value
        keep_comment_column(table.item(key), before)
    else:
        container = table.value if isinstance(table, Table) else None
        at = 0 if first or container is None else _after_last_key(container)
        if container is not None and at < len(container.body):
            container._insert_at(at, key, value)
        else:  # an inline table, or the table's end (tomlkit inserts only before an item)
            table[key] = value
    changes.append(Change(where, label, old, value))


def remove_key(table: Any, key: str, changes: list[Change], where: str) -> None:
    """Delete ``table[key]`` and its line; absent: nothing to do."""
    table = concrete(table)
    if key not in table:
        return
    item = table.get(key)
    changes.append(Change(where, key, item.unwrap() if isinstance(item, Item) else item, None))
    del table[key]


def concrete(table: Any) -> Any:
    """The part of an out-of-order table (``[jails.a.bantime_increment]`` before
    ``[jails.a]``) that holds its own keys; any other table as it is."""
    if not isinstance(table, OutOfOrderTableProxy):
        return table
    parts: list[Table] = table._tables
    return next((t for t in parts if not t.is_super_table()), parts[0])


def is_dotted(table: Any, key: str) -> bool:
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


def first_changed_line(before: str, after: str) -> int | None:
    """The line (from 1) of ``after`` where it first differs from ``before``; None when
    ``after`` only lost lines at its end."""
    old, new = before.splitlines(), after.splitlines()
    for tag, _, _, j1, _ in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        if tag != "equal":
            return j1 + 1 if j1 < len(new) else None
    return None


def keep_comment_column(item: Item, before: int) -> None:
    """A longer or shorter value must not push the line's comment out of its column."""
    trivia = item.trivia
    if not trivia.comment or not trivia.comment_ws:
        return
    grow = len(item.as_string()) - before
    width = len(trivia.comment_ws.expandtabs())
    trivia.comment_ws = " " * max(1, width - grow)
