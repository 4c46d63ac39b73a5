"""``appliancectl``: the operator's command line.

Online verbs talk to the running daemon over the control socket (``control.py`` is the server):
status, banned, ban, unban, blacklist, why, flush, reload, notify test. Offline verbs need no
daemon: ``check`` (validate a config), ``parse`` (syslog messages -> fields), ``test-filter`` (a
filter or a jail over a log file) and ``tls init``. The config edits (``jail``, ``whitelist``,
``general``, in ``conf/edit.py``) write the file, then ask a running daemon to reload. Every verb
has ``--json`` for scripts; errors go to stderr with a non-zero exit: 1 for a refused request, 2
for bad usage or config, 3 when the daemon is down.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from applianced import tlsinit
from applianced.conf import edit
from applianced.conf.filterfiles.fail2ban import (
    is_fail2ban_filter,
    resolve_fail2ban_filter,
    strip_date,
)
from applianced.conf.filterfiles.native import shipped_filter, shipped_filter_names
from applianced.conf.load import load_config
from applianced.errors import ApplianceError, ConfigError, FilterError
from applianced.receiver.parse import (
    Dropped,
    escape_controls,
    message_fields,
    parse,
    parse_routed,
)
from applianced.rules.engine import GateCache
from applianced.rules.filters import Filter, Outcome
from applianced.rules.jail import ProgramSelector, jail_filter
from applianced.rules.message import SyslogMessage
from applianced.service import config_path
from applianced.units import format_duration

__all__ = ["main"]

EXIT_REFUSED, EXIT_USAGE, EXIT_DOWN = 1, 2, 3
_ONLINE = ("status", "banned", "ban", "unban", "blacklist", "why", "flush", "reload", "notify")


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.code = code


# -- the control socket client --------------------------------------------------------------


def request(
    sock_path: Path, verb: str, args: dict[str, Any] | None = None, timeout: float = 30.0
) -> Any:
    """Send one request to the daemon and return its result, or raise CliError."""
    line = json.dumps({"verb": verb, "args": args or {}}).encode() + b"\n"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(sock_path))
    except (FileNotFoundError, ConnectionRefusedError):
        raise CliError(
            f"applianced is not running (nothing answers on {sock_path}); start it with "
            "`systemctl start applianced` or `./dev run`, or pass --socket/--config",
            EXIT_DOWN,
        ) from None
    except PermissionError:
        raise CliError(
            f"no permission to use {sock_path}; run as root or as a member of the applianced group",
            EXIT_DOWN,
        ) from None
    try:
        s.sendall(line)
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    except OSError as e:
        raise CliError(f"lost the connection to applianced: {e}", EXIT_DOWN) from None
    finally:
        s.close()
    try:
        answer = json.loads(data)
    except ValueError:
        raise CliError("applianced sent an unreadable answer; see its log", EXIT_DOWN) from None
    if not answer.get("ok"):
        raise CliError(str(answer.get("error", "request refused")))
    return answer.get("result")


# -- output helpers ---------------------------------------------------------------------------


def _out(args: argparse.Namespace, data: Any, human: Any) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=None if isinstance(data, list) else 2))
    else:
        human(data)


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _console() -> Console:
    """A console for tables: a terminal's own width, or wide enough when piped (addresses and
    jail names are never cut)."""
    return Console() if sys.stdout.isatty() else Console(width=160)


def _bans_table(bans: list[dict[str, Any]], title: str) -> None:
    console = _console()
    if not bans:
        console.print(f"{title}: none")
        return
    table = Table(title=title)
    for col in ("jail", "address", "kind", "ban #", "started", "expires", "left"):
        table.add_column(col, no_wrap=col in ("jail", "address"))
    for b in bans:
        table.add_row(
            b["jail"],
            b["address"],
            b["kind"],
            str(b["count"]),
            _when(b["started_at"]),
            _when(b["expires_at"]),
            format_duration(b["remaining"]),
        )
    console.print(table)


# -- online verbs -----------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> None:
    result = request(args.sock, "status", {"jail": args.jail} if args.jail else {})

    def human(r: dict[str, Any]) -> None:
        console = _console()
        h = r["health"]
        console.print(
            f"applianced up {format_duration(r['uptime'])}, backend {r['backend']}"
            + ("" if r["backend"] != "memory" else " (DRY RUN: nothing enforced)")
        )
        if h["last_error"] or h["unapplied"]:
            refused = h.get("refused_elements", 0)
            console.print(
                f"[bold red]problem:[/] {h['last_error']} ({h['unapplied']} changes not "
                "yet in the kernel, retrying"
                + (f"; {refused} refused by the kernel, not retried)" if refused else ")")
            )
        n = r.get("notify")
        if n and n["jails"]:
            trouble = f"; retrying, last error: {n['last_error']}" if n["retrying"] else ""
            console.print(
                f"ban mails via {n['via']}: {n['sent']} sent ({n['digests']} digests), "
                f"{n['backlog']} bans waiting, {n['dropped']} dropped{trouble}",
                markup=False,
                highlight=False,
            )
        c = r.get("cluster")
        if c:
            db = "connected" if c["connected"] else f"UNREACHABLE ({c['last_error']})"
            console.print(
                f"cluster node {c['node']}: database {c['database']} {db}; "
                f"{c['backlog']} changes waiting to be pushed",
                markup=False,
                highlight=False,
            )
            for n in c["nodes"]:
                console.print(
                    f"  node {n['name']}: last heartbeat {format_duration(n['age'])} ago, "
                    f"{n['backlog']} changes waiting, applianced {n['version']}",
                    markup=False,
                    highlight=False,
                )
        rc = r["receiver"]
        console.print(
            f"received {rc['received']} messages; dropped: {rc['parse_errors']} "
            f"unparsable, {rc['frame_errors']} bad frames, {rc['oversize']} oversize, "
            f"{rc['refused_senders']} from refused senders, "
            f"{rc.get('rate_limited', 0)} over the sender rate, "
            f"{rc.get('udp_kernel_drops', 0)} by the kernel (UDP receive buffer full)"
        )
        console.print(
            f"no jail could match (not parsed): {rc.get('gated_unread', 0)} of programs no "
            f"jail reads, {rc.get('gated_no_literal', 0)} without any of their jails' literals"
        )
        console.print(
            f"connections: {rc.get('open_connections', 0)} open, "
            f"{rc.get('refused_connections_total', 0)} refused at max_connections, "
            f"{rc.get('refused_connections_sender', 0)} at max_connections_per_sender, "
            f"{rc.get('refused_connections_descriptors', 0)} at the descriptor budget; closed: "
            f"{rc.get('handshake_timeouts', 0)} without a TLS handshake, "
            f"{rc.get('first_frame_timeouts', 0)} without a first frame, "
            f"{rc.get('idle_timeouts', 0)} idle"
        )
        table = Table()
        for col in (
            "jail",
            "matched",
            "tracked",
            "banned",
            "blacklisted",
            "in kernel",
            "maxretry/findtime",
            "bantime",
        ):
            table.add_column(col, no_wrap=col == "jail")
        for name, j in r["jails"].items():
            table.add_row(
                name,
                str(j["matched"]),
                str(j["tracked"]),
                str(j["banned"]),
                str(j["blacklisted"]),
                str(j["kernel_elements"]),
                f"{j['maxretry']} in {format_duration(j['findtime'])}",
                format_duration(j["bantime"]),
            )
        console.print(table)

    _out(args, result, human)


def cmd_banned(args: argparse.Namespace) -> None:
    result = request(args.sock, "banned", {"jail": args.jail} if args.jail else {})
    _out(args, result, lambda r: _bans_table(r, "active bans"))


_LOCAL_HELP = "cluster mode: on this appliance only (default: on every appliance of the cluster)"


def cmd_ban(args: argparse.Namespace) -> None:
    payload = {"jail": args.jail, "target": args.address}
    if args.duration is not None:
        payload["duration"] = args.duration
    if args.local:
        payload["local"] = True
    result = request(args.sock, "ban", payload)
    _out(
        args,
        result,
        lambda b: print(
            f"banned {b['address']} in {b['jail']} for {format_duration(b['remaining'])}"
        ),
    )


def cmd_unban(args: argparse.Namespace) -> None:
    payload = {"target": args.address}
    if args.jail:
        payload["jail"] = args.jail
    if args.local:
        payload["local"] = True
    result = request(args.sock, "unban", payload)
    _out(args, result, lambda r: [print(f"unbanned {b['address']} in {b['jail']}") for b in r])


def cmd_blacklist(args: argparse.Namespace) -> None:
    if args.action == "add":
        if not args.address:
            raise CliError("usage: appliancectl blacklist add JAIL ADDR", EXIT_USAGE)
        result = request(
            args.sock, "blacklist_add", {"jail": args.jail_or_addr, "target": args.address}
        )
        _out(args, result, lambda b: print(f"blacklisted {b['address']} in {b['jail']}"))
    elif args.action == "remove":
        payload = {"target": args.jail_or_addr}
        if args.jail:
            payload["jail"] = args.jail
        result = request(args.sock, "blacklist_remove", payload)
        _out(
            args,
            result,
            lambda r: [print(f"removed {b['address']} from the {b['jail']} blacklist") for b in r],
        )
    else:
        result = request(args.sock, "blacklist_list", {"jail": args.jail} if args.jail else {})
        _out(args, result, lambda r: _bans_table(r, "blacklist"))


def cmd_why(args: argparse.Namespace) -> None:
    result = request(args.sock, "why", {"target": args.address})

    def human(r: dict[str, Any]) -> None:
        console = _console()
        console.print(f"[bold]{r['address']}[/]")
        for name, j in r["jails"].items():
            state = (
                "ignored (never banned)"
                if j["ignored"]
                else (
                    "BLACKLISTED"
                    if j["blacklisted"]
                    else (
                        f"banned, {format_duration(j['active_ban']['remaining'])} left"
                        if j["active_ban"]
                        else "not banned"
                    )
                )
            )
            console.print(
                f"  {name}: {state}; {j['failures']}/{j['maxretry']} failures in the "
                f"window; {j['repeat_count']} bans within findtime_history"
            )
            for line in j["recent_lines"]:
                console.print(f"      {line}", markup=False, highlight=False)
        if r["history"]:
            console.print("  history:")
        for h in r["history"]:
            end = f"ended {_when(h['ended_at'])} ({h['end_reason']})" if h["ended_at"] else "active"
            decided = f", decided by node {h['node']}" if h.get("node") else ""
            sender = f" on a line from {h['sender']}" if h.get("sender") else ""
            console.print(
                f"    {h['jail']} {h['address']} ban #{h['count']} {h['kind']} from "
                f"{_when(h['started_at'])}, {end}{decided}{sender}",
                markup=False,
                highlight=False,
            )
            for line in h["lines"]:
                console.print(f"      {line}", markup=False, highlight=False)

    _out(args, result, human)


def cmd_flush(args: argparse.Namespace) -> None:
    result = request(args.sock, "flush", {"jail": args.jail} if args.jail else {})
    _out(args, result, lambda r: print(f"lifted {len(r)} bans"))


def cmd_reload(args: argparse.Namespace) -> None:
    result = request(args.sock, "reload")
    _out(args, result, lambda r: print(_reloaded(r)))


def _reloaded(r: dict[str, Any]) -> str:
    moved = r.get("listeners") or {}
    listeners = "; ".join(
        f"{what} {', '.join(moved[what])}"
        for what in ("opened", "closed", "updated")
        if moved.get(what)
    )
    return f"reloaded; enabled jails: {', '.join(r['jails'])}" + (
        f"; listeners {listeners}" if listeners else ""
    )


def cmd_notify(args: argparse.Namespace) -> None:
    # The daemon answers after the whole SMTP dialogue (connect and command timeouts included).
    result = request(args.sock, "notify_test", timeout=300.0)
    _out(
        args,
        result,
        lambda r: print(
            f"test mail delivered via {r['via']} to {', '.join(r['to'])}\n{r['dialogue']}"
        ),
    )


# -- live edits of the config file (offline-capable, then a reload) ----------------------------


def cmd_jail(args: argparse.Namespace) -> None:
    path = config_path(args.config)
    if args.action == "set":
        if args.option is None or args.value is None:
            raise CliError("usage: appliancectl jail set JAIL OPTION VALUE", EXIT_USAGE)
        _edit(args, lambda: edit.jail_set(path, args.jail, args.option, args.value))
    else:
        if args.option is not None:
            raise CliError(f"usage: appliancectl jail {args.action} JAIL", EXIT_USAGE)
        _edit(args, lambda: edit.jail_enable(path, args.jail, args.action == "enable"))


def cmd_whitelist(args: argparse.Namespace) -> None:
    path = config_path(args.config)
    add = args.action == "add"
    if args.everywhere:
        if args.address is not None:
            raise CliError(f"usage: appliancectl whitelist {args.action} --global ADDR", EXIT_USAGE)
        jail, address = None, args.jail_or_addr
    else:
        if args.address is None:
            raise CliError(
                f"usage: appliancectl whitelist {args.action} JAIL ADDR (or --global ADDR)",
                EXIT_USAGE,
            )
        jail, address = args.jail_or_addr, args.address
    _edit(args, lambda: edit.whitelist(path, jail, address, add))


def cmd_general(args: argparse.Namespace) -> None:
    path = config_path(args.config)
    _edit(args, lambda: edit.general_enable(path, args.action == "enable"))


def _edit(args: argparse.Namespace, make: Callable[[], edit.EditResult]) -> None:
    """Run one edit (validated, written atomically), then ask the daemon to reload."""
    try:
        result = make()
    except ConfigError as e:
        raise CliError(f"refused, nothing written: {e}", EXIT_USAGE) from None
    except edit.EditError as e:
        raise CliError(f"refused, nothing written: {e}", EXIT_REFUSED) from None
    except OSError as e:
        raise CliError(f"cannot write the config: {e}", EXIT_REFUSED) from None
    out: dict[str, Any] = {
        "config": str(result.path),
        "changed": result.changed,
        "created": result.created,
        "changes": [
            {"table": c.table, "key": c.key, "old": c.old, "new": c.new} for c in result.changes
        ],
        "reload": "unchanged",
    }
    lines = [f"{result.path}: added [jails.{result.created}]"] if result.created else []
    lines += [
        f"{result.path}: {c.table}.{c.key}: {'(unset)' if c.old is None else json.dumps(c.old)} "
        f"-> {json.dumps(c.new)}"
        for c in result.changes
    ]
    if not result.changed:
        lines.append(f"{result.path}: already so; nothing changed")
    else:
        assert result.config is not None
        sock = Path(args.socket) if args.socket is not None else result.config.control_socket
        try:
            answer = request(sock, "reload")
        except CliError as e:
            if e.code != EXIT_DOWN:
                raise CliError(
                    f"{result.path} was changed, but applianced refused to reload it: {e}"
                ) from None
            if not str(e).startswith("applianced is not running"):  # no permission, lost...
                raise CliError(
                    f"{result.path} was changed, but applianced could not be told to reload: "
                    f"{e}; then run `appliancectl reload`",
                    EXIT_DOWN,
                ) from None
            out["reload"] = "daemon not running"
            lines.append(f"applianced is not running ({sock}): the change applies at next start")
        else:
            out["reload"] = "done"
            out["jails"] = answer["jails"]
            lines.append(_reloaded(answer))
            running = answer.get("config")
            if running and Path(running).resolve() != Path(result.path).resolve():
                lines.append(f"warning: the running daemon reads {running}, not {result.path}")
                out["warning"] = f"the running daemon reads {running}"
    _out(args, out, lambda _: print("\n".join(lines)))


# -- offline verbs ----------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> None:
    path = config_path(args.config)
    try:
        config = load_config(path)
    except ConfigError as e:
        raise CliError(str(e), EXIT_USAGE) from None
    summary = {
        "config": str(path),
        "listeners": [f"{c.transport}/{c.address}:{c.port}" for c in config.listeners],
        "jails": {j.name: j.enabled for j in config.jails},
    }
    _out(
        args,
        summary,
        lambda s: print(
            f"{s['config']}: OK; listeners {', '.join(s['listeners'])}; jails "
            + ", ".join(f"{n}{'' if on else ' (disabled)'}" for n, on in s["jails"].items())
        ),
    )


def _open_log(source: str) -> IO[bytes]:
    """The log file as bytes, or stdin for ``-``."""
    return sys.stdin.buffer if source == "-" else open(source, "rb")


def _lines(source: str) -> Iterator[tuple[int, bytes]]:
    with _open_log(source) as stream:
        for number, raw in enumerate(stream, start=1):
            yield number, raw.rstrip(b"\r\n")


def cmd_parse(args: argparse.Namespace) -> None:
    now = datetime.now(UTC)
    for _, raw in _lines("-"):
        if not raw.strip():
            continue
        try:
            fields: dict[str, Any] = message_fields(parse(raw, now))
        except ApplianceError as e:
            fields = {"error": str(e)}
        if args.json:
            print(json.dumps(fields), flush=False)
        elif "error" in fields:
            print(f"error: {fields['error']}")
        else:
            print("  ".join(f"{k}={v}" for k, v in fields.items() if v is not None))


def _resolve_filter(args: argparse.Namespace) -> tuple[Filter, tuple[str, ...]]:
    """FILTER is a jail of the config or a shipped filter; returns it and its programs."""
    name = args.filter
    try:
        config = load_config(config_path(args.config))
    except ConfigError:
        config = None
    jail = config.jail(name) if config else None
    try:
        if jail is not None:
            return jail_filter(jail), jail.programs
        if is_fail2ban_filter(name):
            f2b = resolve_fail2ban_filter(name, None, Path.cwd())
            for note in f2b.notes:
                print(f"note: {note}", file=sys.stderr)
            return f2b.compile(), f2b.programs
        if name in shipped_filter_names():
            fdef = shipped_filter(name)
            return fdef.compile(), fdef.programs
    except FilterError as e:
        raise CliError(str(e), EXIT_USAGE) from None
    jails = ", ".join(j.name for j in config.jails) if config else "none (no config)"
    raise CliError(
        f"{name!r} is neither a jail ({jails}), a shipped filter "
        f"({', '.join(shipped_filter_names())}) nor a fail2ban filter file (a path to a .conf)",
        EXIT_USAGE,
    )


def _subject(
    filt: Filter, raw: bytes, message: SyslogMessage | None
) -> tuple[str, str | None] | None:
    """The text ``filt`` examines in a log line (``message`` is it parsed, None if
    unparsable) and the line's program; None if unparsable.

    A fail2ban filter gets the line as fail2ban would: the date cut off (syslog lines go
    through our parser, so both read the same ``host app[pid]: msg``), other lines with a
    leading syslog/ISO date stripped and their control characters escaped as the parser
    escapes them."""
    if not filt.on_line:
        return None if message is None else (message.msg, message.app_name)
    if message is not None and message.timestamp is not None:
        return " " + message.line, message.app_name
    return strip_date(escape_controls(raw).decode("utf-8", "replace")), None


def _progress(source: str) -> tuple[Progress, TaskID] | None:
    """A progress bar on stderr for a big file when stderr is a terminal."""
    if source == "-" or not sys.stderr.isatty():
        return None
    try:
        size = Path(source).stat().st_size
    except OSError:
        return None
    if size < _PROGRESS_MIN_BYTES:
        return None
    bar = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    return bar, bar.add_task(Path(source).name, total=size)


_PROGRESS_MIN_BYTES = 8 << 20


def _advancing(lines: Iterable[bytes], bar: Progress, task: TaskID) -> Iterator[bytes]:
    """``lines`` unchanged, moving the progress bar every 8192 lines (only on a terminal: off
    it, the log is read without this generator in the way)."""
    done = 0
    for number, raw in enumerate(lines, start=1):
        done += len(raw)
        if number % 8192 == 0:
            bar.update(task, completed=done)
        yield raw


def cmd_test_filter(args: argparse.Namespace) -> None:
    filt, programs = _resolve_filter(args)
    selects = ProgramSelector(programs)
    gate = GateCache(
        lambda tag: filt.needles if selects(tag.decode("utf-8", "replace")) else None
    ).__getitem__
    now = datetime.now(UTC)
    # Plain counters, not a dict: the loop below runs once a line of a log of millions.
    matched = ignored = missed = other_program = blank = 0
    per_regex: dict[int, int] = {}
    missed_lines: list[str] = []
    want_json, want_missed = args.json, args.missed
    progress = _progress(args.log)
    started = time.monotonic()
    number = 0
    try:
        if progress is not None:
            progress[0].start()
        with _open_log(args.log) as stream:
            lines = stream if progress is None else _advancing(stream, *progress)
            for number, raw in enumerate(lines, start=1):
                # Most lines of a mail log are other programs', or lack every literal the
                # filter needs: known from the bytes alone, as in the daemon. parse_routed cuts
                # the line end itself, and a line it drops has the common syslog shape, so is
                # not blank: the blank test and the strip wait for the lines it keeps.
                try:
                    routed = parse_routed(raw, gate, now)
                except ApplianceError:
                    routed = None
                if routed is Dropped.UNREAD:
                    other_program += 1
                    continue
                if routed is Dropped.HOPELESS:
                    missed += 1
                    if want_missed:
                        missed_lines.append(f"{number}: {_shown(raw)}")
                    continue
                raw = raw.rstrip(b"\r\n")
                if not raw.strip():
                    blank += 1
                    continue
                subject = _subject(filt, raw, routed)
                if subject is None:
                    missed += 1
                    continue
                text, app_name = subject
                if app_name is not None and not selects(app_name):
                    other_program += 1
                    continue
                outcome, match, index = filt.examine(text, prefilter=True)
                if outcome is Outcome.MATCHED and match is not None:
                    matched += 1
                    per_regex[index or 0] = per_regex.get(index or 0, 0) + 1
                    if want_json:
                        row: dict[str, Any] = {"lineno": number, "host": match.host}
                        if match.user is not None:
                            row["user"] = match.user
                        print(json.dumps(row))
                elif outcome is Outcome.IGNORED:
                    ignored += 1
                else:
                    missed += 1
                    if want_missed:
                        missed_lines.append(f"{number}: {_shown(raw)}")
    except OSError as e:
        raise CliError(f"cannot read {args.log}: {e}", EXIT_USAGE) from None
    finally:
        if progress is not None:
            progress[0].stop()
    elapsed = time.monotonic() - started
    counts = {
        "lines": number - blank,
        "matched": matched,
        "ignored": ignored,
        "missed": missed,
        "other_program": other_program,
    }
    rate = counts["lines"] / elapsed if elapsed > 0 else 0.0
    summary = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items())
    print(f"{args.filter}: {summary} ({rate:,.0f} lines/s)", file=sys.stderr)
    if not args.json:
        _report(filt, per_regex, counts, missed_lines)


def _shown(raw: bytes) -> str:
    """A log line as --missed prints it: its control characters escaped, as filters read them
    (and harmless to a terminal)."""
    return escape_controls(raw.rstrip(b"\r\n")).decode("utf-8", "replace")


def _report(
    filt: Filter, per_regex: dict[int, int], counts: dict[str, int], missed: list[str]
) -> None:
    """The human report, in the shape of fail2ban-regex's."""
    print(f"Failregex: {counts['matched']} total")
    print("|- #) [# of hits] regular expression")
    for index, regex in enumerate(filt.failregex):
        print(f"|  failregex #{index + 1}: [{per_regex.get(index, 0)} hits] {regex}")
    print(f"`- Ignored (ignoreregex or a <F-NOFAIL> hit): {counts['ignored']} total")
    if filt.prefregex is not None:
        print(f"prefregex: {filt.prefregex}")
    print(
        f"Lines: {counts['lines']} lines, {counts['ignored']} ignored, {counts['matched']} "
        f"matched, {counts['missed']} missed, {counts['other_program']} of other programs"
    )
    for line in missed:
        print(f"  missed {line}")


def cmd_tls(args: argparse.Namespace) -> None:
    """``tls init``: CA, server and client certificates, then the snippets that use them."""
    names = args.server_name or [socket.getfqdn()]
    try:
        files = tlsinit.init_tls(args.dir, names, args.client or [], force=args.force)
    except tlsinit.TLSInitError as e:
        raise CliError(str(e), EXIT_USAGE) from None
    except OSError as e:
        raise CliError(f"cannot write into {args.dir}: {e}", EXIT_USAGE) from None
    data = {
        "directory": str(files.directory),
        "ca": {"cert": str(files.ca_cert), "key": str(files.ca_key)},
        "server": {
            "cert": str(files.server_cert),
            "key": str(files.server_key),
            "names": list(files.server_names),
        },
        "clients": {n: {"cert": str(c), "key": str(k)} for n, (c, k) in files.clients.items()},
        "config": tlsinit.config_snippet(files, args.port),
        "rsyslog": {n: tlsinit.rsyslog_snippet(files, n, args.port) for n in files.clients or [""]},
    }

    def human(d: dict[str, Any]) -> None:
        print(f"wrote the CA, the server certificate ({', '.join(files.server_names)})", end="")
        print(f" and {len(files.clients)} client certificate(s) into {d['directory']}")
        print(f"keep {files.ca_key.name} secret (better: offline); keys are mode 0600\n")
        print("# applianced: add to the config, then `appliancectl check` and reload")
        print(d["config"])
        for snippet in d["rsyslog"].values():
            print(snippet)

    _out(args, data, human)


# -- argument parsing -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="appliancectl",
        description="Control and inspect applianced. Online verbs talk to the running daemon; "
        "check, parse, test-filter and tls init work offline; jail, whitelist and general "
        "edit the config file and reload a running daemon.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  appliancectl status\n  appliancectl banned --json\n"
        "  appliancectl ban postfix-sasl 203.0.113.7 --for 1d\n  appliancectl why 203.0.113.7\n"
        "exit codes: 0 ok, 1 request refused, 2 bad usage or config, 3 daemon not reachable",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="config file, used to find the control socket (default: "
        "$APPLIANCED_CONFIG, /etc/applianced/appliance.toml, the shipped one)",
    )
    p.add_argument("--socket", type=Path, default=None, help="control socket (overrides config)")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, help: str, example: str) -> argparse.ArgumentParser:
        v = sub.add_parser(
            name,
            help=help,
            description=help,
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        v.add_argument("--json", action="store_true", help="machine-readable output")
        # Accepted after the verb too (`appliancectl check --config F`).
        v.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="config file")
        v.add_argument("--socket", type=Path, default=argparse.SUPPRESS, help="control socket")
        return v

    v = verb("status", "daemon health and per-jail counters", "appliancectl status postfix-sasl")
    v.add_argument("jail", nargs="?", help="only this jail")
    v.set_defaults(fn=cmd_status)
    v = verb("banned", "list active bans with their remaining time", "appliancectl banned --json")
    v.add_argument("--jail", help="only this jail")
    v.set_defaults(fn=cmd_banned)
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
    v.set_defaults(fn=cmd_ban)
    v = verb("unban", "lift the bans covering an address", "appliancectl unban 203.0.113.7")
    v.add_argument("address")
    v.add_argument("--jail", help="only in this jail (default: every jail)")
    v.add_argument("--local", action="store_true", help=_LOCAL_HELP)
    v.set_defaults(fn=cmd_unban)
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
    v.set_defaults(fn=cmd_blacklist)
    v = verb(
        "why",
        "every jail's view of an address: failures, bans, lines that caused them",
        "appliancectl why 203.0.113.7",
    )
    v.add_argument("address")
    v.set_defaults(fn=cmd_why)
    v = verb(
        "flush",
        "lift every active ban, blacklist included (in one jail or all)",
        "appliancectl flush --jail sshd",
    )
    v.add_argument("--jail", help="only this jail")
    v.set_defaults(fn=cmd_flush)
    v = verb(
        "reload",
        "re-read the config; a bad config is refused and the running one stays",
        "appliancectl reload",
    )
    v.set_defaults(fn=cmd_reload)
    v = verb(
        "jail",
        "edit the config file, keeping its comments, then reload: `jail enable|disable JAIL`, "
        f"`jail set JAIL OPTION VALUE` (options: {', '.join(edit.JAIL_OPTIONS)}). VALUE: a "
        "number, a duration (10m), true/false, a comma list for lists (ports 25,465,1000-2000; "
        "ignoreip 192.0.2.0/24,2001:db8::/48), or a TOML value for several regexes. A bad value is "
        "refused and nothing is written. Enabling a jail the file lacks that names a shipped "
        "filter adds [jails.NAME] (every port: set ports next)",
        "appliancectl jail set sshd maxretry 3\n  appliancectl jail set postfix-sasl bantime 1h"
        "\n  appliancectl jail set sshd ports 22,2222\n  appliancectl jail disable dovecot"
        "\n  appliancectl jail enable kerio",
    )
    v.add_argument("action", choices=("enable", "disable", "set"))
    v.add_argument("jail")
    v.add_argument("option", nargs="?", help="set: the option (bantime_increment.factor too)")
    v.add_argument("value", nargs="?", help="set: the new value")
    v.set_defaults(fn=cmd_jail)
    v = verb(
        "whitelist",
        "addresses never banned, in the config file's ignoreip (a jail's, or [defaults]'s with "
        "--global), then reload: `whitelist add|remove JAIL ADDR`, `whitelist add|remove "
        "--global ADDR`",
        "appliancectl whitelist add postfix-sasl 192.0.2.10\n"
        "  appliancectl whitelist add --global 198.51.100.0/24\n"
        "  appliancectl whitelist remove --global 198.51.100.0/24",
    )
    v.add_argument("action", choices=("add", "remove"))
    v.add_argument("jail_or_addr", metavar="JAIL|ADDR", help="the jail (with --global: ADDR)")
    v.add_argument("address", nargs="?", metavar="ADDR", help="an address or CIDR")
    v.add_argument(
        "--global", dest="everywhere", action="store_true", help="every jail ([defaults])"
    )
    v.set_defaults(fn=cmd_whitelist)
    v = verb(
        "general",
        "enable or disable every jail of the config file, then reload",
        "appliancectl general disable\n  appliancectl general enable",
    )
    v.add_argument("action", choices=("enable", "disable"))
    v.set_defaults(fn=cmd_general)
    v = verb(
        "notify",
        "ban mails: `notify test` sends a test mail the configured way and shows the outcome",
        "appliancectl notify test",
    )
    v.add_argument("action", choices=("test",))
    v.set_defaults(fn=cmd_notify)
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
    v.set_defaults(fn=cmd_tls)
    v = verb(
        "check",
        "validate a config file (offline)",
        "appliancectl check --config /etc/applianced/appliance.toml",
    )
    v.set_defaults(fn=cmd_check)
    v = verb(
        "parse",
        "parse syslog messages from stdin, one per line (offline)",
        "printf '<38>Nov 22 10:00:01 mx sshd[1]: hi\\n' | appliancectl parse --json",
    )
    v.set_defaults(fn=cmd_parse)
    v = verb(
        "test-filter",
        "run a shipped filter, a config jail or a fail2ban .conf over a log file (offline)",
        "appliancectl test-filter sshd /var/log/auth.log --json",
    )
    v.add_argument(
        "filter",
        help="a shipped filter name, a jail of the config, or a fail2ban filter file "
        "(/etc/fail2ban/filter.d/postfix.conf, optionally with [mode=aggressive])",
    )
    v.add_argument("log", help="a log file, or - for stdin")
    v.add_argument("--missed", action="store_true", help="print the lines that did not match")
    v.set_defaults(fn=cmd_test_filter)
    return p


def _socket_path(args: argparse.Namespace) -> Path:
    if args.socket is not None:
        return Path(args.socket)
    try:
        return load_config(config_path(args.config)).control_socket
    except ConfigError as e:
        raise CliError(f"cannot find the control socket: {e}; pass --socket", EXIT_USAGE) from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.verb in _ONLINE:
            args.sock = _socket_path(args)
        args.fn(args)
    except CliError as e:
        print(f"appliancectl: {e}", file=sys.stderr)
        return e.code
    except BrokenPipeError:
        return 0
    return 0
