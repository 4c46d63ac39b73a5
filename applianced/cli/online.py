"""The verbs that ask the running daemon over the control socket: status, banned, ban, unban,
blacklist, why, flush, reload, notify test, senders. Each sends one request (``client.request``) and
prints the answer (``output``); ``parser.py`` dispatches here.
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from applianced.cli.client import EXIT_USAGE, CliError, request
from applianced.cli.output import bans_table, console, out, when
from applianced.units import format_duration, plural

__all__ = [
    "cmd_ban",
    "cmd_banned",
    "cmd_blacklist",
    "cmd_flush",
    "cmd_notify",
    "cmd_reload",
    "cmd_senders",
    "cmd_status",
    "cmd_unban",
    "cmd_why",
    "reloaded",
]


def _store_lines(h: dict[str, Any]) -> list[str]:
    """The store's and the kernel's agreement: writes waiting, bans adopted, sets repaired."""
    lines = []
    if h.get("store_failing") or h.get("store_pending"):
        lines.append(
            f"store: NOT WRITABLE, {h['store_pending']} rows waiting in memory (retried; "
            f"{h['store_dropped']} dropped); bans are still enforced"
        )
    if h.get("recovered") or h.get("reconcile_repairs"):
        lines.append(
            f"kernel: {h['recovered']} bans adopted at start (not in the store); sets repaired "
            f"{h['reconcile_repairs']} times ({h['reconcile_missing']} bans put back, "
            f"{h['reconcile_unknown']} stray elements removed)"
        )
    return lines


def cmd_status(args: argparse.Namespace) -> None:
    result = request(args.sock, "status", {"jail": args.jail} if args.jail else {})

    def human(r: dict[str, Any]) -> None:
        con = console()
        h = r["health"]
        con.print(
            f"applianced up {format_duration(r['uptime'])}, backend {r['backend']}"
            + ("" if r["backend"] != "memory" else " (DRY RUN: nothing enforced)")
        )
        if h["last_error"] or h["unapplied"]:
            refused = h.get("refused_elements", 0)
            con.print(
                f"[bold red]problem:[/] {h['last_error']} ({plural(h['unapplied'], 'change')} not "
                "yet in the kernel, retrying"
                + (f"; {refused} refused by the kernel, not retried)" if refused else ")")
            )
        lines = (
            *_store_lines(h),
            *_notify_lines(r.get("notify")),
            *_cluster_lines(r.get("cluster")),
            *_decisions_lines(r.get("decisions")),
            *_silent_lines(r.get("senders")),
        )
        for line in lines:
            con.print(line, markup=False, highlight=False)
        for line in _receiver_lines(r["receiver"]):
            con.print(line)
        con.print(_jails_table(r["jails"]))
        if "bans" in r:  # status JAIL
            title, shown = f"active bans of {args.jail}", len(r["bans"])
            if shown:
                title += f": {r['bans_total']}" + (
                    f", the newest {shown} shown" if shown < r["bans_total"] else ""
                )
            bans_table(r["bans"], title)

    out(args, result, human)


def _notify_lines(n: dict[str, Any] | None) -> list[str]:
    if not n or not n["jails"]:
        return []
    trouble = f"; retrying, last error: {n['last_error']}" if n["retrying"] else ""
    return [
        f"ban mails via {n['via']}: {n['sent']} sent ({plural(n['digests'], 'digest')}), "
        f"{plural(n['backlog'], 'ban')} waiting, {n['dropped']} dropped{trouble}"
    ]


def _silent_lines(s: dict[str, Any] | None) -> list[str]:
    if not s or not s["watched"]:
        return []
    silent = s["silent"]
    head = f"senders: {s['tracked']} tracked, {s['watched']} watched (sender_silence), "
    if not silent:
        return [head + "none silent"]
    return [
        head + f"{len(silent)} SILENT (`appliancectl senders`):",
        *(
            f"  SILENT {x['sender']}: nothing since {when(x['silent_since'])} "
            f"(sender_silence {format_duration(x['sender_silence'])}); last message: "
            f"{when(x['last_seen'])}" + (f" over {x['listener']}" if x["listener"] else "")
            for x in silent
        ),
    ]


def cmd_senders(args: argparse.Namespace) -> None:
    result = request(args.sock, "senders")

    def human(r: dict[str, Any]) -> None:
        rows = r["senders"]
        other = r["other"]
        if other["senders"]:
            rows = [*rows, {**other, "sender": f"other ({plural(other['senders'], 'sender')})"}]
        if not rows:
            console().print("no sender has delivered syslog since the start, and none is watched")
            return
        table = Table()
        columns = ("sender", "transport", "listener", "messages", "parse errors", "unmatched")
        for col in (*columns, "bans led to", "last seen", "silence"):
            table.add_column(col, no_wrap=col in ("sender", "listener", "last seen", "silence"))
        for x in rows:
            table.add_row(
                x["sender"],
                x["transport"] or "-",
                x["listener"] or "-",
                str(x["messages"]),
                str(x["parse_errors"]),
                str(x["unmatched"]),
                str(x["bans"]),
                when(x["last_seen"]),
                _silence_cell(x),
            )
        console().print(table)

    out(args, result, human)


def _silence_cell(x: dict[str, Any]) -> str:
    if x["sender_silence"] is None:
        return "-"
    if x["silent_since"] is not None:
        return f"SILENT since {when(x['silent_since'])}"
    return f"watched ({format_duration(x['sender_silence'])})"


def _decisions_lines(d: dict[str, Any] | None) -> list[str]:
    limited = (d or {}).get("connections_refused", 0)
    if not d or not (d["pulls"] or d["refused"] or limited):
        return []
    lines = [
        f"decision stream: {plural(d['pulls'], 'bouncer pull')} answered, {d['refused']} "
        "refused (a missing or wrong key; `appliancectl bouncer list`)"
    ]
    if limited:
        what = plural(limited, "connection or request", "connections or requests")
        lines.append(
            f"decision stream limits: {what} refused (connections over its caps, request bodies)"
        )
    return lines


def _cluster_lines(c: dict[str, Any] | None) -> list[str]:
    if not c:
        return []
    db = "connected" if c["connected"] else f"UNREACHABLE ({c['last_error']})"
    return [
        f"cluster node {c['node']}: database {c['database']} {db}; "
        f"{plural(c['backlog'], 'change')} waiting to be pushed",
        *(
            f"  node {n['name']}: last heartbeat {format_duration(n['age'])} ago, "
            f"{plural(n['backlog'], 'change')} waiting, applianced {n['version']}"
            for n in c["nodes"]
        ),
    ]


def _receiver_lines(rc: dict[str, Any]) -> list[str]:
    return [
        f"received {plural(rc['received'], 'message')}; dropped: {rc['parse_errors']} "
        f"unparsable, {rc['frame_errors']} bad frames, {rc['oversize']} oversize, "
        f"{rc['refused_senders']} from refused senders, "
        f"{rc.get('rate_limited', 0)} over the sender rate, "
        f"{rc.get('udp_kernel_drops', 0)} by the kernel (UDP receive buffer full)",
        f"no jail could match (not parsed): {rc.get('gated_unread', 0)} of programs no "
        f"jail reads, {rc.get('gated_no_literal', 0)} without any of their jails' literals",
        f"connections: {rc.get('open_connections', 0)} open, "
        f"{rc.get('refused_connections_total', 0)} refused at max_connections, "
        f"{rc.get('refused_connections_sender', 0)} at max_connections_per_sender, "
        f"{rc.get('refused_connections_descriptors', 0)} at the descriptor budget; closed: "
        f"{rc.get('handshake_timeouts', 0)} without a TLS handshake, "
        f"{rc.get('first_frame_timeouts', 0)} without a first frame, "
        f"{rc.get('idle_timeouts', 0)} idle, "
        f"{rc.get('evicted_pending', 0)} silent ones evicted at max_connections",
    ]


def _unmatched_cell(unmatched: dict[str, int]) -> str:
    """A jail's unmatched messages: the total, then each program's ("3 (sshd 2, sshd-* 1)")."""
    total = sum(unmatched.values())
    if len(unmatched) < 2:
        return str(total)
    parts = ", ".join(f"{program} {n}" for program, n in sorted(unmatched.items()))
    return f"{total} ({parts})"


def _jails_table(jails: dict[str, dict[str, Any]]) -> Table:
    table = Table()
    for col in (
        "jail",
        "matched",
        "unmatched",
        "tracked",
        "banned",
        "blacklisted",
        "in kernel",
        "maxretry/findtime",
        "bantime",
    ):
        table.add_column(col, no_wrap=col == "jail")
    for name, j in jails.items():
        table.add_row(
            name,
            str(j["matched"]),
            _unmatched_cell(j.get("unmatched", {})),
            str(j["tracked"]),
            str(j["banned"]),
            str(j["blacklisted"]),
            str(j["kernel_elements"]),
            f"{j['maxretry']} in {format_duration(j['findtime'])}",
            format_duration(j["bantime"]),
        )
    return table


def cmd_banned(args: argparse.Namespace) -> None:
    result = request(args.sock, "banned", {"jail": args.jail} if args.jail else {})
    out(args, result, lambda r: bans_table(r, "active bans"))


def cmd_ban(args: argparse.Namespace) -> None:
    payload = {"jail": args.jail, "target": args.address}
    if args.duration is not None:
        payload["duration"] = args.duration
    if args.local:
        payload["local"] = True
    result = request(args.sock, "ban", payload)
    out(
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
    out(args, result, lambda r: [print(f"unbanned {b['address']} in {b['jail']}") for b in r])


def cmd_blacklist(args: argparse.Namespace) -> None:
    if args.action == "add":
        if not args.address:
            raise CliError("usage: appliancectl blacklist add JAIL ADDR", EXIT_USAGE)
        result = request(
            args.sock, "blacklist_add", {"jail": args.jail_or_addr, "target": args.address}
        )
        out(args, result, lambda b: print(f"blacklisted {b['address']} in {b['jail']}"))
    elif args.action == "remove":
        payload = {"target": args.jail_or_addr}
        if args.jail:
            payload["jail"] = args.jail
        result = request(args.sock, "blacklist_remove", payload)
        out(
            args,
            result,
            lambda r: [print(f"removed {b['address']} from the {b['jail']} blacklist") for b in r],
        )
    else:
        result = request(args.sock, "blacklist_list", {"jail": args.jail} if args.jail else {})
        out(args, result, lambda r: bans_table(r, "blacklist"))


def cmd_why(args: argparse.Namespace) -> None:
    result = request(args.sock, "why", {"target": args.address})

    def human(r: dict[str, Any]) -> None:
        con = console()
        con.print(f"[bold]{r['address']}[/]")
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
            con.print(
                f"  {name}: {state}; {j['failures']}/{j['maxretry']} failures in the "
                f"window; {plural(j['repeat_count'], 'ban')} within findtime_history"
            )
            for line in j["recent_lines"]:
                con.print(f"      {line}", markup=False, highlight=False)
        if r["history"]:
            con.print("  history:")
        for h in r["history"]:
            end = f"ended {when(h['ended_at'])} ({h['end_reason']})" if h["ended_at"] else "active"
            decided = f", decided by node {h['node']}" if r.get("cluster") and h["node"] else ""
            sender = f" on a line from {h['sender']}" if h.get("sender") else ""
            con.print(
                f"    {h['jail']} {h['address']} ban #{h['count']} {h['kind']} from "
                f"{when(h['started_at'])}, {end}{decided}{sender}",
                markup=False,
                highlight=False,
            )
            for line in h["lines"]:
                con.print(f"      {line}", markup=False, highlight=False)

    out(args, result, human)


def cmd_flush(args: argparse.Namespace) -> None:
    result = request(args.sock, "flush", {"jail": args.jail} if args.jail else {})
    out(args, result, lambda r: print(f"lifted {plural(len(r), 'ban')}"))


def cmd_reload(args: argparse.Namespace) -> None:
    result = request(args.sock, "reload")
    out(args, result, lambda r: print(reloaded(r)))


def reloaded(r: dict[str, Any]) -> str:
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
    if args.jail is not None and not args.preview:
        raise CliError("--jail goes with --preview: appliancectl notify test --preview --jail J",
                       EXIT_USAGE)  # fmt: skip
    if args.preview:
        preview = request(args.sock, "notify_preview", {"jail": args.jail})
        out(args, preview, _print_preview)
        return
    # The daemon answers after the whole SMTP dialogue (connect and command timeouts included).
    result = request(args.sock, "notify_test", timeout=300.0)
    out(
        args,
        result,
        lambda r: print(
            f"test mail delivered via {r['via']} to {', '.join(r['to'])}\n{r['dialogue']}"
        ),
    )


def _print_preview(p: dict[str, Any]) -> None:
    print(
        f"# preview: the mail a ban in jail {p['jail']} would send via {p['via']}, for a sample "
        f"address ({p['address']}) and a sample line; whois and DNS are not asked; NOT sent"
    )
    for name, value in p["headers"]:
        print(f"{name}: {value}")
    print()
    print(p["body"], end="")
