"""``applianced``: the daemon's entry point and the one place where the parts are wired.

``make_service`` builds a Twisted ``MultiService`` whose children start in pipeline order: the
appliance (store opened, kernel tables built, active bans restored), then the syslog listeners,
then the control socket, then systemd's side (READY=1, the watchdog, STATUS=) and the SIGHUP
handler; they stop in reverse order. Every collaborator is passed to its constructor here;
nothing is patched after construction. ``main`` parses the command line, sets up logging to
stderr (journald takes it from there) and stops the services on SIGTERM.

Over 400 lines and kept together: it is the one place that knows every part (a small builder
per part, called by ``make_service``), with ``main``, the command line that starts it.
"""

from __future__ import annotations

import argparse
import gc
import json
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from ipaddress import ip_network
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.application.internet import UNIXServer
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.threads import deferToThread
from twisted.logger import Logger, globalLogBeginner
from twisted.python.failure import Failure

from applianced import __version__
from applianced.appliance import Appliance
from applianced.conf.load import load_config
from applianced.conf.paths import config_path
from applianced.conf.schema import Config, NotifyConf
from applianced.control import ControlFactory, Dispatcher
from applianced.enforcement.base import Enforcer
from applianced.enforcement.mailer import make_mailer
from applianced.enforcement.memory import MemoryEnforcer
from applianced.enforcement.notify import Notifier
from applianced.enforcement.whois import WhoisClient, tcp_query
from applianced.errors import ApplianceError, ConfigError
from applianced.hostnames import SystemResolver
from applianced.logs import FORMATS, LEVELS, LevelFilter, log_observer
from applianced.receiver.edge import ReceiverStats
from applianced.receiver.listeners import Listeners, ListenerService
from applianced.receiver.senders import SenderBook
from applianced.reloader import Reload, Reloader
from applianced.rules.decision import IPAddress, IPNetwork
from applianced.rules.engine import Engine
from applianced.sdnotify import SdNotifier, Supervisor, watchdog_interval
from applianced.stats import status_line
from applianced.store.sqlite import STORE_FILE, SqliteOffenderStore
from applianced.units import plural

__all__ = ["main", "make_service"]

if TYPE_CHECKING:
    from applianced.cluster.replicator import Replicator
    from applianced.decisions.server import DecisionService

log = Logger()


class ApplianceService(Service):
    """Starts and stops the Appliance; the first child, so bans are restored before any
    listener opens."""

    def __init__(self, appliance: Appliance) -> None:
        self.appliance = appliance

    def startService(self) -> None:
        self.appliance.start()
        # What start built (config, filters, the restored bans) lives as long as the process:
        # move it out of the garbage collector's reach, so that a storm's collections do not
        # walk 100,000 restored bans again and again.
        gc.freeze()
        super().startService()

    def stopService(self) -> None:
        super().stopService()
        self.appliance.stop()
        return None


class SystemdService(Service):
    """The last child: once the reactor runs (bans restored, listeners open), READY=1 and the
    watchdog and STATUS= loops; SIGHUP reloads. Stopping (first of all) sends STOPPING=1."""

    def __init__(self, supervisor: Supervisor, reactor: Any, reload: Reload) -> None:
        self.supervisor = supervisor
        self.reactor = reactor
        self.reload = reload

    def startService(self) -> None:
        super().startService()
        self.reactor.callWhenRunning(self.supervisor.started)
        _install_signals(self.reactor, self.reload)

    def stopService(self) -> None:
        super().stopService()
        self.supervisor.stopping()
        return None


def _store(config: Config, *, journal: bool) -> SqliteOffenderStore:
    """The offenders store in the state directory (``journal``: with the cluster outbox)."""
    return SqliteOffenderStore(
        config.state_dir / STORE_FILE,
        lines_per_ban=config.lines_per_ban,
        node=config.state.node,
        journal=journal,
    )


def make_service(
    config: Config,
    reactor: Any,
    enforcer: Enforcer,
    own_addresses: Sequence[IPNetwork] = (),
    levels: LevelFilter | None = None,
) -> tuple[MultiService, Appliance]:
    """The daemon as a MultiService, and its Appliance (for tests). ``levels``: the log's
    filter a reload sets to the file's ``log_level`` (None when ``--log-level`` fixed it)."""
    cluster = config.state.backend == "postgresql"
    share = cluster and config.state.share_failures
    store = _store(config, journal=cluster)
    stats = ReceiverStats()
    senders = SenderBook()  # each sender's figures, every listener's; the silence alarm's
    # The replicator and the appliance call each other: the replicator is built first, and its
    # callbacks reach the appliance built next.
    replicator = _replicator(config, store, reactor, lambda: appliance, share) if cluster else None
    appliance = Appliance(
        config,
        store,
        enforcer,
        reactor,
        own_addresses,
        stats,
        resolver=SystemResolver(reactor),
        notifier=make_notifier(config, reactor),
        engine=Engine(
            on_failure=replicator.share if replicator and share else None,
            on_unmatched=senders.unmatched,
        ),
        cluster=replicator.status if replicator else None,
        in_thread=deferToThread,
        senders=senders,
    )
    listeners = _listeners(config, appliance, stats, senders, reactor)
    supervisor = _supervisor(appliance, stats, reactor)
    reload = _reloader(config, appliance, listeners, supervisor, levels)
    decisions = _decisions(config, appliance, reactor)
    bouncers = decisions.bouncers if decisions is not None else None
    dispatcher = Dispatcher(appliance, reload, in_thread=deferToThread, bouncers=bouncers)
    top = MultiService()
    # The pipeline's order: bans restored (and the cluster's adopted) before any listener opens.
    for child in (
        ApplianceService(appliance),
        replicator,
        listeners,
        _control(config, dispatcher, reactor),
        _metrics(config, appliance, reactor),
        decisions,
        SystemdService(supervisor, reactor, reload),
    ):
        if child is not None:
            child.setServiceParent(top)
    return top, appliance


def _listeners(
    config: Config, appliance: Appliance, stats: ReceiverStats, senders: SenderBook, reactor: Any
) -> Listeners:
    """The syslog listeners, each message through the engine's routing gate: one no jail can
    match is counted and dropped unparsed. The engine lives as long as the process (a reload
    swaps its jails, not the engine)."""
    return Listeners(
        config.listeners,
        lambda conf: ListenerService(
            conf, appliance.receive, stats, reactor, appliance.engine.gate, senders
        ),
    )


def _reloader(
    config: Config,
    appliance: Appliance,
    listeners: Listeners,
    supervisor: Supervisor,
    levels: LevelFilter | None,
) -> Reloader:
    """The one reload (SIGHUP, ``appliancectl reload``), inside systemd's RELOADING=1 and
    READY=1; the log's level set to the new file's ``log_level`` unless ``levels`` is None."""
    return Reloader(
        config,
        appliance,
        listeners,
        around=supervisor.reload,
        then=(lambda new: levels.set(new.log_level)) if levels is not None else None,
    )


def _supervisor(appliance: Appliance, stats: ReceiverStats, reactor: Any) -> Supervisor:
    """systemd's notifications: ready, reloading, the STATUS= line, the watchdog."""
    return Supervisor(
        SdNotifier.from_environ(),
        reactor,
        lambda: status_line(len(appliance.engine.jails), len(appliance.active), stats.received),
        watchdog=watchdog_interval(),
    )


def _control(config: Config, dispatcher: Dispatcher, reactor: Any) -> UNIXServer:
    """The control socket appliancectl talks to (group-writable: the applianced group)."""
    return UNIXServer(
        str(config.control_socket),
        ControlFactory(dispatcher),
        mode=0o660,
        wantPID=False,
        reactor=reactor,
    )


def _replicator(
    config: Config,
    store: SqliteOffenderStore,
    reactor: Any,
    appliance: Callable[[], Appliance],
    share: bool,
) -> Replicator:
    """Cluster mode's replicator; ``appliance`` returns the Appliance it feeds, ``share``:
    other appliances' failures are counted here too (``share_failures``)."""
    from applianced.cluster import postgres
    from applianced.cluster.replicator import Replicator

    return Replicator(
        store,
        lambda bans, ended: appliance().adopt(bans, ended),
        postgres.connect_args(config.state),
        reactor,
        where=postgres.describe(config.state.dsn),
        counted=(lambda failures: appliance().remote_failures(failures)) if share else None,
    )


def _metrics(config: Config, appliance: Appliance, reactor: Any) -> Service | None:
    """The Prometheus endpoint when ``[metrics] enabled``, reading the appliance's stats."""
    if not config.metrics.enabled:
        return None
    # Imported here: prometheus-client and twisted.web cost start-up time otherwise.
    from applianced.kernelelements import KernelElements
    from applianced.metrics import MetricsService, make_registry

    # Its own registry, read at scrape time from the appliance's stats; the kernel's sets
    # listed in a worker thread first, as status does (a recent listing reused).
    kernel = KernelElements(appliance.enforcer, reactor, deferToThread)
    return MetricsService(
        config.metrics, make_registry(appliance, kernel=kernel), reactor, before=kernel.refresh
    )


def _decisions(config: Config, appliance: Appliance, reactor: Any) -> DecisionService | None:
    """The decision stream for CrowdSec bouncers when ``[decisions]`` is set; its keys in the
    state directory (``appliancectl bouncer add``)."""
    if config.decisions is None:
        return None
    from applianced.bouncers import KeyRing
    from applianced.decisions.server import DecisionService

    keys = KeyRing(config.state_dir)
    return DecisionService(config.decisions, appliance, keys, reactor, in_thread=deferToThread)


def make_notifier(config: Config, reactor: Any) -> Notifier:
    """Ban mails: SMTP or sendmail, our whois client over TCP 43, PTR names in a thread."""

    def whois_for(conf: NotifyConf) -> WhoisClient | None:
        if not conf.whois_server:
            return None
        return WhoisClient(
            reactor,
            tcp_query(reactor, conf.whois_timeout),
            conf.whois_server,
            dict(conf.whois_servers),
            conf.whois_timeout,
            conf.whois_cache,
        )

    def reverse(address: IPAddress) -> Deferred[str]:
        return deferToThread(lambda: socket.gethostbyaddr(str(address))[0])

    return Notifier(config, reactor, lambda conf: make_mailer(reactor, conf), whois_for, reverse)


def local_addresses() -> list[IPNetwork]:
    """Addresses of this machine's interfaces (never banned). Read once at start."""
    try:
        out = subprocess.run(
            ["ip", "-j", "addr", "show"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
        nets = [
            ip_network(a["local"])
            for iface in json.loads(out)
            for a in iface.get("addr_info", [])
            if "local" in a
        ]
    except (OSError, subprocess.SubprocessError, ValueError, KeyError) as e:
        log.warn("cannot list local addresses ({error}); only loopback is protected", error=str(e))
        nets = []
    return [ip_network("127.0.0.0/8"), ip_network("::1/128"), *nets]


def pick_enforcer(config: Config, dry_run: bool) -> Enforcer:
    if dry_run:
        log.warn("DRY RUN: bans are decided and recorded but NOT enforced in the kernel")
        return MemoryEnforcer()
    from applianced.enforcement.nftables import NftablesEnforcer

    problem = NftablesEnforcer.available()
    if problem is not None:
        raise ApplianceError(
            f"nftables is not usable: {problem}. Run as root (or with CAP_NET_ADMIN), "
            "install nftables and python3-nftables, or start with --dry-run to enforce nothing"
        )
    return NftablesEnforcer(priority=config.enforcement.priority)


def _prepare_socket(path: Path) -> None:
    """Create the socket's directory; refuse to start when another daemon answers there."""
    path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    if not path.exists():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()  # stale, from a crash
    else:
        raise ApplianceError(f"another applianced is already running on {path}")
    finally:
        probe.close()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="applianced",
        description="Syslog receiver that bans inline: receives syslog over UDP/TCP, runs "
        "fail2ban-style jails on every message, records offenders durably and bans "
        "through nftables sets.",
        epilog="example: applianced --config /etc/applianced/appliance.toml\n"
        "Check a config without starting: appliancectl check --config FILE",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="configuration file (default: $APPLIANCED_CONFIG, else "
        "/etc/applianced/appliance.toml, else the shipped default)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="decide and record bans but enforce nothing (no nftables needed)",
    )
    p.add_argument(
        "--log-format",
        choices=FORMATS,
        default="auto",
        help="stderr lines: text (with timestamps), journal (<N> level prefixes, no timestamps), "
        "auto (journal when stderr is $JOURNAL_STREAM, as under systemd; the default)",
    )
    p.add_argument(
        "--log-level",
        choices=LEVELS,
        default=None,
        help="the least level logged; wins over [daemon] log_level (default: info: our own "
        "lines, and any library's warnings and errors)",
    )
    p.add_argument("--version", action="version", version=f"applianced {__version__}")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    levels = LevelFilter(log_observer(sys.stderr, args.log_format), args.log_level or "info")
    globalLogBeginner.beginLoggingTo([levels], redirectStandardIO=False)
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    try:
        config = load_config(config_path(args.config))
        levels.set(args.log_level or config.log_level)
        enforcer = pick_enforcer(config, args.dry_run)
        _prepare_socket(config.control_socket)
        top, _ = make_service(
            config,
            reactor,
            enforcer,
            local_addresses(),
            levels=None if args.log_level else levels,
        )
        top.startService()
    except ConfigError as e:
        print(f"applianced: configuration error: {e}", file=sys.stderr)
        return 2
    except CannotListenError as e:
        print(f"applianced: {_cannot_listen(config, e)}", file=sys.stderr)
        return 1
    except ApplianceError as e:
        print(f"applianced: {e}", file=sys.stderr)
        return 1
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    log.info(
        "applianced {version} running: {jails}, listening on {listeners}, control socket {socket}",
        version=__version__,
        jails=plural(len(config.enabled_jails), "jail"),
        listeners=", ".join(_endpoints(config)),
        socket=str(config.control_socket),
    )
    reactor.run()
    return 0


def _endpoints(config: Config) -> list[str]:
    """What the running line names: the listeners, the metrics and the decision stream."""
    ends = [f"{c.transport}/{c.address}:{c.port}" for c in config.listeners]
    if config.metrics.enabled:
        ends.append(f"metrics http://{_host(config.metrics.address)}:{config.metrics.port}/metrics")
    if (d := config.decisions) is not None:
        scheme = "http" if d.tls is None else "https"
        ends.append(f"decision stream {scheme}://{_host(d.address)}:{d.port}/")
    return ends


def _cannot_listen(config: Config, e: CannotListenError) -> str:
    """A port the daemon could not bind, named with what it is for."""
    port = int(e.port)
    if config.decisions is not None and port == config.decisions.port:
        what, held = "the decision stream, [decisions]", "another program"
    elif config.metrics.enabled and port == config.metrics.port:
        what, held = "the metrics, [metrics]", "another program"
    else:
        what, held = "a syslog listener", "another syslog daemon"
    return (
        f"cannot listen on {e.interface or '*'}:{port} ({what}): {e.socketError}. Is {held} "
        f"on that port (`ss -ltnup 'sport = :{port}'`)? Ports below 1024 need root or "
        "CAP_NET_BIND_SERVICE."
    )


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _install_signals(reactor: Any, reload: Reload) -> None:
    import signal

    def on_hup(signum: int, frame: object) -> None:
        def run() -> None:
            def failed(reason: Failure) -> None:
                if not reason.check(ApplianceError):  # those are logged by the reloader
                    log.failure("reload failed", reason)

            reload().addErrback(failed)

        reactor.callFromThread(run)

    signal.signal(signal.SIGHUP, on_hup)
