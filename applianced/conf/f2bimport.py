"""A fail2ban jail tree (``/etc/fail2ban``) into our TOML config: each enabled jail's filter,
counts, times, escalation, ignore list, ports and ban mails, each value with the file and line
it came from and what could not be carried; a jail whose filter does not load here is left
out with the reason. The result is checked as ``appliancectl check`` checks a file.

Called by ``cli/importf2b.py`` (``appliancectl import-fail2ban``); the tree is read by
``filterfiles/f2bjails.py``, its action lines and ports by ``filterfiles/f2bactions.py``; reads
files, writes none.

Over 400 lines: one small function per jail option carried; reading the tree and the action
lines are modules of their own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from applianced.conf.filterfiles import f2bactions
from applianced.conf.filterfiles.f2bjails import F2bJail, JailTree, Value, read_jail_tree
from applianced.conf.filterref import resolve_filter
from applianced.conf.load import parse_config
from applianced.errors import ConfigError, FilterError
from applianced.rules.addresses import parse_network
from applianced.units import MAX_BAN_SECONDS, format_duration, parse_duration

__all__ = ["Imported", "ImportedJail", "import_tree"]

_TRUE = ("true", "yes", "1", "on")
_UNSET = Value("", "", Path(), 0)

# The head of the config written: our daemon and listeners, as the shipped config has them.
_HEAD = """\
[daemon]
state_dir = "/var/lib/applianced"
control_socket = "/run/applianced/control.sock"

[receiver]
# Loopback only, as the shipped config. For the mail servers that forward their syslog here,
# listen on 0.0.0.0:514 and list them in allowed_senders (README: Moving from fail2ban).
allowed_senders = ["127.0.0.0/8", "::1/128"]

[[listeners]]
transport = "udp"
address = "127.0.0.1"
port = 5514

[[listeners]]
transport = "tcp"
address = "127.0.0.1"
port = 5514
"""


@dataclass
class ImportedJail:
    """One jail as written: its keys, where each came from, and what was not carried."""

    name: str
    keys: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    not_carried: list[str] = field(default_factory=list)
    source: str = ""  # where fail2ban enabled it
    logpath: str = ""
    mail: dict[str, str] = field(default_factory=dict)  # the mail action's parameters

    def set(self, key: str, value: Any, origin: Value | str) -> None:
        self.keys[key] = value
        self.origins[key] = origin.origin if isinstance(origin, Value) else origin

    def summary(self) -> dict[str, Any]:
        return {
            "values": self.keys,
            "origins": self.origins,
            "not_carried": self.not_carried,
            "logpath": self.logpath,
        }


@dataclass
class Imported:
    """The config written from a tree, and what the summary (``--json``) tells of it."""

    root: Path
    files: tuple[Path, ...]
    jails: list[ImportedJail]
    skipped: dict[str, str]  # an enabled jail left out -> why
    notify: dict[str, Any]
    notify_origins: dict[str, str]
    not_carried: list[str]  # of the tree as a whole ([notify])
    text: str = ""

    def summary(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "files": [str(p) for p in self.files],
            "jails": {j.name: j.summary() for j in self.jails},
            "skipped": self.skipped,
            "notify": {"values": self.notify, "origins": self.notify_origins},
            "not_carried": self.not_carried,
        }


def import_tree(root: Path, config_path: Path) -> Imported:
    """The TOML config for the enabled jails of the fail2ban tree at ``root``; ``config_path``
    is where it will be read from (checked as if there). Raises JailTreeError for a tree that
    cannot be read."""
    tree = read_jail_tree(root)
    result = Imported(tree.root, tree.files, [], {}, {}, {}, [])
    for f2b in tree.jails:
        if not f2b.enabled:
            continue
        why = _cannot(f2b)
        if why:
            result.skipped[f2b.name] = why
            continue
        jail = _translate(tree, f2b)
        if "notify" in jail.keys:
            _take_notify(result, f2b, jail)
        result.jails.append(jail)
    kept = []
    for jail in result.jails:  # each alone: a filter that does not load leaves only its jail out
        try:
            parse_config(_HEAD + _notify_toml(result) + _jail_toml(jail), config_path)
        except ConfigError as e:
            result.skipped[jail.name] = f"does not load here: {e.message}"
            continue
        kept.append(jail)
    result.jails = kept
    result.text = _text(result)
    parse_config(result.text, config_path)
    return result


def _cannot(f2b: F2bJail) -> str:
    """Why an enabled jail cannot be imported at all, or ''."""
    if "filter" in f2b.unresolved:
        return f"its filter: {f2b.unresolved['filter']}"
    if not f2b.values.get("filter", _UNSET).text:
        return "it names no filter"
    return ""


def _translate(tree: JailTree, f2b: F2bJail) -> ImportedJail:
    v = f2b.values
    jail = ImportedJail(f2b.name, source=v["enabled"].origin)
    jail.not_carried.extend(f"{k}: {why}" for k, why in f2b.unresolved.items())
    _filter(tree, f2b, jail)
    _counts(v, jail)
    _bantime(v, jail)
    _increment(v, jail)
    _ignoreip(v, jail)
    _actions(v, jail)
    _sources(v, jail)
    return jail


def _filter(tree: JailTree, f2b: F2bJail, jail: ImportedJail) -> None:
    """``filter = name[options]`` -> the tree's ``filter.d/name.conf[options]``, by path; the
    programs it reads from its ``_daemon``."""
    value = f2b.values["filter"]
    name, bracket, options = value.text.partition("[")
    spec = f"{tree.root / 'filter.d' / name.strip()}.conf{bracket}{options}"
    jail.set("filter", spec, value)
    try:
        source = resolve_filter(spec, None, tree.root)
    except FilterError:
        return  # the check of the jail says why
    if source.programs:
        jail.set("programs", list(source.programs), "the filter's _daemon")


def _counts(v: Mapping[str, Value], jail: ImportedJail) -> None:
    if "maxretry" in v:
        try:
            maxretry = int(v["maxretry"].text)
        except ValueError:
            jail.not_carried.append(f"maxretry = {v['maxretry'].text}: not a number")
        else:
            if maxretry < 1:
                jail.not_carried.append(
                    f"maxretry = {maxretry}: fail2ban bans at the first failure; "
                    "written as maxretry = 1"
                )
            jail.set("maxretry", max(1, maxretry), v["maxretry"])
    if "findtime" in v:
        seconds = _seconds(v["findtime"], jail)
        if seconds is not None and seconds > 0:
            jail.set("findtime", _duration(seconds), v["findtime"])


def _bantime(v: Mapping[str, Value], jail: ImportedJail) -> None:
    """A negative bantime is fail2ban's permanent ban: max_count = 1 here (every ban of the
    jail permanent)."""
    if "bantime" not in v:
        return
    seconds = _seconds(v["bantime"], jail)
    if seconds is None:
        return
    if seconds < 0 or seconds > MAX_BAN_SECONDS:
        jail.set("max_count", 1, v["bantime"])
        if seconds > MAX_BAN_SECONDS:
            jail.not_carried.append(
                f"bantime = {v['bantime'].text}: longer than nftables takes; every ban permanent"
            )
    elif seconds > 0:
        jail.set("bantime", _duration(seconds), v["bantime"])


def _increment(v: Mapping[str, Value], jail: ImportedJail) -> None:
    """fail2ban's ``bantime.*`` onto bantime_increment: its default formula doubles the ban
    for each earlier one (factor 2 here), ``multipliers`` 1 r r² ... is factor r."""
    enabled = "bantime.increment" in v and v["bantime.increment"].text.lower() in _TRUE
    inc: dict[str, Any] = {"enabled": enabled}
    origin: Value | str = v.get("bantime.increment", "fail2ban's default (off)")
    if enabled:
        inc["factor"] = _factor(v, jail)
        if "bantime.maxtime" in v:
            seconds = _seconds(v["bantime.maxtime"], jail)
            if seconds is not None and 0 < seconds <= MAX_BAN_SECONDS:
                inc["maxtime"] = _duration(seconds)
        if v.get("bantime.overalljails", _UNSET).text.lower() in _TRUE:
            jail.not_carried.append(
                "bantime.overalljails = true: earlier bans count in their own jail only here"
            )
    jail.set("bantime_increment", inc, origin)
    if "bantime.rndtime" in v:
        seconds = _seconds(v["bantime.rndtime"], jail)
        if seconds:
            jail.set("bantime_jitter", _duration(seconds), v["bantime.rndtime"])


def _factor(v: Mapping[str, Value], jail: ImportedJail) -> float:
    if "bantime.multipliers" in v:
        steps = v["bantime.multipliers"].text.split()
        try:
            numbers = [float(s) for s in steps]
        except ValueError:
            numbers = []
        r = numbers[1] if len(numbers) > 1 else 0.0
        if (
            numbers
            and numbers[0] == 1
            and r >= 1
            and numbers == [r**i for i in range(len(numbers))]
        ):
            return r
        jail.not_carried.append(
            f"bantime.multipliers = {v['bantime.multipliers'].text}: not 1 r r² ...; "
            "escalation here is bantime * factor^n, written with factor 2"
        )
        return 2.0
    if "bantime.formula" in v:
        jail.not_carried.append(
            f"bantime.formula = {v['bantime.formula'].text}: escalation here is "
            "bantime * factor^n, written with factor 2 (fail2ban's default formula)"
        )
    factor = v.get("bantime.factor")
    if factor is not None and factor.text not in ("1", "1.0"):
        jail.not_carried.append(
            f"bantime.factor = {factor.text}: fail2ban multiplies every escalated ban by it; "
            "here the ban doubles for each earlier one"
        )
    return 2.0


def _ignoreip(v: Mapping[str, Value], jail: ImportedJail) -> None:
    if "ignoreip" not in v:
        return
    networks: list[str] = []
    for item in v["ignoreip"].text.replace(",", " ").split():
        try:
            networks.append(str(parse_network(item)))
        except ValueError:
            jail.not_carried.append(
                f"ignoreip {item}: not an address or network (host names are not resolved)"
            )
    if networks:
        jail.set("ignoreip", list(dict.fromkeys(networks)), v["ignoreip"])


def _actions(v: Mapping[str, Value], jail: ImportedJail) -> None:
    """The ban actions' port and protocol (else the jail's), the mail actions' kind."""
    ports: list[str] = []
    protocols: list[str] = []
    notify: list[str] = []
    actions = f2bactions.parse_actions(v["action"].text) if "action" in v else []
    for name, params in actions:
        if name in f2bactions.MAIL_ACTIONS:
            notify.append(f2bactions.MAIL_ACTIONS[name])
            jail.mail = jail.mail or params
            continue
        if name not in f2bactions.BAN_ACTIONS:
            jail.not_carried.append(
                f"action {name}: not a stock fail2ban ban action; applianced bans in nftables "
                "and runs no other action"
            )
        if name.endswith("-allports"):
            ports.append("all")
        elif "port" in params:
            ports.extend(f2bactions.ports(params["port"], jail.not_carried))
        if "protocol" in params:
            protocols.append(params["protocol"])
    if notify:
        jail.set("notify", list(dict.fromkeys(notify)), v["action"])
    origin = v.get("action")
    if not ports and "port" in v:
        ports, origin = f2bactions.ports(v["port"].text, jail.not_carried), v["port"]
    if ports:
        jail.set("ports", ["all"] if "all" in ports else _unique(ports), origin or "")
    if protocols:
        protocol, origin = f2bactions.protocol(protocols, jail.not_carried), v.get("action")
    else:
        written = [v["protocol"].text] if "protocol" in v else []
        protocol, origin = f2bactions.protocol(written, jail.not_carried), v.get("protocol")
    if protocol and jail.keys.get("ports") != ["all"]:
        jail.set("protocol", protocol, origin or "")


def _sources(v: Mapping[str, Value], jail: ImportedJail) -> None:
    """Where fail2ban read the lines, and what of it has no counterpart here."""
    if "logpath" in v:
        jail.logpath = " ".join(v["logpath"].text.split())
    backend = v.get("backend")
    if backend is not None and backend.text.startswith("systemd"):
        jail.not_carried.append(
            f"backend = {backend.text}: fail2ban read the journal; here the messages must come "
            "over syslog (have the journal forwarded: rsyslog's imjournal)"
        )
    if "journalmatch" in v and v["journalmatch"].text:
        jail.not_carried.append(f"journalmatch = {v['journalmatch'].text}: no journal here")
    if "ignorecommand" in v and v["ignorecommand"].text:
        jail.not_carried.append(
            f"ignorecommand = {v['ignorecommand'].text}: no command runs here; use ignoreip"
        )
    usedns = v.get("usedns")
    if usedns is not None and usedns.text.lower() in ("yes", "warn", "no"):
        jail.set("usedns", usedns.text.lower(), usedns)
    elif usedns is not None:
        jail.set("usedns", "no", usedns)
        jail.not_carried.append(
            f"usedns = {usedns.text}: a host name cannot be banned as text here; "
            '<HOST> matches addresses only (usedns = "no")'
        )


def _unique(items: list[str]) -> list[int | str]:
    return [int(p) if p.isdigit() else p for p in dict.fromkeys(items)]


def _seconds(value: Value, jail: ImportedJail) -> float | None:
    """fail2ban's time (``600``, ``10m``, ``1h 30m``, ``-1``) in seconds, else noted."""
    text = value.text.replace(" ", "")
    if text.startswith("-"):
        return -1.0
    try:
        return parse_duration(text)
    except ValueError:
        jail.not_carried.append(f"{value.option} = {value.text}: not a duration we read")
        return None


def _duration(seconds: float) -> str | int:
    """``600`` -> "10m"; seconds that no unit writes stay a number."""
    text = format_duration(seconds)
    return text if parse_duration(text) == seconds else int(seconds)


def _take_notify(result: Imported, f2b: F2bJail, jail: ImportedJail) -> None:
    """[notify] from the first jail that mails: its mail action's dest and sender, else the
    jail's destemail and sender; mta = sendmail delivers with sendmail here too."""
    params = jail.mail
    v = f2b.values
    wanted = {
        "to": params.get("dest") or (v["destemail"].text if "destemail" in v else ""),
        "from": params.get("sender") or (v["sender"].text if "sender" in v else ""),
    }
    for key, option in (("to", "destemail"), ("from", "sender")):
        value = wanted[key]
        if not value:
            continue
        if "<" in value or "@" not in value:
            note = f"[notify] {key}: {option} = {value} is filled in by fail2ban; set it here"
            if note not in result.not_carried:
                result.not_carried.append(note)
            continue
        setting: Any = [value] if key == "to" else value
        if key not in result.notify:
            result.notify[key] = setting
            result.notify_origins[key] = v[option].origin if option in v else "the action"
        elif result.notify[key] != setting:
            jail.not_carried.append(f"{option} {value}: [notify] has one {key} for every jail")
    if "to" not in result.notify:
        result.notify["to"] = ["root@localhost"]
        result.notify_origins["to"] = "fail2ban's sendmail actions mail root"
    if v.get("mta") is not None and v["mta"].text == "sendmail" and "sendmail" not in result.notify:
        result.notify["sendmail"] = "/usr/sbin/sendmail"
        result.notify_origins["sendmail"] = v["mta"].origin


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(x) for x in value) + "]"
    return "{ " + ", ".join(f"{k} = {_toml(x)}" for k, x in value.items()) + " }"


def _notify_toml(result: Imported) -> str:
    if not result.notify:
        return ""
    lines = ["", "[notify]"]
    lines += [f"{k} = {_toml(x)}  # {result.notify_origins[k]}" for k, x in result.notify.items()]
    return "\n".join(lines) + "\n"


def _jail_toml(jail: ImportedJail) -> str:
    lines = ["", f"[jails.{jail.name}]", f"# fail2ban [{jail.name}]; {jail.source}"]
    if jail.logpath:
        lines.append(
            f"# fail2ban read {jail.logpath}; here: syslog forwarded from the mail servers"
        )
    if "programs" not in jail.keys:
        lines.append("# every program: the filter names no _daemon (set programs to narrow)")
    lines += [f"# not carried: {' '.join(note.split())}" for note in jail.not_carried]
    lines += [f"{k} = {_toml(x)}  # {jail.origins[k]}" for k, x in jail.keys.items()]
    return "\n".join(lines) + "\n"


def _text(result: Imported) -> str:
    head = [
        f"# applianced config from the fail2ban tree {result.root} (appliancectl import-fail2ban)",
        "# read, in fail2ban's order: " + ", ".join(str(p) for p in result.files),
    ]
    head += [
        f"# not imported: jail {n}: {' '.join(why.split())}" for n, why in result.skipped.items()
    ]
    head += [f"# not carried: {' '.join(note.split())}" for note in result.not_carried]
    jails = "".join(_jail_toml(j) for j in result.jails)
    return "\n".join(head) + "\n\n" + _HEAD + _notify_toml(result) + jails
