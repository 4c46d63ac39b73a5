"""The listeners' tables of a config: ``[receiver]`` (defaults and limits for all) and each
``[[listeners]]`` with its limits and, for ``transport = "tls"``, its certificate files, read
and checked as the daemon will read them. Called by ``load.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from applianced.conf.certs import TLSFileError, file_digest, normalize_fingerprint, read_pair
from applianced.conf.schema import ListenerConf, TLSConf
from applianced.conf.tomlread import TomlReader, check_bind_address, duration_or_zero
from applianced.rules.addresses import parse_address
from applianced.rules.decision import IPNetwork

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
_RECEIVER = {"allowed_senders", "max_message_size", "sender_silence"} | _LIMITS
_TLS = {"cert", "key", "client_ca", "client_fingerprints", "client_names"}  # transport "tls"
_LISTENER = {"transport", "address", "port", "allowed_senders", "max_message_size"} | _LIMITS
_LISTENER |= {"sender_silence"}
_LISTENER |= {"rcvbuf", "reuse_port"}  # per [[listeners]] only
_RCVBUF = ListenerConf.__dataclass_fields__["rcvbuf"].default
_LISTENER |= _TLS


def read_listeners(r: TomlReader, raw: Mapping[str, Any]) -> tuple[ListenerConf, ...]:
    """Every ``[[listeners]]``, over the defaults and limits of ``[receiver]``."""
    receiver = r.table(raw, ("receiver",), _RECEIVER)
    default_senders = r.networks(
        receiver.get("allowed_senders", ["127.0.0.0/8", "::1/128"]),
        ("receiver", "allowed_senders"),
    )
    default_size = r.int_in(
        receiver.get("max_message_size", 8192), ("receiver", "max_message_size"), 2048, 1 << 20
    )
    limit_defaults = read_limits(r, receiver, ("receiver",), _LIMIT_DEFAULTS)
    listeners_raw = raw.get("listeners", [])
    r.typed(listeners_raw, ("listeners",), list, "an array of tables [[listeners]]")
    listeners = tuple(
        read_listener(r, raw, i, default_senders, default_size, limit_defaults, receiver)
        for i in range(len(listeners_raw))
    )
    if not listeners:
        raise r.error(("listeners",), "at least one [[listeners]] table is required")
    _check_watched(r, receiver.get("sender_silence"), listeners)
    return listeners


def _check_watched(r: TomlReader, value: Any, listeners: tuple[ListenerConf, ...]) -> None:
    """Each sender of a ``[receiver]`` sender_silence table is watched by some listener."""
    if not isinstance(value, dict):
        return
    watched = {sender for listener in listeners for sender, _ in listener.sender_silence}
    for text, duration in value.items():
        keys = ("receiver", "sender_silence", text)
        address = r.convert(text, keys, parse_address)
        if r.convert(duration, keys, duration_or_zero) and str(address) not in watched:
            raise r.error(
                ("receiver", "sender_silence", text),
                f"{text} is in no listener's allowed_senders: its messages are refused, so it "
                "would always be silent; add it to allowed_senders",
            )


def read_listener(
    r: TomlReader,
    raw: Mapping[str, Any],
    i: int,
    senders: tuple[IPNetwork, ...],
    size: int,
    limit_defaults: Mapping[str, Any],
    receiver: Mapping[str, Any],
) -> ListenerConf:
    """One ``[[listeners]]``; ``receiver``: the ``[receiver]`` table, for its
    ``sender_silence`` (read against each listener's own allowed_senders)."""
    keys: tuple[str | int, ...] = ("listeners", i)
    t = r.table(raw, keys, _LISTENER)
    transport = r.choice(t.get("transport", "udp"), (*keys, "transport"), ("udp", "tcp", "tls"))
    address = r.typed(t.get("address", "127.0.0.1"), (*keys, "address"), str, "a string")
    r.convert(address, (*keys, "address"), check_bind_address)
    port = r.int_in(t.get("port", 6514 if transport == "tls" else 514), (*keys, "port"), 0, 65535)
    if "allowed_senders" in t:
        senders = r.networks(t["allowed_senders"], (*keys, "allowed_senders"))
    own = "sender_silence" in t
    silence = t.get("sender_silence", receiver.get("sender_silence"))
    silence_keys = (*(keys if own else ("receiver",)), "sender_silence")
    return ListenerConf(
        transport=transport,
        tls=read_tls(r, t, keys, transport),
        address=address,
        port=port,
        allowed_senders=senders,
        sender_silence=read_silence(r, silence, silence_keys, senders, strict=own),
        max_message_size=r.int_in(
            t.get("max_message_size", size), (*keys, "max_message_size"), 2048, 1 << 20
        ),
        rcvbuf=r.int_in(t.get("rcvbuf", _RCVBUF), (*keys, "rcvbuf"), 4096, 1 << 30),
        reuse_port=r.typed(
            t.get("reuse_port", False), (*keys, "reuse_port"), bool, "true or false"
        ),
        **read_limits(r, t, keys, limit_defaults),
    )


def read_silence(
    r: TomlReader,
    value: Any,
    keys: tuple[str | int, ...],
    senders: tuple[IPNetwork, ...],
    *,
    strict: bool,
) -> tuple[tuple[str, float], ...]:
    """``sender_silence``: a duration for every single address (/32, /128) of the listener's
    allowed_senders, or a table of addresses and their durations; 0 or unset: none.
    ``strict``: set on this listener, where a watch that cannot work is an error; from
    ``[receiver]``, each listener watches what its own allowed_senders hold."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        seconds = r.convert(value, keys, duration_or_zero)
        watched = [n for n in senders if n.num_addresses == 1]
        if seconds and not watched and strict:
            raise r.error(
                keys,
                "watches the single addresses (/32, /128) of allowed_senders, and this "
                "listener's allowed_senders has none: list your mail servers one by one, or "
                'give each its own: sender_silence = { "192.0.2.10" = "15m" }',
            )
        return tuple((str(n.network_address), seconds) for n in watched if seconds)
    out = []
    for text, duration in value.items():
        address = r.convert(text, (*keys, text), parse_address)
        if not any(address in n for n in senders):
            if not strict:
                continue
            raise r.error(
                (*keys, text),
                f"{address} is not in this listener's allowed_senders: its messages are "
                "refused, so it would always be silent; add it to allowed_senders",
            )
        seconds = r.convert(duration, (*keys, text), duration_or_zero)
        if seconds:
            out.append((str(address), seconds))
    return tuple(out)


def read_limits(
    r: TomlReader, t: Mapping[str, Any], keys: tuple[str | int, ...], defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """The limit keys of [receiver] or one [[listeners]] (0 = no limit), over ``defaults``."""
    out = dict(defaults)
    for key in ("max_connections", "max_connections_per_sender", "max_burst_per_sender"):
        if key in t:
            out[key] = r.int_in(t[key], (*keys, key), 0, 1_000_000)
    if "connection_prefix_v6" in t:
        out["connection_prefix_v6"] = r.int_in(
            t["connection_prefix_v6"], (*keys, "connection_prefix_v6"), 1, 128
        )
    for key in ("handshake_timeout", "first_frame_timeout", "idle_timeout"):
        if key in t:
            out[key] = r.convert(t[key], (*keys, key), duration_or_zero)
    if "max_rate_per_sender" in t:
        rate = t["max_rate_per_sender"]
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1e7:
            raise r.error(
                (*keys, "max_rate_per_sender"),
                f"must be messages a second between 0 (no limit) and 10000000, not {rate!r}",
            )
        out["max_rate_per_sender"] = float(rate)
    return out


def read_tls(
    r: TomlReader, t: Mapping[str, Any], keys: tuple[str | int, ...], transport: str
) -> TLSConf | None:
    """The certificate keys of a ``transport = "tls"`` listener; the files are read and
    checked here (cert and key a pair, CA readable), as the daemon will read them."""
    if transport != "tls":
        for key in sorted(_TLS & set(t)):
            raise r.error((*keys, key), f'{key} only applies to transport = "tls"')
        return None
    for required in ("cert", "key"):
        if required not in t:
            raise r.error(
                (*keys, required),
                f'transport = "tls" needs {required} = "PATH" (PEM); '
                "`appliancectl tls init` makes a CA, a server and client certificates",
            )
    fingerprints = tuple(
        r.convert(f, (*keys, "client_fingerprints"), normalize_fingerprint)
        for f in r.strings(t.get("client_fingerprints", []), (*keys, "client_fingerprints"))
    )
    names = r.strings(t.get("client_names", []), (*keys, "client_names"))
    client_ca = r.path_of(t["client_ca"], (*keys, "client_ca")) if "client_ca" in t else None
    if names and client_ca is None:
        raise r.error(
            (*keys, "client_names"),
            "client_names needs client_ca: anyone can make a certificate with any name, "
            "only a CA you trust makes the name mean something",
        )
    conf = TLSConf(
        cert=r.path_of(t["cert"], (*keys, "cert")),
        key=r.path_of(t["key"], (*keys, "key")),
        client_ca=client_ca,
        client_fingerprints=fingerprints,
        client_names=names,
    )
    try:
        read_pair(conf)
        digest = file_digest(conf)
    except TLSFileError as e:
        raise r.error((*keys, "cert"), str(e)) from None
    return TLSConf(
        cert=conf.cert,
        key=conf.key,
        client_ca=conf.client_ca,
        client_fingerprints=conf.client_fingerprints,
        client_names=conf.client_names,
        digest=digest,
    )
