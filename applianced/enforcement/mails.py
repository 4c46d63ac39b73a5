"""Ban mails built: one ban's mail (whois, reverse DNS, the lines behind it), a storm's digest,
the test mail, the preview of a ban's mail from sample data (``appliancectl notify test
--preview``), a watched syslog sender's silence and its return.

Pure: the stdlib ``email`` package over text that is sanitised first; the
``Notifier`` (``notify.py``) sends what this builds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from ipaddress import ip_network

from applianced.conf.schema import NotifyAction, NotifyConf
from applianced.enforcement.base import Silence
from applianced.enforcement.whois import WhoisAnswer, sanitise
from applianced.rules.decision import Ban, BanKind
from applianced.units import format_duration, plural

_RAW_WHOIS_LINES = 200  # lines of the raw whois answer kept in a mail
# The preview's sample offender (RFC 5737, documentation) and its syslog sender.
SAMPLE_NETWORK = ip_network("203.0.113.7/32")
_SAMPLE_LINE = "[192.0.2.10] mx smtpd[4242]: (preview: the lines that matched 203.0.113.7 go here)"


@dataclass(frozen=True, slots=True)
class Pending:
    """A ban waiting for its mail, with its lines and the jail's notify actions."""

    ban: Ban
    lines: tuple[str, ...]
    actions: tuple[NotifyAction, ...]


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st..."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _address(ban: Ban) -> str:
    net = ban.network
    return str(net.network_address) if net.num_addresses == 1 else str(net)


def _when(ts: float | None) -> str:
    if ts is None:
        return "never (permanent: the jail's blacklist)"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(ban: Ban) -> str:
    if ban.expires_at is None:
        return "permanent"
    return format_duration(ban.expires_at - ban.started_at)


def _envelope(conf: NotifyConf, subject: str, now: float) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = subject.replace("\r", " ").replace("\n", " ")
    msg["From"] = conf.sender
    msg["To"] = ", ".join(conf.to)
    msg["Date"] = format_datetime(datetime.fromtimestamp(now, UTC))
    msg["Message-ID"] = make_msgid("applianced", domain=conf.sender.rpartition("@")[2])
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Auto-Response-Suppress"] = "All"
    return msg


def build_ban_mail(
    conf: NotifyConf,
    ban: Ban,
    lines: Sequence[str],
    actions: Sequence[NotifyAction],
    whois: WhoisAnswer | str | None,
    reverse_dns: str | None,
    now: float,
) -> EmailMessage:
    """One ban's mail: ``whois`` is an answer, a reason it is unavailable, or None (the jail
    did not ask for whois)."""
    address = _address(ban)
    duration = _duration(ban)
    msg = _envelope(
        conf,
        f"[applianced] {ban.jail}: banned {address} ({ordinal(ban.count)} ban, {duration})",
        now,
    )
    body = [
        f"applianced banned {address} in jail {ban.jail}.",
        "",
        f"Jail:         {ban.jail}",
        f"Address:      {ban.network}",
    ]
    if conf.reverse_dns:
        body.append(f"Reverse DNS:  {sanitise(reverse_dns or 'none found')}")
    body += [
        f"Kind:         {ban.kind}",
        f"Banned at:    {_when(ban.started_at)}",
        f"Duration:     {duration}",
        f"Expires:      {_when(ban.expires_at)}",
        f"Repeat count: this is the {ordinal(ban.count)} ban of {ban.network} in {ban.jail}",
    ]
    if isinstance(whois, WhoisAnswer):
        body += [
            "",
            f"Whois ({whois.server}):",
            f"  netname:  {whois.netname or '-'}",
            f"  country:  {whois.country or '-'}",
            f"  abuse:    {whois.abuse or '-'}",
        ]
    elif isinstance(whois, str):
        body += ["", f"Whois: {sanitise(whois)}"]
    if "mail-whois-lines" in actions:
        shown = list(lines)[-conf.max_lines :] if conf.max_lines else []
        body += ["", f"Matched lines ({len(shown)} of {len(lines)}, [sender] first):"]
        body += ["  " + sanitise(line) for line in shown] or ["  (none kept)"]
    if isinstance(whois, WhoisAnswer) and whois.text:
        raw = whois.text.splitlines()
        body += ["", f"Raw whois answer from {whois.server}:", ""]
        body += ["  " + line for line in raw[:_RAW_WHOIS_LINES]]
        if len(raw) > _RAW_WHOIS_LINES:
            body.append(f"  [... {len(raw) - _RAW_WHOIS_LINES} more lines cut]")
    body += ["", "-- ", "applianced; `appliancectl why ADDR` tells more, `unban ADDR` lifts it."]
    msg.set_content("\n".join(body) + "\n", charset="utf-8")
    return msg


def build_digest(
    conf: NotifyConf, entries: Sequence[Pending], dropped: int, now: float
) -> EmailMessage:
    """One mail listing every ban of a storm, one line each."""
    jails = sorted({p.ban.jail for p in entries})
    msg = _envelope(
        conf,
        f"[applianced] digest: {plural(len(entries), 'ban')} in {', '.join(jails) or 'no jail'}",
        now,
    )
    body = [
        f"More than {plural(conf.max_per_minute, 'ban')} a minute: {plural(len(entries), 'ban')} "
        "reported together instead of one mail each.",
        "",
    ]
    if dropped:
        body += [
            f"{plural(dropped, 'more ban was', 'more bans were')} not reported at all: the "
            "notification backlog "
            f"({conf.backlog}) was full. `appliancectl banned` lists every active ban.",
            "",
        ]
    body.append(f"{'banned at (UTC)':<20} {'jail':<24} {'address':<43} {'ban #':>5}  duration")
    for p in entries:
        b = p.ban
        at = datetime.fromtimestamp(b.started_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        body.append(f"{at:<20} {b.jail:<24} {_address(b):<43} {b.count:>5}  {_duration(b)}")
    body += ["", "-- ", "applianced; `appliancectl why ADDR` shows the lines behind each ban."]
    msg.set_content("\n".join(body) + "\n", charset="utf-8")
    return msg


def build_test_mail(conf: NotifyConf, via: str, now: float) -> EmailMessage:
    msg = _envelope(conf, "[applianced] test mail", now)
    msg.set_content(
        f"This is a test from `appliancectl notify test`, sent at {_when(now)} via {via}.\n"
        "Ban mails will look like this one's headers: Auto-Submitted: auto-generated.\n",
        charset="utf-8",
    )
    return msg


def build_preview(
    conf: NotifyConf,
    jail: str,
    actions: Sequence[NotifyAction],
    bantime: float,
    now: float,
) -> EmailMessage:
    """The mail a first ban in ``jail`` would send, built from sample data that says so: a
    documentation address, a sample line, no whois or DNS asked."""
    ban = Ban(jail, SAMPLE_NETWORK, now, now + bantime, BanKind.AUTO, 1)
    whois: str | None = None
    if "mail-whois" in actions or "mail-whois-lines" in actions:
        whois = (
            f"(preview: the answer of {conf.whois_server} for the address goes here; none asked)"
            if conf.whois_server
            else "whois unavailable: disabled (whois_server is empty)"
        )
    reverse = "(preview: the address's PTR name goes here)" if conf.reverse_dns else None
    return build_ban_mail(conf, ban, (_SAMPLE_LINE,), actions, whois, reverse, now)


def build_silence_mail(conf: NotifyConf, silence: Silence, now: float) -> EmailMessage:
    """A watched sender has sent nothing for its ``sender_silence``: which, since when, what
    it means, what to check."""
    quiet = format_duration(now - silence.since)
    msg = _envelope(conf, f"[applianced] syslog sender {silence.sender} silent for {quiet}", now)
    if silence.last_seen is None:
        heard = f"nothing since applianced began to watch it at {_when(silence.since)}"
    else:
        heard = f"its last message at {_when(silence.last_seen)} over {silence.listener}"
    body = [
        f"applianced has received no syslog from {silence.sender} for {quiet}: {heard}.",
        f"Its sender_silence is {format_duration(silence.silence)}.",
        "",
        "What it means: whatever that server logs now is not read here. Attacks on it are",
        "not counted and nobody is banned for them until it sends again. A quiet night on a",
        "small server can look the same; a mail server usually logs every few minutes.",
        "",
        "What to check:",
        f"  - on {silence.sender}: the syslog daemon runs (rsyslog, syslog-ng) and forwards",
        "    to this appliance's address and port, over the transport of its listener;",
        "  - the network and firewalls between them (UDP is lost without a word);",
        "  - here: `appliancectl senders` lists what each sender sent and when last,",
        "    `appliancectl status` the listeners' refused and parse-error counts.",
        "",
        "Another mail follows when it sends again; none is sent again for this silence.",
        "",
        "-- ",
        "applianced; sender_silence in [receiver] or [[listeners]] sets the watch.",
    ]
    msg.set_content("\n".join(body) + "\n", charset="utf-8")
    return msg


def build_return_mail(conf: NotifyConf, silence: Silence, now: float) -> EmailMessage:
    """A silent sender sent again."""
    quiet = format_duration(now - silence.since)
    msg = _envelope(conf, f"[applianced] syslog sender {silence.sender} is back", now)
    body = [
        f"applianced receives syslog from {silence.sender} again: a message at {_when(now)}",
        f"over {silence.listener}, after {quiet} of silence (since {_when(silence.since)}).",
        "",
        "What was logged there during the silence was not read here; bans resume with its",
        "messages from now on. If the silence was not planned, its logs of that time show",
        "what was missed.",
        "",
        "-- ",
        "applianced; `appliancectl senders` lists each sender's figures.",
    ]
    msg.set_content("\n".join(body) + "\n", charset="utf-8")
    return msg
