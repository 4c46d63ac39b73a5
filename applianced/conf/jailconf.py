"""A config's jails: ``[defaults]`` over the built-in policy, and each ``[jails.NAME]``
with its filter resolved (shipped, fail2ban ``.conf`` or ``filter_dir``) and every regex
compiled, so that ``appliancectl check`` catches a bad one before the daemon does. Called by
``load.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from applianced.conf.filterfiles.fail2ban import F2bFilter
from applianced.conf.filterref import resolve_filter
from applianced.conf.jailkeys import INCREMENT_KEYS, JAIL_KEYS, POLICY_KEYS
from applianced.conf.schema import IncrementConf, JailConf, MatchOn, UseDns
from applianced.conf.tomlread import (
    Mistakes,
    TomlReader,
    ban_duration,
    factor,
    positive_ban_duration,
    positive_duration,
)
from applianced.errors import FilterError
from applianced.rules.decision import IPNetwork
from applianced.rules.jail import jail_filter

_NOTIFY_ACTIONS = ("mail", "mail-whois", "mail-whois-lines")
# What a jail takes when neither it nor [defaults] sets a key (`jail get` shows them too).
BUILTIN_POLICY: dict[str, Any] = {
    "bantime": 600,
    "findtime": 600,
    "maxretry": 5,
    "ignoreip": [],
    "bantime_increment": {"enabled": True, "factor": 2.0, "maxtime": "1w"},
    "max_count": 0,
    "findtime_history": "1w",
    "max_tracked": 100_000,
    "ipv6_prefix": 64,
    "ports": ["all"],
    "protocol": "tcp",
    "filter_dir": "",
    "hook": "input",
    "verdict": "drop",
    "bantime_jitter": 0,
    "notify": [],
    "log_found": False,
    "usedns": "warn",  # fail2ban's; read by _usedns with the older use_dns
}


_Read = Callable[[TomlReader, Any, tuple[str, ...]], Any]  # (reader, value, where) -> value

# How a jail reads each policy key (its own value, else [defaults]', else the built-in one).
_POLICY_READS: dict[str, _Read] = {
    "ports": lambda r, v, k: r.convert(v, k, _ports),
    "protocol": lambda r, v, k: r.choice(v, k, ("tcp", "udp", "both")),
    "bantime": lambda r, v, k: r.convert(v, k, positive_ban_duration),
    "findtime": lambda r, v, k: r.convert(v, k, positive_duration),
    "maxretry": lambda r, v, k: r.int_in(v, k, 1, 1_000_000),
    "max_count": lambda r, v, k: r.int_in(v, k, 0, 1000),
    "findtime_history": lambda r, v, k: r.convert(v, k, positive_duration),
    "max_tracked": lambda r, v, k: r.int_in(v, k, 1, 100_000_000),
    "ipv6_prefix": lambda r, v, k: r.int_in(v, k, 1, 128),
    "hook": lambda r, v, k: r.choice(v, k, ("input", "forward")),
    "verdict": lambda r, v, k: r.choice(v, k, ("drop", "reject")),
    "bantime_jitter": lambda r, v, k: r.convert(v, k, ban_duration),
    "notify": lambda r, v, k: tuple(
        dict.fromkeys(r.choice(a, k, _NOTIFY_ACTIONS) for a in r.strings(v, k))
    ),
    "log_found": lambda r, v, k: r.typed(v, k, bool, "true or false"),
}


def read_policy(r: TomlReader, raw: Mapping[str, Any]) -> dict[str, Any]:
    """The [defaults] table over the built-in defaults; values still raw, keys checked."""
    t = r.table(raw, ("defaults",), POLICY_KEYS)
    inc = r.table(raw, ("defaults", "bantime_increment"), INCREMENT_KEYS)
    return {
        **BUILTIN_POLICY,
        **t,
        "bantime_increment": {**BUILTIN_POLICY["bantime_increment"], **inc},
    }


def read_jail(
    r: TomlReader, raw: Mapping[str, Any], name: str, defaults: Mapping[str, Any]
) -> JailConf:
    keys: tuple[str, ...] = ("jails", name)
    if not name.replace("-", "").replace("_", "").isalnum() or len(name) > 24:
        why = f"jail name {name!r}: use letters, digits, '-' and '_' only, at most 24 chars"
        raise r.error(keys, why)
    t = r.table(raw, keys, JAIL_KEYS)
    p = {**defaults, **t}

    def at(key: str) -> tuple[str, ...]:
        """Where ``key``'s value was set: the jail's table, else [defaults]."""
        return (*keys, key) if key in t else ("defaults", key)

    found = Mistakes()  # each key on its own: `check` shows every mistake of the jail
    values: dict[str, Any] = {}
    for key, read in _POLICY_READS.items():  # usedns and use_dns: _usedns
        with found.collect():
            values[key] = read(r, p[key], at(key))
    with found.collect():
        values["enabled"] = r.typed(
            t.get("enabled", True), (*keys, "enabled"), bool, "true or false"
        )
    with found.collect():
        values["senders"] = r.networks(t.get("senders", []), (*keys, "senders"))
    with found.collect():
        values["ignoreip"] = _ignoreip(r, t, keys, defaults)
    with found.collect():
        values["bantime_increment"] = _increment(r, raw, keys, at("bantime_increment"), defaults)
    usedns: UseDns = "no"
    with found.collect():
        usedns = _usedns(r, t, r.table(raw, ("defaults",), POLICY_KEYS), at)
    values["use_dns"] = usedns != "no"
    with found.collect():
        regexes = _regexes(r, t, p, at, values["use_dns"])
        if not regexes.failregex:
            raise r.error(keys, "needs 'filter' (a shipped filter name) or 'failregex'")
    found.raise_any()
    filter_name = t.get("filter")
    jail = JailConf(
        name=name,
        filter=filter_name,
        prefregex=regexes.prefregex,
        match_on=regexes.match_on,
        maxlines=regexes.maxlines,
        usedns=usedns,
        datepattern=regexes.datepattern,
        failregex=regexes.failregex,
        ignoreregex=regexes.ignoreregex,
        programs=regexes.programs or (),
        **values,
    )
    return _compiled(
        r, jail, at("failregex" if "failregex" in t or filter_name is None else "filter")
    )


def _compiled(r: TomlReader, jail: JailConf, where: tuple[str, ...]) -> JailConf:
    """``jail``, once its filter compiled here, so that `check` catches what the daemon would;
    ``where``: the key to blame (the jail's failregex, else its filter)."""
    try:
        jail_filter(jail, engine="re")
    except FilterError as e:
        raise r.error(where, str(e)) from None
    return jail


@dataclass(frozen=True, slots=True)
class _Regexes:
    """A jail's regexes and programs: its own, else its filter's."""

    failregex: tuple[str, ...]
    ignoreregex: tuple[str, ...]
    programs: tuple[str, ...] | None
    prefregex: str | None = None
    match_on: MatchOn = "msg"
    maxlines: int = 1
    datepattern: str | None = None


def _usedns(
    r: TomlReader,
    t: Mapping[str, Any],
    d: Mapping[str, Any],
    at: Callable[[str], tuple[str, ...]],
) -> UseDns:
    """fail2ban's ``usedns`` ("yes", "warn", "no"); our older ``use_dns = true|false`` still
    reads as "yes"|"no". The jail's table ``t`` first, then [defaults] ``d``, each as
    written; one table may not set both. Neither anywhere: "warn", fail2ban's default (the
    shipped config says "no")."""
    for table in (t, d):
        if "usedns" in table and "use_dns" in table:
            raise r.error(at("usedns"), "set usedns or the older use_dns, not both")
        if "usedns" in table:
            value = r.choice(table["usedns"], at("usedns"), ("yes", "warn", "no", "raw"))
            if value == "raw":
                why = (
                    "usedns = 'raw' bans a host name as text, which an nftables set cannot "
                    "hold; use 'yes' or 'warn' (resolve it) or 'no' (ignore names)"
                )
                raise r.error(at("usedns"), why)
            return cast(UseDns, value)
        if "use_dns" in table:
            use_dns = r.typed(table["use_dns"], at("use_dns"), bool, "true or false")
            return "yes" if use_dns else "no"
    return cast(UseDns, BUILTIN_POLICY["usedns"])


def _regexes(
    r: TomlReader,
    t: Mapping[str, Any],
    p: Mapping[str, Any],
    at: Callable[[str], tuple[str, ...]],
    use_dns: bool,
) -> _Regexes:
    """The jail's own failregex, ignoreregex and programs (``t``), each taken from its
    ``filter`` when the jail does not set it; ``p``: the jail over [defaults]."""
    failregex = r.strings(t["failregex"], at("failregex")) if "failregex" in t else ()
    ignoreregex = r.strings(t["ignoreregex"], at("ignoreregex")) if "ignoreregex" in t else ()
    programs = r.strings(t["programs"], at("programs")) if "programs" in t else None
    filter_name = t.get("filter")
    if filter_name is None:
        return _Regexes(failregex, ignoreregex, programs)
    r.typed(filter_name, at("filter"), str, "a filter name")
    filter_dir = r.typed(p["filter_dir"], at("filter_dir"), str, "a directory")
    prefregex: str | None = None
    match_on: MatchOn = "msg"
    maxlines = 1
    datepattern: str | None = None
    try:
        source = resolve_filter(
            filter_name,
            r.path_of(filter_dir, at("filter_dir")) if filter_dir else None,
            r.path.parent,
        )
        if isinstance(source, F2bFilter):
            source.compile(allow_dns=use_dns)
            prefregex, match_on, maxlines = source.prefregex, "line", source.maxlines
            datepattern = source.own_dates
        else:
            datepattern = source.datepattern
    except FilterError as e:
        raise r.error(at("filter"), str(e)) from None
    return _Regexes(
        failregex or source.failregex,
        ignoreregex or source.ignoreregex,
        source.programs if programs is None else programs,
        prefregex,
        match_on,
        maxlines,
        datepattern,
    )


def _increment(
    r: TomlReader,
    raw: Mapping[str, Any],
    keys: tuple[str, ...],
    inc_keys: tuple[str, ...],
    defaults: Mapping[str, Any],
) -> IncrementConf:
    """The jail's [jails.NAME.bantime_increment] over that of [defaults] (``inc_keys``: where
    the table was set, for errors)."""
    inc_raw = {
        **defaults["bantime_increment"],
        **r.table(raw, (*keys, "bantime_increment"), INCREMENT_KEYS),
    }
    return IncrementConf(
        enabled=r.typed(inc_raw["enabled"], (*inc_keys, "enabled"), bool, "true or false"),
        factor=r.convert(inc_raw["factor"], (*inc_keys, "factor"), factor),
        maxtime=r.convert(inc_raw["maxtime"], (*inc_keys, "maxtime"), ban_duration),
    )


def _ignoreip(
    r: TomlReader, t: Mapping[str, Any], keys: tuple[str, ...], defaults: Mapping[str, Any]
) -> tuple[IPNetwork, ...]:
    """[defaults]' ignoreip, then the jail's own (``t``), each network once."""
    common = r.networks(defaults["ignoreip"], ("defaults", "ignoreip"))
    own = r.networks(t["ignoreip"], (*keys, "ignoreip")) if "ignoreip" in t else ()
    return tuple(dict.fromkeys((*common, *own)))


def _ports(value: Any) -> tuple[str, ...]:
    """``[25, 465, "1000-2000"]`` or ``["all"]`` -> normalised strings."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"must be a non-empty list of ports, ranges or 'all', not {value!r}")
    out: list[str] = []
    for item in value:
        if item == "all":
            if len(value) > 1:
                raise ValueError("'all' cannot be combined with other ports")
            return ("all",)
        text = str(item) if isinstance(item, int) and not isinstance(item, bool) else item
        if not isinstance(text, str):
            raise ValueError(f'{item!r} is not a port; use 25, "1000-2000" or "all"')
        low, _, high = text.partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            raise ValueError(f'{item!r} is not a port; use 25, "1000-2000" or "all"')
        lo, hi = int(low), int(high or low)
        if not 1 <= lo <= hi <= 65535:
            raise ValueError(f"{item!r}: ports are 1 to 65535, ranges low-high")
        out.append(f"{lo}-{hi}" if hi != lo else str(lo))
    return tuple(out)
