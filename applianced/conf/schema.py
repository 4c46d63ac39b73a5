"""The configuration as the rest of the program sees it: frozen, validated, fully resolved.

``load.py`` builds these from TOML; nothing else constructs them outside tests. Durations are
seconds; networks are ``ipaddress`` objects; relative paths are already resolved.

ARCHITECTURE. A leaf: every layer reads it (rules/jail.py the JailConf, the receiver its
listeners', enforcement its notify settings), so it imports nothing of applianced.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Literal

__all__ = [
    "Config",
    "DecisionsConf",
    "EnforcementConf",
    "IncrementConf",
    "JailConf",
    "ListenerConf",
    "MetricsConf",
    "NotifyConf",
    "StateConf",
    "TLSConf",
]

# rules.decision.IPNetwork, spelled out: the schema is below rules/ and imports none of it.
IPNetwork = IPv4Network | IPv6Network

Transport = Literal["udp", "tcp", "tls"]
Protocol = Literal["tcp", "udp", "both"]
Hook = Literal["input", "forward"]
Verdict = Literal["drop", "reject"]
OnStop = Literal["keep", "flush"]
NotifyAction = Literal["mail", "mail-whois", "mail-whois-lines"]
StartTLS = Literal["required", "optional", "off"]
MatchOn = Literal["msg", "line"]
# fail2ban's usedns: what a <HOST> that is a name does. "yes" resolves it and bans its
# addresses, "warn" the same with a warning logged, "no" ignores names ("raw" is refused: it
# bans the name as text, which a kernel set cannot hold).
UseDns = Literal["yes", "warn", "no"]
Backend = Literal["sqlite", "postgresql"]
LogLevelName = Literal["debug", "info", "warning", "error"]


@dataclass(frozen=True, slots=True)
class TLSConf:
    """A TLS listener's certificates (RFC 5425), read by receiver/tls.py. Without
    ``client_ca`` and ``client_fingerprints`` any client may connect (no client certificate
    asked); with either, a client must present a certificate that passes every check set."""

    cert: Path  # PEM: the server certificate, then its chain
    key: Path  # PEM: the server's private key
    client_ca: Path | None = None  # PEM: CA certificate(s) client certificates must chain to
    client_fingerprints: tuple[str, ...] = ()  # SHA-256 of the DER certificate, lowercase hex
    client_names: tuple[str, ...] = ()  # allowed subject CN or SAN (DNS, IP) of the client
    # SHA-256 over the files' contents at load: a renewed certificate at the same path makes
    # a different config, so a reload rebuilds the TLS context.
    digest: str = ""


@dataclass(frozen=True, slots=True)
class ListenerConf:
    """One socket the receiver opens. Datagrams and connections from outside
    ``allowed_senders`` are dropped and counted."""

    transport: Transport
    address: str
    port: int
    allowed_senders: tuple[IPNetwork, ...]
    max_message_size: int
    tls: TLSConf | None = None  # transport "tls" only
    # Limits (receiver/limits.py); 0 means no limit. Connections: per listener, open at once.
    max_connections: int = 512
    max_connections_per_sender: int = 32  # an IPv4 address, an IPv6 /connection_prefix_v6
    connection_prefix_v6: int = 64
    # Deadlines (seconds, 0 = none): from the accept to the end of the TLS handshake and to
    # the first whole frame; without a byte before a TCP connection is closed.
    handshake_timeout: float = 10.0
    first_frame_timeout: float = 30.0
    idle_timeout: float = 600.0
    # TCP/TLS only: a datagram's source is unproven, a forger would spend the sender's budget.
    max_rate_per_sender: float = 10_000.0  # messages a second, token bucket
    max_burst_per_sender: int = 20_000  # messages above the rate a sender may send at once
    # Sockets. rcvbuf (UDP): the kernel's receive buffer in bytes, so that a burst, or the
    # reactor busy for a moment, queues datagrams instead of dropping them. reuse_port:
    # SO_REUSEPORT, so that several daemons (one per core) can listen on one port.
    rcvbuf: int = 8 << 20
    reuse_port: bool = False
    # The silence alarm (silence.py): each watched sender (a single address of allowed_senders,
    # canonical) and the seconds without a message after which it is silent; () = no watch.
    sender_silence: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class IncrementConf:
    """Escalation for repeat offenders: bantime * factor ** prior_bans, capped at maxtime."""

    enabled: bool
    factor: float
    maxtime: float


@dataclass(frozen=True, slots=True)
class JailConf:
    """One jail, with the global defaults already applied.

    ``failregex``/``ignoreregex``/``programs`` are resolved from the named filter when the jail
    does not set them. ``programs`` are app-name selectors (exact names or ``fnmatch`` globs);
    empty means every program. ``senders`` restricts the jail to messages delivered by these
    syslog peers; empty means any allowed sender. ``ignoreip`` holds the global and the jail's
    entries together.
    """

    name: str
    enabled: bool
    filter: str | None
    failregex: tuple[str, ...]
    ignoreregex: tuple[str, ...]
    programs: tuple[str, ...]
    senders: tuple[IPNetwork, ...]
    ports: tuple[str, ...]
    protocol: Protocol
    bantime: float
    findtime: float
    maxretry: int
    ignoreip: tuple[IPNetwork, ...]
    bantime_increment: IncrementConf
    max_count: int
    findtime_history: float
    max_tracked: int
    ipv6_prefix: int
    use_dns: bool
    hook: Hook = "input"
    verdict: Verdict = "drop"
    bantime_jitter: float = 0.0
    notify: tuple[NotifyAction, ...] = ()
    # A fail2ban filter (``filter`` a .conf path, or a name with ``filter_dir``): its prefregex,
    # and that it reads the traditional ``host app[pid]: msg`` line, not the MSG alone.
    prefregex: str | None = None
    match_on: MatchOn = "msg"
    maxlines: int = 1  # a fail2ban filter's: lines a failregex may span (rules/multiline.py)
    usedns: UseDns = "no"  # use_dns is True for "yes" and "warn"
    # A `found` log line for each failure counted (fail2ban's "Found ADDR"), within a budget.
    log_found: bool = False
    # The filter's own datepattern (rules/dates.py): the date cut from the text before matching.
    datepattern: str | None = None


@dataclass(frozen=True, slots=True)
class EnforcementConf:
    """How bans reach the kernel. ``priority`` orders our chains against other tables' (lower
    runs first; the default -10 runs before a typical filter table's accept rules at 0).
    ``on_stop``: ``keep`` leaves the bans in the kernel on a graceful stop (a restart opens no
    window), ``flush`` removes them. ``reconcile_interval``: seconds between two checks that
    the kernel's sets hold the active bans (0: never)."""

    priority: int = -10
    on_stop: OnStop = "keep"
    reconcile_interval: float = 60.0


@dataclass(frozen=True, slots=True)
class NotifyConf:
    """Ban mails (``enforcement/notify.py``). Delivery goes to ``sendmail`` (``-t``, no shell)
    when set, else to the SMTP ``smarthost``. ``credentials_file`` holds ``user:password`` and
    is readable by the service only. Durations are seconds; ``whois_servers`` maps a whois
    server name (as a referral names it) to the ``host:port`` to ask instead."""

    to: tuple[str, ...] = ()
    sender: str = "applianced@localhost"
    smarthost: str = "localhost"
    port: int = 25
    starttls: StartTLS = "optional"
    ca_file: Path | None = None
    credentials_file: Path | None = None
    sendmail: Path | None = None
    timeout: float = 60.0
    max_per_minute: int = 10
    digest_interval: float = 300.0
    max_lines: int = 20
    backlog: int = 10_000
    retry_first: float = 30.0
    retry_max: float = 3600.0
    reverse_dns: bool = False
    whois_server: str = "whois.iana.org"
    whois_servers: tuple[tuple[str, str], ...] = ()
    whois_timeout: float = 15.0
    whois_cache: float = 86400.0


@dataclass(frozen=True, slots=True)
class MetricsConf:
    """The Prometheus endpoint (``metrics.py``): off by default; when on, ``GET /metrics`` on
    ``address:port`` (TCP), loopback by default since the numbers describe the defences."""

    enabled: bool = False
    address: str = "127.0.0.1"
    port: int = 9515


@dataclass(frozen=True, slots=True)
class StateConf:
    """Where the ban list lives (``applianced/cluster/``). ``sqlite``: this appliance alone.
    ``postgresql``: cluster mode, the local SQLite store a replica of the ban list shared with
    the other appliances through the database at ``dsn`` (a libpq connection string without a
    password); the password comes from ``password_file``, else ``$APPLIANCED_DB_PASSWORD``,
    else libpq's own ways (``PGPASSWORD``, ``~/.pgpass``). ``node`` names this appliance;
    ``share_failures`` counts every appliance's failures in each one's windows."""

    backend: Backend = "sqlite"
    dsn: str = ""
    password_file: Path | None = None
    node: str = ""
    share_failures: bool = False


@dataclass(frozen=True, slots=True)
class DecisionsConf:
    """The decision stream for CrowdSec bouncers (``applianced/decisions/``): the Local API's
    bouncer endpoints on ``address:port``, over TLS with ``tls`` (only ``cert`` and ``key``),
    plain HTTP only on a loopback address."""

    address: str = "127.0.0.1"
    port: int = 8080
    tls: TLSConf | None = None


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration. ``jails`` holds every jail, enabled or not, in file order."""

    path: Path
    listeners: tuple[ListenerConf, ...]
    jails: tuple[JailConf, ...]
    state_dir: Path
    control_socket: Path
    lines_per_ban: int
    enforcement: EnforcementConf = EnforcementConf()
    notify: NotifyConf = NotifyConf()
    metrics: MetricsConf = MetricsConf()
    state: StateConf = StateConf()
    log_level: LogLevelName = "info"  # `applianced --log-level` wins over it
    decisions: DecisionsConf | None = None  # no [decisions] table: no stream

    @property
    def enabled_jails(self) -> tuple[JailConf, ...]:
        return tuple(j for j in self.jails if j.enabled)

    def jail(self, name: str) -> JailConf | None:
        return next((j for j in self.jails if j.name == name), None)

    @property
    def allowed_senders(self) -> tuple[IPNetwork, ...]:
        """Every listener's allowed senders: these are never banned."""
        seen: dict[IPNetwork, None] = {}
        for listener in self.listeners:
            seen.update(dict.fromkeys(listener.allowed_senders))
        return tuple(seen)

    @property
    def allowed_hosts(self) -> tuple[str, ...]:
        """The allowed senders that are single addresses (/32, /128), canonical: the senders
        the receiver always tracks (``receiver/senders.py``)."""
        return tuple(str(n.network_address) for n in self.allowed_senders if n.num_addresses == 1)

    @property
    def sender_silence(self) -> dict[str, float]:
        """Every watched sender and its silence: the shortest of the listeners that watch it
        (a sender is silent when it sends on none of them)."""
        silences: dict[str, float] = {}
        for listener in self.listeners:
            for sender, seconds in listener.sender_silence:
                silences[sender] = min(seconds, silences.get(sender, seconds))
        return silences
