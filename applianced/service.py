"""``applianced``: the daemon's entry point and the one place where the parts are wired.

``make_service`` builds a Twisted ``MultiService`` whose children start in pipeline order: the
appliance (store opened, kernel tables built, active bans restored), then the syslog listeners,
then the control socket; they stop in reverse order. ``main`` parses the command line, sets up
logging to stderr (journald takes it from there), handles SIGHUP (reload) and SIGTERM (stop).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

from twisted.application.internet import UNIXServer
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.threads import deferToThread
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver

from applianced import __version__
from applianced.appliance import Appliance
from applianced.conf.load import DEFAULT_CONFIG, load_config
from applianced.conf.schema import Config, NotifyConf
from applianced.control import ControlFactory, Dispatcher
from applianced.enforcement.base import Enforcer
from applianced.enforcement.mailer import make_mailer
from applianced.enforcement.memory import MemoryEnforcer
from applianced.enforcement.notify import Notifier
from applianced.enforcement.whois import WhoisClient, tcp_query
from applianced.errors import ApplianceError, ConfigError
from applianced.receiver.listeners import ListenerService, ReceiverStats
from applianced.rules.decision import IPAddress, IPNetwork
from applianced.rules.offenders import SqliteOffenderStore

__all__ = ["main", "make_service"]

log = Logger()

STORE_FILE = "offenders.sqlite"


class ApplianceService(Service):
    """Starts and stops the Appliance; the first child, so bans are restored before any
    listener opens."""

    def __init__(self, appliance: Appliance) -> None:
        self.appliance = appliance

    def startService(self) -> None:
        self.appliance.start()
        super().startService()

    def stopService(self) -> None:
        super().stopService()
        self.appliance.stop()
        return None


def make_service(
    config: Config, reactor: Any, enforcer: Enforcer, own_addresses: Sequence[IPNetwork] = ()
) -> tuple[MultiService, Appliance]:
    """The daemon as a MultiService, and its Appliance (for tests and the reload handler)."""
    store = SqliteOffenderStore(config.state_dir / STORE_FILE, lines_per_ban=config.lines_per_ban)
    stats = ReceiverStats()
    notifier = make_notifier(config, reactor)
    appliance = Appliance(
        config, store, enforcer, reactor, own_addresses, stats, resolver=resolve, notifier=notifier
    )
    top = MultiService()
    ApplianceService(appliance).setServiceParent(top)
    for conf in config.listeners:
        ListenerService(conf, appliance.receive, stats, reactor).setServiceParent(top)

    def reload() -> dict[str, Any]:
        new = load_config(config.path)
        appliance.reload(new)
        log.info("reloaded {path}", path=str(new.path))
        return {"jails": [j.name for j in new.enabled_jails]}

    control = UNIXServer(
        str(config.control_socket),
        ControlFactory(Dispatcher(appliance, reload)),
        mode=0o660,
        wantPID=False,
        reactor=reactor,
    )
    control.setServiceParent(top)
    return top, appliance


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


def resolve(host: str) -> Deferred[Sequence[IPAddress]]:
    """The addresses of ``host``, looked up in a thread so the reactor never waits on DNS."""

    def lookup() -> Sequence[IPAddress]:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        return list(dict.fromkeys(ip_address(str(info[4][0])) for info in infos))

    return deferToThread(lookup)


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
    p.add_argument("--version", action="version", version=f"applianced {__version__}")
    return p.parse_args(argv)


def config_path(given: Path | None) -> Path:
    if given is not None:
        return given
    env = os.environ.get("APPLIANCED_CONFIG")
    if env:
        return Path(env)
    etc = Path("/etc/applianced/appliance.toml")
    return etc if etc.exists() else DEFAULT_CONFIG


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    globalLogBeginner.beginLoggingTo(
        [textFileLogObserver(sys.stderr, timeFormat="%Y-%m-%dT%H:%M:%S%z")],
        redirectStandardIO=False,
    )
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    try:
        config = load_config(config_path(args.config))
        enforcer = pick_enforcer(config, args.dry_run)
        _prepare_socket(config.control_socket)
        top, appliance = make_service(config, reactor, enforcer, local_addresses())
        top.startService()
    except ConfigError as e:
        print(f"applianced: configuration error: {e}", file=sys.stderr)
        return 2
    except CannotListenError as e:
        print(
            f"applianced: cannot listen on {e.interface or '*'}:{e.port}: {e.socketError}. "
            "Is another syslog daemon on that port? Ports below 1024 need root or "
            "CAP_NET_BIND_SERVICE.",
            file=sys.stderr,
        )
        return 1
    except ApplianceError as e:
        print(f"applianced: {e}", file=sys.stderr)
        return 1
    _install_signals(reactor, appliance, config)
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    log.info(
        "applianced {version} running: {jails} jails, listening on {listeners}, "
        "control socket {socket}",
        version=__version__,
        jails=len(config.enabled_jails),
        listeners=", ".join(f"{c.transport}/{c.address}:{c.port}" for c in config.listeners),
        socket=str(config.control_socket),
    )
    reactor.run()
    return 0


def _install_signals(reactor: Any, appliance: Appliance, config: Config) -> None:
    import signal

    def on_hup(signum: int, frame: object) -> None:
        def reload() -> None:
            try:
                appliance.reload(load_config(config.path))
            except ConfigError as e:
                log.error("reload refused, keeping the running config: {error}", error=str(e))
            else:
                log.info("reloaded {path}", path=str(config.path))

        reactor.callFromThread(reload)

    signal.signal(signal.SIGHUP, on_hup)
