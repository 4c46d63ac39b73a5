"""TOML -> Config. Every error names the file, the line (when it can be found) and the key.

Unknown keys are errors (a typo must not silently disable a jail). Durations accept seconds or
``10m``/``1h``/``1d``/``1w``. A jail's ``filter`` names a shipped filter, a fail2ban ``.conf``
file, or a filter in ``filter_dir``, whose failregex, ignoreregex and programs the jail takes
unless it sets its own; every regex is compiled here so
that ``appliancectl check`` catches a bad one before the daemon does.
"""

from __future__ import annotations

import math
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

from applianced.conf.certs import TLSFileError, file_digest, normalize_fingerprint, read_pair
from applianced.conf.filterfiles.fail2ban import F2bFilter
from applianced.conf.filterref import resolve_filter
from applianced.conf.jailkeys import INCREMENT_KEYS, JAIL_KEYS, POLICY_KEYS
from applianced.conf.paths import DEFAULT_CONFIG, DEFAULT_CONTROL_SOCKET
from applianced.conf.schema import (
    Config,
    EnforcementConf,
    IncrementConf,
    JailConf,
    ListenerConf,
    MatchOn,
    MetricsConf,
    NotifyConf,
    StateConf,
    TLSConf,
)
from applianced.errors import ConfigError, FilterError
from applianced.rules.addresses import parse_network
from applianced.rules.decision import IPNetwork
from applianced.rules.jail import jail_filter
from applianced.units import parse_ban_duration, parse_duration

__all__ = ["DEFAULT_CONFIG", "load_config", "parse_config"]


T = TypeVar("T")

_TOP = {
    "daemon",
    "receiver",
    "listeners",
    "enforcement",
    "defaults",
    "jails",
    "notify",
    "metrics",
    "state",
}
_NOTIFY = {f.replace("sender", "from") for f in NotifyConf.__dataclass_fields__}
_NOTIFY_ACTIONS = ("mail", "mail-whois", "mail-whois-lines")
_DAEMON = {"state_dir", "control_socket", "lines_per_ban"}
# Limits of a listener (receiver/limits.py): set in [receiver] for all, or per [[listeners]].
_LIMITS = {
    "max_connections",
    "max_connections_per_sender",
    "connection_prefix_v6",
    "handshake_timeout",
    "first_frame_timeout",
    "idle_timeout",
    "max_rate_per_sender",
    "max_burst_per_sender",
}
_LIMIT_DEFAULTS = {key: ListenerConf.__dataclass_fields__[key].default for key in _LIMITS}
_RECEIVER = {"allowed_senders", "max_message_size"} | _LIMITS
_ENFORCEMENT = {"priority", "on_stop"}
_METRICS = {"enabled", "address", "port"}
_STATE = {"backend", "dsn", "password_file", "node", "share_failures"}
_NODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_TLS = {"cert", "key", "client_ca", "client_fingerprints", "client_names"}  # transport "tls"
_LISTENER = {"transport", "address", "port", "allowed_senders", "max_message_size"} | _LIMITS
_LISTENER |= {"rcvbuf", "reuse_port"}  # per [[listeners]] only
_RCVBUF = ListenerConf.__dataclass_fields__["rcvbuf"].default
_LISTENER |= _TLS
_BUILTIN_POLICY: dict[str, Any] = {
    "bantime": 600,
    "findtime": 600,
    "maxretry": 5,
    "ignoreip": [],
    "bantime_increment": {"enabled": True, "factor": 2.0, "maxtime": "1w"},
    "max_count": 0,
    "findtime_history": "1w",
    "max_tracked": 100_000,
    "ipv6_prefix": 64,
    "use_dns": False,
    "ports": ["all"],
    "protocol": "tcp",
    "filter_dir": "",
    "hook": "input",
    "verdict": "drop",
    "bantime_jitter": 0,
    "notify": [],
}


def load_config(path: Path | str) -> Config:
    """Read and validate the configuration file at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found; pass --config PATH") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(path, "", f"cannot read the file: {e}") from None
    return parse_config(text, path)


def parse_config(text: str, path: Path) -> Config:
    """Validate TOML ``text`` (read from ``path``, used for messages and relative paths)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        found = re.search(r"at line (\d+)", str(e))
        line = int(found[1]) if found else None
        raise ConfigError(path, "", f"not valid TOML: {e}", line) from None
    return _Loader(path, text).config(raw)


class _Loader:
    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    # -- errors -----------------------------------------------------------------------------

    def error(self, keys: tuple[str | int, ...], message: str) -> ConfigError:
        return ConfigError(self.path, _dotted(keys), message, self.find_line(keys))

    def find_line(self, keys: tuple[str | int, ...]) -> int | None:
        """The line where ``keys`` is set: a best effort over the text, since tomllib keeps
        no positions. Tables are tracked from their headers; array-of-tables by count."""
        *table, last = keys
        want = [k for k in table if not isinstance(k, int)]
        index = next((k for k in table if isinstance(k, int)), None)
        current: list[str] = []
        seen_array = -1
        header_line = None
        for number, raw in enumerate(self.lines, start=1):
            line = raw.strip()
            if line.startswith("["):
                is_array = line.startswith("[[")
                current = _split_header(line.strip("[]").strip())
                if is_array and current == want[: len(current)]:
                    seen_array += 1
                in_table = current == want and (index is None or seen_array == index)
                if in_table:
                    header_line = number
                continue
            if current == want and (index is None or seen_array == index):
                name = line.split("=", 1)[0].strip().strip('"').strip("'")
                if "=" in line and name == str(last):
                    return number
        if header_line is None and not isinstance(last, int):
            # The key may itself be a table: [jails.NAME] or [defaults.bantime_increment].
            target = [*want, str(last)]
            for number, raw in enumerate(self.lines, start=1):
                line = raw.strip()
                header = _split_header(line.strip("[]").strip())
                if line.startswith("[") and header[: len(target)] == target:
                    return number
        return header_line

    # -- typed reads ------------------------------------------------------------------------

    def table(
        self, raw: Mapping[str, Any], keys: tuple[str | int, ...], allowed: set[str]
    ) -> Mapping[str, Any]:
        value = _get(raw, keys)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(keys, "must be a table")
        for key in value:
            if key not in allowed:
                raise self.error(
                    (*keys, key),
                    f"unknown key {key!r}; allowed here: {', '.join(sorted(allowed))}",
                )
        return cast(Mapping[str, Any], value)

    def typed(self, value: Any, keys: tuple[str | int, ...], kind: type[T], what: str) -> T:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(keys, f"must be {what}, not {value!r}")
        return value

    def convert(self, value: Any, keys: tuple[str | int, ...], fn: Callable[[Any], T]) -> T:
        try:
            return fn(value)
        except (ValueError, TypeError) as e:
            raise self.error(keys, str(e)) from None

    def choice(self, value: Any, keys: tuple[str | int, ...], allowed: tuple[str, ...]) -> Any:
        if value not in allowed:
            raise self.error(keys, f"must be one of {', '.join(map(repr, allowed))}, not {value!r}")
        return value

    def int_in(self, value: Any, keys: tuple[str | int, ...], low: int, high: int) -> int:
        n = self.typed(value, keys, int, "a whole number")
        if not low <= n <= high:
            raise self.error(keys, f"must be between {low} and {high}, not {n}")
        return n

    def strings(self, value: Any, keys: tuple[str | int, ...]) -> tuple[str, ...]:
        items = self.typed(value, keys, list, "a list of strings")
        for i, item in enumerate(items):
            self.typed(item, (*keys, i), str, "a string")
        return tuple(items)

    def networks(self, value: Any, keys: tuple[str | int, ...]) -> tuple[IPNetwork, ...]:
        return tuple(self.convert(s, keys, parse_network) for s in self.strings(value, keys))

    def path_of(self, value: Any, keys: tuple[str | int, ...]) -> Path:
        p = Path(self.typed(value, keys, str, "a path"))
        return p if p.is_absolute() else (self.path.parent / p).resolve()

    # -- sections ---------------------------------------------------------------------------

    def config(self, raw: Mapping[str, Any]) -> Config:
        for key in raw:
            if key not in _TOP:
                raise self.error(
                    (key,), f"unknown section {key!r}; allowed: {', '.join(sorted(_TOP))}"
                )
        daemon = self.table(raw, ("daemon",), _DAEMON)
        receiver = self.table(raw, ("receiver",), _RECEIVER)
        default_senders = self.networks(
            receiver.get("allowed_senders", ["127.0.0.0/8", "::1/128"]),
            ("receiver", "allowed_senders"),
        )
        default_size = self.int_in(
            receiver.get("max_message_size", 8192), ("receiver", "max_message_size"), 2048, 1 << 20
        )
        self.limit_defaults = self.limits(receiver, ("receiver",), _LIMIT_DEFAULTS)
        listeners_raw = raw.get("listeners", [])
        self.typed(listeners_raw, ("listeners",), list, "an array of tables [[listeners]]")
        listeners = tuple(
            self.listener(raw, i, default_senders, default_size) for i in range(len(listeners_raw))
        )
        if not listeners:
            raise self.error(("listeners",), "at least one [[listeners]] table is required")
        enforcement = self.table(raw, ("enforcement",), _ENFORCEMENT)
        notify = self.notify(raw)
        policy = self.policy(raw)
        jails_raw = self.table(raw, ("jails",), set(_get(raw, ("jails",)) or ()))
        jails = tuple(self.jail(raw, name, policy) for name in jails_raw)
        for j in jails:
            if j.notify and j.enabled and not notify.to:
                raise self.error(
                    ("notify", "to"),
                    f"jail {j.name} has notify = {list(j.notify)} but [notify] sets no 'to' "
                    '(e.g. to = ["postmaster@example.org"])',
                )
        return Config(
            path=self.path,
            listeners=listeners,
            jails=jails,
            state_dir=self.path_of(
                daemon.get("state_dir", "/var/lib/applianced"), ("daemon", "state_dir")
            ),
            control_socket=self.path_of(
                daemon.get("control_socket", DEFAULT_CONTROL_SOCKET),
                ("daemon", "control_socket"),
            ),
            lines_per_ban=self.int_in(
                daemon.get("lines_per_ban", 20), ("daemon", "lines_per_ban"), 0, 1000
            ),
            enforcement=EnforcementConf(
                priority=self.int_in(
                    enforcement.get("priority", -10), ("enforcement", "priority"), -400, 400
                ),
                on_stop=self.choice(
                    enforcement.get("on_stop", "keep"),
                    ("enforcement", "on_stop"),
                    ("keep", "flush"),
                ),
            ),
            notify=notify,
            metrics=self.metrics(raw),
            state=self.state(raw),
        )

    def listener(
        self, raw: Mapping[str, Any], i: int, senders: tuple[IPNetwork, ...], size: int
    ) -> ListenerConf:
        keys: tuple[str | int, ...] = ("listeners", i)
        t = self.table(raw, keys, _LISTENER)
        transport = self.choice(
            t.get("transport", "udp"), (*keys, "transport"), ("udp", "tcp", "tls")
        )
        address = self.typed(t.get("address", "127.0.0.1"), (*keys, "address"), str, "a string")
        self.convert(address, (*keys, "address"), _check_bind_address)
        port = self.int_in(
            t.get("port", 6514 if transport == "tls" else 514), (*keys, "port"), 0, 65535
        )
        return ListenerConf(
            transport=transport,
            tls=self.tls(t, keys, transport),
            address=address,
            port=port,
            allowed_senders=(
                self.networks(t["allowed_senders"], (*keys, "allowed_senders"))
                if "allowed_senders" in t
                else senders
            ),
            max_message_size=self.int_in(
                t.get("max_message_size", size), (*keys, "max_message_size"), 2048, 1 << 20
            ),
            rcvbuf=self.int_in(t.get("rcvbuf", _RCVBUF), (*keys, "rcvbuf"), 4096, 1 << 30),
            reuse_port=self.typed(
                t.get("reuse_port", False), (*keys, "reuse_port"), bool, "true or false"
            ),
            **self.limits(t, keys, self.limit_defaults),
        )

    def limits(
        self, t: Mapping[str, Any], keys: tuple[str | int, ...], defaults: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The limit keys of [receiver] or one [[listeners]] (0 = no limit), over ``defaults``."""
        out = dict(defaults)
        for key in ("max_connections", "max_connections_per_sender", "max_burst_per_sender"):
            if key in t:
                out[key] = self.int_in(t[key], (*keys, key), 0, 1_000_000)
        if "connection_prefix_v6" in t:
            out["connection_prefix_v6"] = self.int_in(
                t["connection_prefix_v6"], (*keys, "connection_prefix_v6"), 1, 128
            )
        for key in ("handshake_timeout", "first_frame_timeout", "idle_timeout"):
            if key in t:
                out[key] = self.convert(t[key], (*keys, key), _duration_or_zero)
        if "max_rate_per_sender" in t:
            rate = t["max_rate_per_sender"]
            if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1e7:
                raise self.error(
                    (*keys, "max_rate_per_sender"),
                    f"must be messages a second between 0 (no limit) and 10000000, not {rate!r}",
                )
            out["max_rate_per_sender"] = float(rate)
        return out

    def tls(
        self, t: Mapping[str, Any], keys: tuple[str | int, ...], transport: str
    ) -> TLSConf | None:
        """The certificate keys of a ``transport = "tls"`` listener; the files are read and
        checked here (cert and key a pair, CA readable), as the daemon will read them."""
        if transport != "tls":
            for key in sorted(_TLS & set(t)):
                raise self.error((*keys, key), f'{key} only applies to transport = "tls"')
            return None
        for required in ("cert", "key"):
            if required not in t:
                raise self.error(
                    (*keys, required),
                    f'transport = "tls" needs {required} = "PATH" (PEM); '
                    "`appliancectl tls init` makes a CA, a server and client certificates",
                )
        fingerprints = tuple(
            self.convert(f, (*keys, "client_fingerprints"), normalize_fingerprint)
            for f in self.strings(t.get("client_fingerprints", []), (*keys, "client_fingerprints"))
        )
        names = self.strings(t.get("client_names", []), (*keys, "client_names"))
        client_ca = self.path_of(t["client_ca"], (*keys, "client_ca")) if "client_ca" in t else None
        if names and client_ca is None:
            raise self.error(
                (*keys, "client_names"),
                "client_names needs client_ca: anyone can make a certificate with any name, "
                "only a CA you trust makes the name mean something",
            )
        conf = TLSConf(
            cert=self.path_of(t["cert"], (*keys, "cert")),
            key=self.path_of(t["key"], (*keys, "key")),
            client_ca=client_ca,
            client_fingerprints=fingerprints,
            client_names=names,
        )
        try:
            read_pair(conf)
            digest = file_digest(conf)
        except TLSFileError as e:
            raise self.error((*keys, "cert"), str(e)) from None
        return TLSConf(
            cert=conf.cert,
            key=conf.key,
            client_ca=conf.client_ca,
            client_fingerprints=conf.client_fingerprints,
            client_names=conf.client_names,
            digest=digest,
        )

    def metrics(self, raw: Mapping[str, Any]) -> MetricsConf:
        """[metrics]: the optional Prometheus endpoint (metrics.py)."""
        keys = ("metrics",)
        t = self.table(raw, keys, _METRICS)
        d = MetricsConf()
        address = self.typed(t.get("address", d.address), (*keys, "address"), str, "a string")
        self.convert(address, (*keys, "address"), _check_bind_address)
        return MetricsConf(
            enabled=self.typed(
                t.get("enabled", d.enabled), (*keys, "enabled"), bool, "true or false"
            ),
            address=address,
            port=self.int_in(t.get("port", d.port), (*keys, "port"), 1, 65535),
        )

    def state(self, raw: Mapping[str, Any]) -> StateConf:
        """[state]: the embedded SQLite store, or cluster mode on PostgreSQL."""
        keys = ("state",)
        t = self.table(raw, keys, _STATE)
        backend = self.choice(
            t.get("backend", "sqlite"), (*keys, "backend"), ("sqlite", "postgresql")
        )
        share = self.typed(
            t.get("share_failures", False), (*keys, "share_failures"), bool, "true or false"
        )
        if share and backend != "postgresql":
            raise self.error(
                (*keys, "share_failures"),
                'sharing failures needs cluster mode (backend = "postgresql"); remove the key',
            )
        node = self.typed(t.get("node", socket.gethostname()), (*keys, "node"), str, "a string")
        if not _NODE.fullmatch(node):
            raise self.error(
                (*keys, "node"),
                f"{node!r} is not a node name: 1 to 63 letters, digits, '.', '_' or '-'",
            )
        password_file = None
        if "password_file" in t:
            password_file = self.path_of(t["password_file"], (*keys, "password_file"))
            self.convert(password_file, (*keys, "password_file"), _private_file)
        dsn = self.typed(t.get("dsn", ""), (*keys, "dsn"), str, "a string")
        if backend == "postgresql":
            self.convert(dsn, (*keys, "dsn"), _check_dsn)
        return StateConf(
            backend=backend, dsn=dsn, password_file=password_file, node=node, share_failures=share
        )

    def notify(self, raw: Mapping[str, Any]) -> NotifyConf:
        """[notify]: where ban mails go and how (enforcement/notify.py reads it)."""
        keys = ("notify",)
        t = self.table(raw, keys, _NOTIFY)
        d = NotifyConf()

        def k(key: str) -> tuple[str, ...]:
            return (*keys, key)

        def duration(key: str, default: float) -> float:
            return self.convert(t.get(key, default), k(key), _positive_duration)

        def address(value: Any, where: tuple[str | int, ...]) -> str:
            text = self.typed(value, where, str, "a mail address")
            if not re.fullmatch(r"[^@\s<>,;\"]+@[^@\s<>,;\"]+", text):
                raise self.error(where, f"{text!r} is not a mail address (user@example.org)")
            return text

        to = t.get("to", [])
        to = [to] if isinstance(to, str) else self.typed(to, k("to"), list, "a list of addresses")
        starttls = self.choice(
            t.get("starttls", d.starttls), k("starttls"), ("required", "optional", "off")
        )
        smarthost = self.typed(t.get("smarthost", d.smarthost), k("smarthost"), str, "a host")
        credentials = (
            self.path_of(t["credentials_file"], k("credentials_file"))
            if "credentials_file" in t
            else None
        )
        if credentials is not None:
            self.convert(credentials, k("credentials_file"), _private_file)
            if starttls != "required" and smarthost not in ("localhost", "127.0.0.1", "::1"):
                raise self.error(
                    k("credentials_file"),
                    'SMTP AUTH would send the password in clear: set starttls = "required" '
                    "(or use a smarthost on loopback)",
                )
        servers = self.table(raw, k("whois_servers"), set(t.get("whois_servers") or ()))
        for name, target in servers.items():
            self.typed(target, (*k("whois_servers"), name), str, 'a "host:port"')
        return NotifyConf(
            to=tuple(address(a, (*k("to"), i)) for i, a in enumerate(to)),
            sender=address(t.get("from", d.sender), k("from")),
            smarthost=smarthost,
            port=self.int_in(t.get("port", d.port), k("port"), 1, 65535),
            starttls=starttls,
            ca_file=self.path_of(t["ca_file"], k("ca_file")) if "ca_file" in t else None,
            credentials_file=credentials,
            sendmail=self.path_of(t["sendmail"], k("sendmail")) if "sendmail" in t else None,
            timeout=duration("timeout", d.timeout),
            max_per_minute=self.int_in(
                t.get("max_per_minute", d.max_per_minute), k("max_per_minute"), 1, 10_000
            ),
            digest_interval=duration("digest_interval", d.digest_interval),
            max_lines=self.int_in(t.get("max_lines", d.max_lines), k("max_lines"), 0, 1000),
            backlog=self.int_in(t.get("backlog", d.backlog), k("backlog"), 1, 1_000_000),
            retry_first=duration("retry_first", d.retry_first),
            retry_max=duration("retry_max", d.retry_max),
            reverse_dns=self.typed(
                t.get("reverse_dns", d.reverse_dns), k("reverse_dns"), bool, "true or false"
            ),
            whois_server=self.typed(
                t.get("whois_server", d.whois_server), k("whois_server"), str, 'a "host[:port]"'
            ),
            whois_servers=tuple((str(n), str(v)) for n, v in servers.items()),
            whois_timeout=duration("whois_timeout", d.whois_timeout),
            whois_cache=duration("whois_cache", d.whois_cache),
        )

    def policy(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """The [defaults] table over the built-in defaults; values still raw, keys checked."""
        t = self.table(raw, ("defaults",), POLICY_KEYS)
        inc = self.table(raw, ("defaults", "bantime_increment"), INCREMENT_KEYS)
        return {
            **_BUILTIN_POLICY,
            **t,
            "bantime_increment": {**_BUILTIN_POLICY["bantime_increment"], **inc},
        }

    def jail(self, raw: Mapping[str, Any], name: str, defaults: Mapping[str, Any]) -> JailConf:
        keys: tuple[str, ...] = ("jails", name)
        if not name.replace("-", "").replace("_", "").isalnum() or len(name) > 24:
            raise self.error(
                keys,
                f"jail name {name!r}: use letters, digits, '-' and '_' only, at most 24 chars",
            )
        t = self.table(raw, keys, JAIL_KEYS)
        p = {**defaults, **t}

        def at(key: str) -> tuple[str, ...]:
            """Where ``key``'s value was set: the jail's table, else [defaults]."""
            return (*keys, key) if key in t else ("defaults", key)

        filter_name = t.get("filter")
        failregex = self.strings(t["failregex"], at("failregex")) if "failregex" in t else ()
        ignoreregex = (
            self.strings(t["ignoreregex"], at("ignoreregex")) if "ignoreregex" in t else ()
        )
        programs = self.strings(t["programs"], at("programs")) if "programs" in t else None
        prefregex: str | None = None
        match_on: MatchOn = "msg"
        use_dns = self.typed(p["use_dns"], at("use_dns"), bool, "true or false")
        if filter_name is not None:
            self.typed(filter_name, at("filter"), str, "a filter name")
            filter_dir = self.typed(p["filter_dir"], at("filter_dir"), str, "a directory")
            try:
                source = resolve_filter(
                    filter_name,
                    self.path_of(filter_dir, at("filter_dir")) if filter_dir else None,
                    self.path.parent,
                )
                if isinstance(source, F2bFilter):
                    source.compile(allow_dns=use_dns)
                    prefregex, match_on = source.prefregex, "line"
                failregex = failregex or source.failregex
                ignoreregex = ignoreregex or source.ignoreregex
                programs = source.programs if programs is None else programs
            except FilterError as e:
                raise self.error(at("filter"), str(e)) from None
        if not failregex:
            raise self.error(keys, "needs 'filter' (a shipped filter name) or 'failregex'")
        inc_keys = at("bantime_increment")
        inc_raw = {
            **defaults["bantime_increment"],
            **self.table(raw, (*keys, "bantime_increment"), INCREMENT_KEYS),
        }
        increment = IncrementConf(
            enabled=self.typed(inc_raw["enabled"], (*inc_keys, "enabled"), bool, "true or false"),
            factor=self.convert(inc_raw["factor"], (*inc_keys, "factor"), _factor),
            maxtime=self.convert(inc_raw["maxtime"], (*inc_keys, "maxtime"), _ban_duration),
        )
        maxretry = self.int_in(p["maxretry"], at("maxretry"), 1, 1_000_000)
        jail = JailConf(
            name=name,
            enabled=self.typed(t.get("enabled", True), (*keys, "enabled"), bool, "true or false"),
            filter=filter_name,
            prefregex=prefregex,
            match_on=match_on,
            failregex=failregex,
            ignoreregex=ignoreregex,
            programs=programs or (),
            senders=self.networks(t.get("senders", []), (*keys, "senders")),
            ports=self.convert(p["ports"], at("ports"), _ports),
            protocol=self.choice(p["protocol"], at("protocol"), ("tcp", "udp", "both")),
            bantime=self.convert(p["bantime"], at("bantime"), _positive_ban_duration),
            findtime=self.convert(p["findtime"], at("findtime"), _positive_duration),
            maxretry=maxretry,
            ignoreip=tuple(
                dict.fromkeys(
                    (
                        *self.networks(defaults["ignoreip"], ("defaults", "ignoreip")),
                        *(
                            self.networks(t["ignoreip"], (*keys, "ignoreip"))
                            if "ignoreip" in t
                            else ()
                        ),
                    )
                )
            ),
            bantime_increment=increment,
            max_count=self.int_in(p["max_count"], at("max_count"), 0, 1000),
            findtime_history=self.convert(
                p["findtime_history"], at("findtime_history"), _positive_duration
            ),
            max_tracked=self.int_in(p["max_tracked"], at("max_tracked"), 1, 100_000_000),
            ipv6_prefix=self.int_in(p["ipv6_prefix"], at("ipv6_prefix"), 1, 128),
            use_dns=use_dns,
            hook=self.choice(p["hook"], at("hook"), ("input", "forward")),
            verdict=self.choice(p["verdict"], at("verdict"), ("drop", "reject")),
            bantime_jitter=self.convert(p["bantime_jitter"], at("bantime_jitter"), _ban_duration),
            notify=tuple(
                dict.fromkeys(
                    self.choice(a, at("notify"), _NOTIFY_ACTIONS)
                    for a in self.strings(p["notify"], at("notify"))
                )
            ),
        )
        try:
            # Compiled here so that `check` catches what the daemon would.
            jail_filter(jail, engine="re")
        except FilterError as e:
            where = at("failregex") if "failregex" in t or filter_name is None else at("filter")
            raise self.error(where, str(e)) from None
        return jail


def _get(raw: Mapping[str, Any], keys: tuple[str | int, ...]) -> Any:
    value: Any = raw
    for k in keys:
        if isinstance(k, int):
            value = value[k] if isinstance(value, list) and k < len(value) else None
        else:
            value = value.get(k) if isinstance(value, dict) else None
        if value is None:
            return None
    return value


def _dotted(keys: tuple[str | int, ...]) -> str:
    out = ""
    for k in keys:
        out += f"[{k}]" if isinstance(k, int) else (f".{k}" if out else k)
    return out


def _split_header(header: str) -> list[str]:
    return [part.strip().strip('"').strip("'") for part in header.split(".")]


def _check_bind_address(address: str) -> None:
    from ipaddress import ip_address

    try:
        ip_address(address)
    except ValueError:
        raise ValueError(f"{address!r} is not an IP address to listen on") from None


def _duration_or_zero(value: Any) -> float:
    if value == 0 and not isinstance(value, bool):
        return 0.0
    return _positive_duration(value)


def _factor(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 1 <= value < math.inf:
        raise ValueError(f"must be a finite number of at least 1, not {value!r}")
    return float(value)


def _ban_duration(value: Any) -> float:
    return parse_ban_duration(
        value,
        "set max_count (max_count = 1 makes every ban of the jail permanent), "
        "or blacklist one address with `appliancectl blacklist add JAIL ADDR`",
    )


def _positive_ban_duration(value: Any) -> float:
    return _positive_duration(_ban_duration(value))


def _positive_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"must be more than 0 seconds, not {value!r}")
    return seconds


def _private_file(path: Path) -> None:
    """A secret must exist and be readable by its owner only (mode 0600 or 0400)."""
    import stat

    try:
        mode = path.stat().st_mode
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    if not stat.S_ISREG(mode):
        raise ValueError(f"{path} is not a regular file")
    if mode & 0o077:
        raise ValueError(
            f"{path} is readable by group or others (mode {stat.S_IMODE(mode):04o}); it holds "
            f"a password: chmod 600 {path} and chown it to the service's user"
        )


def _check_dsn(dsn: str) -> None:
    """A libpq connection string that holds no password (it would show in `ps` and logs)."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    if not dsn:
        raise ValueError(
            'backend = "postgresql" needs a dsn, e.g.'
            ' "host=db.example.org dbname=applianced user=applianced"'
        )
    try:
        params = conninfo_to_dict(dsn)
    except ProgrammingError:
        raise ValueError(
            "is not a libpq connection string; write it as"
            ' "host=HOST port=5432 dbname=DB user=USER" or postgresql://USER@HOST/DB'
        ) from None
    if "password" in params:
        raise ValueError(
            "holds a password; remove it from the dsn and put it in password_file (mode 0600)"
            " or in the environment variable APPLIANCED_DB_PASSWORD"
        )


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
