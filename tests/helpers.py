"""Builders shared by the unit tests: configs without a file, messages without a socket."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from ipaddress import ip_network
from pathlib import Path
from typing import Any

from applianced.conf.schema import Config, IncrementConf, JailConf, ListenerConf
from applianced.rules.decision import Ban, BanDecision
from applianced.rules.message import SyslogMessage
from applianced.store.base import OffenderStore

SSHD_REGEX = (r"^Failed \S+ for (?:invalid user )?<F-USER>.+</F-USER> from <HOST> port \d+",)


def jail_conf(name: str = "sshd", **overrides: Any) -> JailConf:
    """A jail with small, explicit numbers: 3 failures in 60 s ban for 100 s."""
    conf = JailConf(
        name=name,
        enabled=True,
        filter=None,
        failregex=SSHD_REGEX,
        ignoreregex=(),
        programs=("sshd",),
        senders=(),
        ports=("22",),
        protocol="tcp",
        bantime=100.0,
        findtime=60.0,
        maxretry=3,
        ignoreip=(),
        bantime_increment=IncrementConf(enabled=True, factor=2.0, maxtime=1000.0),
        max_count=0,
        findtime_history=86400.0,
        max_tracked=1000,
        ipv6_prefix=64,
        use_dns=False,
    )
    return replace(conf, **overrides)


def config(tmp: Path, *jails: JailConf) -> Config:
    return Config(
        path=tmp / "appliance.toml",
        listeners=(ListenerConf("udp", "127.0.0.1", 0, (ip_network("127.0.0.0/8"),), 8192),),
        jails=jails or (jail_conf(),),
        state_dir=tmp,
        control_socket=tmp / "control.sock",
        lines_per_ban=20,
    )


def message(
    msg: str, app: str = "sshd", sender: str = "127.0.0.1", at: float = 0.0
) -> SyslogMessage:
    return SyslogMessage(
        facility=4,
        severity=6,
        timestamp=None,
        hostname="mx",
        app_name=app,
        procid="1",
        msgid=None,
        structured_data=None,
        msg=msg,
        sender=sender,
        transport="udp",
        received_at=at,
    )


def ssh_failure(address: str, user: str = "root") -> str:
    return f"Failed password for {user} from {address} port 4242 ssh2"


def record(
    store: OffenderStore, decisions: Sequence[BanDecision], *, share: bool = True
) -> list[Ban]:
    """Record ``decisions`` in ``store``; their Bans, as the Appliance enforces them."""
    store.record_bans(decisions, share=share)
    return [Ban.from_decision(d) for d in decisions]
