"""``appliancectl general disable|enable`` on one jail's table: ``enabled = false`` marked with
``GENERAL_MARK`` in its comment (a line added, or a ``true`` one changed and its comment kept
after the mark), and exactly the marked lines given back as they were. Called by
``conf/edit.py``'s ``general_enable`` and ``jail_enable`` (enabling a marked jail by name drops
its mark: the operator's choice now, not general's); the lines edited through ``tomledit.py``.
"""

from __future__ import annotations

from typing import Any

from tomlkit.items import InlineTable, Item

from applianced.conf.tomledit import Change, EditError, concrete, set_key

__all__ = ["GENERAL_MARK", "disable_marked", "enable_marked", "general_mark"]

# The comment of an ``enabled = false`` line that ``general disable`` wrote; ``general enable``
# undoes exactly those lines.
GENERAL_MARK = "# appliancectl general disable"
_WAS_TRUE = " (was true)"


def general_mark(table: Any) -> str | None:
    """What follows ``GENERAL_MARK`` in the comment of the jail's ``enabled = false`` line
    ("" when general disable added the line), or None when the line has no mark."""
    table = concrete(table)
    if "enabled" not in table:
        return None
    item = table.item("enabled")
    comment: str = item.trivia.comment
    if item.unwrap() is not False or not comment.startswith(GENERAL_MARK):
        return None
    return comment[len(GENERAL_MARK) :]


def disable_marked(table: Any, jail: str, changes: list[Change]) -> None:
    """``enabled = false`` marked with ``GENERAL_MARK``: a line added, or a ``true`` one
    changed (its comment kept after the mark)."""
    table = concrete(table)
    if isinstance(table, InlineTable):  # no comment fits inside one: no mark to undo
        raise EditError(
            f"jail {jail} is an inline table (jails.{jail} = {{ ... }}), which cannot carry the "
            f"mark `general enable` reads; write it as a [jails.{jail}] table, or disable "
            "jails one at a time with `appliancectl jail disable NAME`"
        )
    if "enabled" not in table:
        set_key(table, "enabled", False, changes, f"jails.{jail}", first=True)
        _mark(table.item("enabled"), GENERAL_MARK)
    elif table["enabled"] is True or table.item("enabled").unwrap() is True:
        item = table.item("enabled")
        old = item.trivia.comment.removeprefix("#").strip()
        set_key(table, "enabled", False, changes, f"jails.{jail}")
        _mark(table.item("enabled"), GENERAL_MARK + _WAS_TRUE + (f"; {old}" if old else ""))


def _mark(item: Item, comment: str) -> None:
    item.trivia.comment_ws = item.trivia.comment_ws or "  "
    item.trivia.comment = comment


def enable_marked(table: Any, jail: str, changes: list[Change]) -> None:
    """Undo ``disable_marked``: the added line removed, the changed one back to ``true``
    with its own comment."""
    table = concrete(table)
    rest = general_mark(table)
    if rest is None:
        return
    if not rest.startswith(_WAS_TRUE):
        table.remove("enabled")
        changes.append(Change(f"jails.{jail}", "enabled", False, None))
        return
    old = rest.removeprefix(_WAS_TRUE).removeprefix("; ")
    set_key(table, "enabled", True, changes, f"jails.{jail}")
    item = table.item("enabled")
    item.trivia.comment = f"# {old}" if old else ""
    if not old:
        item.trivia.comment_ws = ""
