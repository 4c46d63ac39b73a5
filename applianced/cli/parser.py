"""``appliancectl``'s arguments and dispatch: the verbs, their options and help, and ``main``.

Each verb names its function as ``"module:function"`` of this package, imported only when the
verb runs: ``--help`` and the online verbs load neither the filters nor Twisted (a test checks
it), and only ``tls init`` loads the certificate code.

Over 400 lines, most of them help text: one small function per verb group.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from applianced.cli.client import EXIT_DOWN, EXIT_USAGE, CliError
from applianced.conf.jailkeys import JAIL_OPTIONS
from applianced.conf.paths import DEFAULT_CONTROL_SOCKET, config_path, control_socket
from applianced.errors import ApplianceError, ConfigError

__all__ = ["build_parser", "main"]

_LOCAL_HELP = "cluster mode: on this appliance only (default: on every appliance of the cluster)"

_Verb = Callable[[str, str, str], argparse.ArgumentParser]  # adds a verb: name, help, example


class _UsageError(ApplianceError):
    """argparse's complaint, raised rather than printed so that ``--json`` can shape it."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(self, message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="appliancectl",
        description="Control and inspect applianced. Online verbs talk to the running daemon; "
        "check, parse, test-filter, import-fail2ban and tls init work offline; jail, whitelist "
        "and general edit the config file and reload a running daemon.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  appliancectl status\n  appliancectl banned --json\n"
        "  appliancectl ban postfix-sasl 203.0.113.7 --for 1d\n  appliancectl why 203.0.113.7\n"
        "exit codes: 0 ok, 1 request refused, 2 bad usage or config, 3 daemon not reachable;\n"
        'with --json an error is {"error": {"code": ..., "message": ...}} on stderr',
    )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="config file, used to find the control socket (default: "
        "$APPLIANCED_CONFIG, /etc/applianced/appliance.toml, the shipped one)",
    )
    p.add_argument("--socket", type=Path, default=None, help="control socket (overrides config)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, help: str, example: str) -> argparse.ArgumentParser:
        v = sub.add_parser(
            name,
            help=help,
            description=help,
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        # Accepted after the verb too (`appliancectl check --config F`).
        v.add_argument(
            "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
        )
        v.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="config file")
        v.add_argument("--socket", type=Path, default=argparse.SUPPRESS, help="control socket")
        return v

    # In the order --help lists them.
    _ban_verbs(verb)
    _list_verbs(verb)
    _edit_verbs(verb)
    _notify_verb(verb)
    _tls_verb(verb)
    _bouncer_verb(verb)
    _state_verbs(verb)
    _line_verbs(verb)
    _test_filter_verb(verb)
    _import_verb(verb)
    return p


def _ban_verbs(verb: _Verb) -> None:
    v = verb(
        "status",
        "daemon health and per-jail counters; with JAIL, that jail's active bans too (the "
        "newest 50 and their count)",
        "appliancectl status\n  appliancectl status postfix-sasl --json",
    )
    v.add_argument("jail", nargs="?", help="only this jail, with its bans")
    v.set_defaults(fn="online:cmd_status")
    v = verb("banned", "list active bans with their remaining time", "appliancectl banned --json")
    v.add_argument("--jail", help="only this jail")
    v.set_defaults(fn="online:cmd_banned")
    v = verb(
        "ban",
        "ban an address or CIDR in a jail (refused for ignored addresses)",
        "appliancectl ban postfix-sasl 203.0.113.7 --for 1h",
    )
    v.add_argument("jail")
    v.add_argument("address", help="an IPv4/IPv6 address or a CIDR such as 203.0.113.0/24")
    v.add_argument(
        "--for",
        dest="duration",
        metavar="DURATION",
        help="600, 10m, 1h, 1d, 1w (default: the jail's bantime)",
    )
    v.add_argument("--local", action="store_true", help=_LOCAL_HELP)
    v.set_defaults(fn="online:cmd_ban")
    v = verb("unban", "lift the bans covering an address", "appliancectl unban 203.0.113.7")
    v.add_argument("address")
    v.add_argument("--jail", help="only in this jail (default: every jail)")
    v.add_argument("--local", action="store_true", help=_LOCAL_HELP)
    v.set_defaults(fn="online:cmd_unban")


def _list_verbs(verb: _Verb) -> None:
    v = verb(
        "blacklist",
        "permanent bans: add JAIL ADDR | remove ADDR [--jail J] | list",
        "appliancectl blacklist add postfix-sasl 203.0.113.0/24",
    )
    v.add_argument("action", choices=("add", "remove", "list"))
    v.add_argument(
        "jail_or_addr", nargs="?", metavar="JAIL|ADDR", help="add: the jail; remove: the address"
    )
    v.add_argument("address", nargs="?", metavar="ADDR", help="add: the address or CIDR")
    v.add_argument("--jail", help="remove/list: only this jail")
    v.set_defaults(fn="online:cmd_blacklist")
    v = verb(
        "why",
        "every jail's view of an address or a banned prefix: failures, bans, lines that "
        "caused them",
        "appliancectl why 203.0.113.7\n  appliancectl why 203.0.113.7/32\n"
        "  appliancectl why 2001:db8:1:2::/64",
    )
    v.add_argument("address", help="an address, or ADDR/len as `banned` prints it")
    v.set_defaults(fn="online:cmd_why")
    v = verb(
        "flush",
        "lift every active ban, blacklist included (in one jail or all)",
        "appliancectl flush --jail sshd",
    )
    v.add_argument("--jail", help="only this jail")
    v.set_defaults(fn="online:cmd_flush")
    v = verb(
        "reload",
        "re-read the config; a bad config is refused and the running one stays",
        "appliancectl reload",
    )
    v.set_defaults(fn="online:cmd_reload")
    v = verb(
        "senders",
        "each syslog sender: transport and listener, messages, parse errors, unmatched (reached "
        "a jail, matched nothing), bans its lines led to, last seen; the watched ones "
        "(sender_silence) first, SILENT when they went quiet",
        "appliancectl senders\n  appliancectl senders --json",
    )
    v.set_defaults(fn="online:cmd_senders")


def _edit_verbs(verb: _Verb) -> None:
    v = verb(
        "jail",
        "read or edit a jail in the config file, keeping its comments, then reload: `jail get "
        "JAIL [OPTION]` shows each option and where it comes from (the jail, [defaults] or "
        "built-in); `jail enable|disable JAIL`; `jail set JAIL OPTION VALUE`; `jail unset JAIL "
        "OPTION` falls back to [defaults] (options: "
        f"{', '.join(JAIL_OPTIONS)}). VALUE: a number, a duration (10m), true/false, a comma "
        "list for lists (ports 25,465,1000-2000; ignoreip 192.0.2.0/24,2001:db8::/48), or a "
        "TOML value for several regexes. A bad value is refused and nothing is written. "
        "Enabling a jail the file lacks that names a shipped filter adds [jails.NAME] (every "
        "port: set ports next)",
        "appliancectl jail get sshd\n  appliancectl jail get sshd maxretry"
        "\n  appliancectl jail set sshd maxretry 3\n  appliancectl jail set postfix-sasl bantime 1h"
        "\n  appliancectl jail set sshd ports 22,2222\n  appliancectl jail unset sshd bantime"
        "\n  appliancectl jail disable dovecot\n  appliancectl jail enable kerio",
    )
    v.add_argument("action", choices=("get", "set", "unset", "enable", "disable"))
    v.add_argument("jail")
    v.add_argument(
        "option", nargs="?", help="get, set, unset: the option (bantime_increment.factor too)"
    )
    v.add_argument("value", nargs="?", help="set: the new value")
    v.set_defaults(fn="edits:cmd_jail")
    v = verb(
        "whitelist",
        "addresses never banned, in the config file's ignoreip (a jail's, or [defaults]'s with "
        "--global), then reload: `whitelist add|remove JAIL ADDR`, `whitelist add|remove "
        "--global ADDR`. An address still banned is named after an add; --unban lifts its bans",
        "appliancectl whitelist add postfix-sasl 192.0.2.10\n"
        "  appliancectl whitelist add --global 198.51.100.0/24 --unban\n"
        "  appliancectl whitelist remove --global 198.51.100.0/24",
    )
    v.add_argument("action", choices=("add", "remove"))
    v.add_argument("jail_or_addr", metavar="JAIL|ADDR", help="the jail (with --global: ADDR)")
    v.add_argument("address", nargs="?", metavar="ADDR", help="an address or CIDR")
    v.add_argument(
        "--global", dest="everywhere", action="store_true", help="every jail ([defaults])"
    )
    v.add_argument(
        "--unban",
        action="store_true",
        help="add: also lift the address's active bans (else they are named, and kept)",
    )
    v.set_defaults(fn="edits:cmd_whitelist")
    v = verb(
        "general",
        "enable or disable every jail of the config file, then reload",
        "appliancectl general disable\n  appliancectl general enable",
    )
    v.add_argument("action", choices=("enable", "disable"))
    v.set_defaults(fn="edits:cmd_general")


def _notify_verb(verb: _Verb) -> None:
    """notify test (and its --preview, offline)."""
    v = verb(
        "notify",
        "ban mails: `notify test` sends a test mail the configured way and shows the outcome; "
        "with --preview it prints the mail a ban would send (sample data) and sends nothing",
        "appliancectl notify test\n  appliancectl notify test --preview --jail postfix-sasl",
    )
    v.add_argument("action", choices=("test",))
    v.add_argument(
        "--preview",
        action="store_true",
        help="print the headers and body of the mail a ban would send, sent nowhere",
    )
    v.add_argument(
        "--jail", help="with --preview: the jail whose mail (default: the first that mails)"
    )
    v.set_defaults(fn="online:cmd_notify")


def _state_verbs(verb: _Verb) -> None:
    """What needs no daemon but the store, the config or the cluster's database: store recover,
    check, cluster forget."""
    v = verb(
        "store",
        "`store recover`: with applianced stopped, move a damaged offenders store aside (kept) "
        "and build a new one from every ban that can be read; the next start adopts the "
        "kernel's bans it lacks (offline)",
        "appliancectl store recover --config /etc/applianced/appliance.toml",
    )
    v.add_argument("action", choices=("recover",))
    v.set_defaults(fn="store:cmd_store")
    v = verb(
        "check",
        "validate a config file (offline)",
        "appliancectl check --config /etc/applianced/appliance.toml",
    )
    v.add_argument(
        "--connect", action="store_true", help="cluster mode: also connect to the database"
    )
    v.set_defaults(fn="offline:cmd_check")
    v = verb(
        "cluster",
        "cluster mode, on the database itself: `cluster forget NODE` retires a node that is "
        "gone for good (its heartbeat and shared failures; its bans stay)",
        "appliancectl cluster forget mx-old",
    )
    v.add_argument("action", choices=("forget",))
    v.add_argument("node", help="the node's name ([state] node on it)")
    v.add_argument("--force", action="store_true", help="even if it sent a heartbeat lately")
    v.set_defaults(fn="cluster:cmd_cluster")


def _line_verbs(verb: _Verb) -> None:
    """What a line does: parse (offline), explain (the daemon's jails, or a config's offline)."""
    v = verb(
        "parse",
        "parse syslog messages from stdin, one per line (offline)",
        "printf '<38>Nov 22 10:00:01 mx sshd[1]: hi\\n' | appliancectl parse --json",
    )
    v.set_defaults(fn="offline:cmd_parse")
    v = verb(
        "explain",
        "walk one log line or syslog frame through the jails: how it parses, which jails read "
        "it, which regex matched and what it took, or why none did (the running daemon's "
        "jails; with --config, that file's, offline)",
        "appliancectl explain 'Nov 22 10:00:01 mx sshd[1]: Failed password for root from "
        "203.0.113.7 port 22 ssh2'\n  appliancectl explain < frame.bin --config appliance.toml",
    )
    v.add_argument("line", nargs="?", help="the line or frame (default, or -: read stdin)")
    v.set_defaults(fn="explain:cmd_explain")


def _test_filter_verb(verb: _Verb) -> None:
    """test-filter: a filter over a log, as fail2ban-regex does (offline)."""
    v = verb(
        "test-filter",
        "run a shipped filter, a config jail, a fail2ban .conf or an inline failregex over a log "
        "file, as fail2ban-regex does (offline)",
        "appliancectl test-filter /var/log/maillog '<HOST> rejected: directory harvest attack'",
    )
    v.add_argument(
        "first",
        metavar="FILTER|LOG",
        help="a shipped filter name, a jail of the config, a fail2ban filter file "
        "(/etc/fail2ban/filter.d/postfix.conf, optionally with [mode=aggressive]) or a failregex "
        "(it holds a host tag: <HOST>, <ADDR> ...); or the log, as fail2ban-regex takes them",
    )
    v.add_argument(
        "second",
        metavar="LOG|FILTER",
        help="the log file (an existing file, or - for stdin), or the filter after the log",
    )
    v.add_argument(
        "ignoreregex",
        nargs="?",
        metavar="IGNOREREGEX",
        help="an ignoreregex added to the filter's, or a fail2ban filter file whose ignoreregex "
        "to add",
    )
    v.add_argument(
        "--print-all-matched", action="store_true", help="list every matched line, numbered"
    )
    v.add_argument(
        "--print-all-missed",
        "--missed",
        action="store_true",
        help="list every missed line, numbered (without it: listed when 20 or fewer)",
    )
    v.add_argument(
        "--print-all-ignored",
        action="store_true",
        help="list every ignored line, numbered (without it: listed when 20 or fewer)",
    )
    v.set_defaults(fn="testfilter:cmd_test_filter")


def _import_verb(verb: _Verb) -> None:
    """import-fail2ban: a config from a fail2ban tree (offline)."""
    v = verb(
        "import-fail2ban",
        "write a config from a fail2ban tree's enabled jails (jail.conf, jail.d/, jail.local): "
        "filters from its filter.d, counts, times, escalation, ignoreip, ports, ban mails; "
        "each value says where it came from and what was not carried (offline)",
        "appliancectl import-fail2ban /etc/fail2ban --output /etc/applianced/appliance.toml",
    )
    v.add_argument(
        "dir", nargs="?", default="/etc/fail2ban", help="the fail2ban directory (%(default)s)"
    )
    v.add_argument(
        "--output", type=Path, metavar="FILE", help="write the config here (default: stdout)"
    )
    v.add_argument("--force", action="store_true", help="replace FILE if it exists")
    v.set_defaults(fn="importf2b:cmd_import_fail2ban")


def _tls_verb(verb: _Verb) -> None:
    """tls init (offline)."""
    v = verb(
        "tls",
        "syslog over TLS: `tls init` writes a CA, a server certificate and client "
        "certificates (ECDSA P-256; CA 10 years, others 2) and prints the applianced and "
        "rsyslog config that use them (offline)",
        "appliancectl tls init --dir /etc/applianced/tls --server-name appliance.example.org "
        "--client mx1.example.org",
    )
    v.add_argument("action", choices=("init",))
    v.add_argument(
        "--dir", type=Path, default=Path("/etc/applianced/tls"), help="default: %(default)s"
    )
    v.add_argument(
        "--server-name",
        action="append",
        metavar="NAME",
        help="a DNS name or IP address clients reach the appliance by (repeat for more; the "
        "first is the one clients check); default: this host's FQDN",
    )
    v.add_argument(
        "--client",
        action="append",
        metavar="NAME",
        help="a client certificate for this mail server (repeat for more)",
    )
    v.add_argument("--port", type=int, default=6514, help="for the snippets (default 6514)")
    v.add_argument("--force", action="store_true", help="overwrite existing files")
    v.set_defaults(fn="tls:cmd_tls")


def _bouncer_verb(verb: _Verb) -> None:
    """bouncer add|list|remove: the decision stream's CrowdSec bouncers."""
    v = verb(
        "bouncer",
        "CrowdSec bouncers of the decision stream: add NAME prints its API key once, list "
        "shows each one's last pull, address and version, remove NAME revokes its key",
        "appliancectl bouncer add mx1",
    )
    v.add_argument("action", choices=("add", "list", "remove"))
    v.add_argument("name", nargs="?", metavar="NAME", help="add/remove: the bouncer's name")
    v.set_defaults(fn="bouncers:cmd_bouncer")


def _socket_path(args: argparse.Namespace) -> tuple[Path, str | None]:
    """The control socket: --socket, else the one the config file names (read alone: a file
    the loader refuses still names it), else, when the file cannot be read, the default one,
    with the reason to tell if nothing answers there."""
    if args.socket is not None:
        return Path(args.socket), None
    try:
        return control_socket(config_path(args.config)), None
    except ConfigError as e:
        return Path(DEFAULT_CONTROL_SOCKET), (
            f"the config names no control socket ({e}), so the default one was tried; pass --socket"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb. Errors go to stderr, as JSON objects with ``--json``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    as_json = "--json" in argv
    try:
        args = build_parser().parse_args(argv)
    except _UsageError as e:
        if as_json:
            _fail(CliError(f"{e.parser.prog}: {e}", EXIT_USAGE), as_json)
        else:  # as argparse prints it
            e.parser.print_usage(sys.stderr)
            print(f"{e.parser.prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    doubt = None
    try:
        module, _, name = args.fn.partition(":")
        if module in ("online", "explain"):  # the verbs over the control socket
            args.sock, doubt = _socket_path(args)
        run: Callable[[argparse.Namespace], None] = getattr(
            importlib.import_module(f"applianced.cli.{module}"), name
        )
        run(args)
    except CliError as e:
        if doubt and e.code == EXIT_DOWN:
            e = CliError(f"{e}; {doubt}", e.code, e.kind, e.fields)
        _fail(e, as_json)
        return e.code
    except BrokenPipeError:
        return 0
    return 0


def _fail(e: CliError, as_json: bool) -> None:
    print(json.dumps(e.as_json()) if as_json else f"appliancectl: {e}", file=sys.stderr)
