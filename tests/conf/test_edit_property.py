"""conf/edit.py over generated config files: whatever the layout (tables in any order, the
jail's table last, no blank lines, no final newline, comments anywhere, [defaults] missing,
written as dotted keys or an inline table), every edit verb gives a file that still loads
with exactly the intended change and every comment kept, or a clear refusal that writes
nothing. The expected result comes from a model of each verb over the plain TOML data."""

from __future__ import annotations

import copy
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from applianced.conf import edit
from applianced.conf.load import load_config
from applianced.errors import ApplianceError

JAILS = ("sshd", "postfix-sasl")  # shipped filters: `jail enable` may add them
ADDRESSES = ("192.0.2.10", "198.51.100.0/24", "2001:db8::/48")

LISTENERS = '[[listeners]]\ntransport = "udp"\naddress = "127.0.0.1"\nport = 5514\n'
DAEMON = '[daemon]\nstate_dir = "/var/lib/applianced"\n'


# -- the files ----------------------------------------------------------------------------------

COMMENT = "# c"  # numbered once the file is laid out: # c0, # c1...


@st.composite
def jail_body(draw: st.DrawFn, name: str) -> list[str]:
    """A jail's key lines: its filter, then some of maxretry, enabled, ignoreip and a dotted
    bantime_increment key, each maybe with a trailing comment."""
    lines = [f'filter = "{name}"']
    if draw(st.booleans()):
        lines.append(f"maxretry = {draw(st.integers(1, 9))}")
    if draw(st.booleans()):
        lines.append(f"enabled = {draw(st.sampled_from(['true', 'false']))}")
    if draw(st.booleans()):
        listed = draw(st.lists(st.sampled_from(ADDRESSES), unique=True, max_size=2))
        lines.append("ignoreip = [" + ", ".join(f'"{a}"' for a in listed) + "]")
    if draw(st.booleans()):
        lines.append("bantime_increment.factor = 3.0")
    return [line + (f"  {COMMENT}" if draw(st.booleans()) else "") for line in lines]


@st.composite
def config_files(draw: st.DrawFn) -> str:
    """Tables in any order, each followed by a blank line or not, comment lines anywhere;
    [defaults] absent, a table, dotted keys or an inline table; a jail a table, a table with
    a [jails.NAME.bantime_increment] sub-table, or an inline table."""
    top: list[str] = []  # dotted keys and inline tables: before the first header
    blocks = [LISTENERS.rstrip("\n").split("\n")]
    if draw(st.booleans()):
        blocks.append(DAEMON.rstrip("\n").split("\n"))
    defaults = draw(st.sampled_from(["none", "table", "dotted", "inline"]))
    maxretry = draw(st.integers(1, 9))
    if defaults == "table":
        blocks.append(["[defaults]", f"maxretry = {maxretry}"])
    elif defaults == "dotted":
        top.append(f"defaults.maxretry = {maxretry}")
    elif defaults == "inline":
        top.append(f'defaults = {{ maxretry = {maxretry}, ignoreip = ["{ADDRESSES[0]}"] }}')
    for name in draw(st.lists(st.sampled_from(JAILS), unique=True, max_size=2)):
        form = draw(st.sampled_from(["table", "subtable", "inline"]))
        if form == "inline":
            top.append(f'jails.{name} = {{ filter = "{name}", maxretry = 2 }}')
            continue
        body = draw(jail_body(name))
        if form == "subtable":
            body = [b for b in body if not b.startswith("bantime_increment")]
            blocks.append([f"[jails.{name}]", *body])
            blocks.append([f"[jails.{name}.bantime_increment]", "factor = 2.5"])
        else:
            blocks.append([f"[jails.{name}]", *body])
    order = draw(st.permutations(range(len(blocks))))
    lines = list(top)
    for i in order:
        for line in blocks[i]:
            if draw(st.integers(0, 4)) == 0:
                lines.append(COMMENT)
            lines.append(line)
        if draw(st.booleans()):
            lines.append("")
    count = iter(range(len(lines)))
    text = re.sub(r"# c\b", lambda _: f"# c{next(count)}", "\n".join(lines))
    return text + ("\n" if draw(st.booleans()) else "")


# -- the edits and their model ------------------------------------------------------------------

Model = Callable[[dict[str, Any], str], None]  # changes the plain data, or raises Refused


class Refused(Exception):
    """The model's word for: the edit must be refused."""


def jail_of(data: dict[str, Any], name: str) -> dict[str, Any]:
    jail = data.get("jails", {}).get(name)
    if jail is None:
        raise Refused
    return jail  # type: ignore[no-any-return]


def set_key(name: str, option: str, value: Any) -> Model:
    def model(data: dict[str, Any], layout: str) -> None:
        jail = jail_of(data, name)
        head, _, sub = option.partition(".")
        if sub:
            jail.setdefault(head, {})[sub] = value
        else:
            jail[option] = value

    return model


def unset_key(name: str, option: str) -> Model:
    def model(data: dict[str, Any], layout: str) -> None:
        jail = jail_of(data, name)
        head, _, sub = option.partition(".")
        if sub:
            jail.get(head, {}).pop(sub, None)
        else:
            jail.pop(option, None)

    return model


def enable(name: str, on: bool) -> Model:
    def model(data: dict[str, Any], layout: str) -> None:
        jails = data.get("jails", {})
        if name not in jails and on:
            data.setdefault("jails", {})[name] = {"filter": name}
            return
        jail = jail_of(data, name)
        if "enabled" in jail or not on:
            jail["enabled"] = on

    return model


def general(on: bool) -> Model:
    """``disable`` marks each line it writes and ``enable`` undoes only marked lines: the files
    drawn here carry no mark, so ``enable`` is refused; so is ``disable`` where a jail is an
    inline table, which has no room for the mark."""

    def model(data: dict[str, Any], layout: str) -> None:
        if on or not data.get("jails") or re.search(r"^jails\.[\w-]+ = \{", layout, re.M):
            raise Refused
        for name in data["jails"]:
            enable(name, on)(data, layout)

    return model


def listed(name: str | None, address: str, add: bool) -> Model:
    def model(data: dict[str, Any], layout: str) -> None:
        table = data.setdefault("defaults", {}) if name is None else jail_of(data, name)
        entries = table.get("ignoreip", [])
        if add and address not in entries:
            table["ignoreip"] = [*entries, address]
        elif not add:
            if address not in entries:
                raise Refused
            table["ignoreip"] = [e for e in entries if e != address]

    return model


@st.composite
def edits(draw: st.DrawFn) -> tuple[str, Callable[[Path], edit.EditResult], Model, str | None]:
    """(what, the edit, its model, the key whose line it may remove)."""
    name = draw(st.sampled_from(JAILS))
    verb = draw(st.sampled_from(["set", "unset", "enable", "general", "whitelist"]))
    if verb == "set":
        option, text, value = draw(
            st.sampled_from(
                [
                    ("maxretry", "7", 7),
                    ("hook", "forward", "forward"),
                    ("bantime", "1h", "1h"),
                    ("bantime_increment.factor", "4", 4.0),
                    ("ignoreip", "203.0.113.0/24", ["203.0.113.0/24"]),
                    ("enabled", "false", False),
                ]
            )
        )
        return (
            f"jail set {name} {option} {text}",
            lambda p: edit.jail_set(p, name, option, text),
            set_key(name, option, value),
            None,
        )
    if verb == "unset":
        option = draw(
            st.sampled_from(["maxretry", "enabled", "ignoreip", "bantime_increment.factor"])
        )
        return (
            f"jail unset {name} {option}",
            lambda p: edit.jail_unset(p, name, option),
            unset_key(name, option),
            option.rpartition(".")[2],
        )
    on = draw(st.booleans())
    if verb == "enable":
        return (
            f"jail {'en' if on else 'dis'}able {name}",
            lambda p: edit.jail_enable(p, name, on),
            enable(name, on),
            None,
        )
    if verb == "general":
        return f"general {on}", lambda p: edit.general_enable(p, on), general(on), None
    where = draw(st.sampled_from([None, name]))
    address = draw(st.sampled_from(ADDRESSES))
    return (
        f"whitelist {'add' if on else 'remove'} {where or '--global'} {address}",
        lambda p: edit.whitelist(p, where, address, on),
        listed(where, address, on),
        None,
    )


def plain(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` without empty bantime_increment tables: unsetting a table's last sub-key may
    leave its header ([jails.NAME.bantime_increment]) or drop its dotted line."""
    for jail in data.get("jails", {}).values():
        if jail.get("bantime_increment") == {}:
            del jail["bantime_increment"]
    return data


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("edits") / "appliance.toml"


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(layout=config_files(), change=edits())
def test_every_edit_of_any_layout_loads_keeps_comments_or_is_refused(
    work: Path,
    layout: str,
    change: tuple[str, Callable[[Path], edit.EditResult], Model, str | None],
) -> None:
    what, apply, model, removable = change
    before = layout
    work.write_text(before)
    expected = copy.deepcopy(tomllib.loads(before))
    try:
        model(expected, before)
    except Refused:
        event("refused")
        with pytest.raises(ApplianceError):
            apply(work)
        assert work.read_text() == before, what
        return
    changed = apply(work).changed
    event("changed" if changed else "nothing to change")
    after = work.read_text()
    assert plain(tomllib.loads(after)) == plain(expected), f"{what}\n{before}\n---\n{after}"
    load_config(work)
    for line in before.splitlines():
        for mark in re.findall(r"# c\d+", line):
            if removable and re.match(rf"\s*(?:[\w.]*\.)?{removable}\s*=", line):
                continue
            kept = mark in after or (what == "general False" and f"; {mark[2:]}" in after)
            assert kept, f"{what}: lost {line!r}\n--- after\n{after}"
    if what == "general False" and changed:
        edit.general_enable(work, True)
        again = work.read_text()
        # The same lines and data; tomlkit may regroup the parts of an out-of-order table.
        lines = sorted(filter(None, again.splitlines()))
        assert lines == sorted(filter(None, before.splitlines())), f"{before}\n---\n{again}"
        assert tomllib.loads(again) == tomllib.loads(before)
