"""fail2ban's action lines, ports and protocols as a jail writes them: ``name[key=value, ...]``
parsed, which stock actions ban in a firewall and which mail, ``smtp,465,submission`` and
``0:65535`` as our ports, ``tcp,udp`` as ours. Called by ``conf/f2bimport.py``; pure but for the
system's services database asked for a service name fail2ban's jails do not use.
"""

from __future__ import annotations

import socket

__all__ = ["BAN_ACTIONS", "MAIL_ACTIONS", "parse_actions", "ports", "protocol"]

# The service names fail2ban's jails use, as /etc/services numbers them (tcp); any other name
# is asked of the system's services database.
_SERVICES = {
    "ssh": 22,
    "smtp": 25,
    "submission": 587,
    "submissions": 465,
    "smtps": 465,
    "urd": 465,
    "pop3": 110,
    "pop3s": 995,
    "imap": 143,
    "imap2": 143,
    "imaps": 993,
    "sieve": 4190,
    "http": 80,
    "https": 443,
    "ftp": 21,
    "ftp-data": 20,
}
# fail2ban's stock actions that ban in a firewall: their port and protocol are what our
# nftables ban closes; "-allports" ones close every port.
BAN_ACTIONS = frozenset(
    {
        "iptables",
        "iptables-multiport",
        "iptables-multiport-log",
        "iptables-allports",
        "iptables-new",
        "iptables-ipset",
        "iptables-ipset-proto4",
        "iptables-ipset-proto6",
        "iptables-ipset-proto6-allports",
        "nftables",
        "nftables-multiport",
        "nftables-allports",
        "firewallcmd-multiport",
        "firewallcmd-allports",
        "firewallcmd-new",
        "firewallcmd-ipset",
        "firewallcmd-rich-rules",
        "firewallcmd-rich-logging",
        "ufw",
        "shorewall",
        "pf",
        "bsd-ipfw",
        "ipfw",
    }
)
# fail2ban's mail actions, by our notify action that sends the same.
MAIL_ACTIONS = {
    "sendmail": "mail",
    "mail": "mail",
    "sendmail-whois": "mail-whois",
    "mail-whois": "mail-whois",
    "sendmail-whois-lines": "mail-whois-lines",
    "mail-whois-lines": "mail-whois-lines",
    "sendmail-whois-matches": "mail-whois-lines",
}


def parse_actions(text: str) -> list[tuple[str, dict[str, str]]]:
    """``name[key=value, key="v,w"] other`` -> [(name, {key: value}), (other, {})]. Options
    added in brackets right after (``name[a=1][a=2, b=3]``, what ``%(action_)s[...]`` expands
    to) are the same action's, the later winning, as in fail2ban."""
    out: list[tuple[str, dict[str, str]]] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        start = i
        while i < n and not text[i].isspace() and text[i] != "[":
            i += 1
        name = text[start:i]
        params: dict[str, str] = {}
        while i < n and text[i] == "[":
            i, more = _params(text, i + 1)
            params.update(more)
        out.append((name, params))
    return out


def _params(text: str, i: int) -> tuple[int, dict[str, str]]:
    """The ``key=value`` pairs from ``i`` to the closing ``]``, quotes kept together."""
    params: dict[str, str] = {}
    pieces: list[str] = []
    current: list[str] = []
    quote = ""
    while i < len(text):
        c = text[i]
        i += 1
        if quote:
            if c == quote:
                quote = ""
            else:
                current.append(c)
        elif c in "\"'":
            quote = c
        elif c in ",]":
            pieces.append("".join(current))
            current = []
            if c == "]":
                break
        else:
            current.append(c)
    for piece in pieces:
        key, eq, value = piece.partition("=")
        if eq:
            params[key.strip()] = value.strip()
    return i, params


def ports(text: str, notes: list[str]) -> list[str]:
    """fail2ban's ``smtp,465,submission`` or ``0:65535`` -> our ports, named ones numbered."""
    out: list[str] = []
    for item in text.replace(" ", ",").split(","):
        item = item.strip()
        if not item:
            continue
        low, colon, high = item.partition(":")
        if colon:
            if low.isdigit() and high.isdigit() and int(low) <= 1 and int(high) >= 65535:
                return ["all"]
            out.append(f"{low}-{high}")
        elif item.isdigit():
            out.append(item)
        else:
            number = _service(item)
            if number is None:
                notes.append(f"port {item}: not a known service name")
            else:
                out.append(str(number))
    return out


def _service(name: str) -> int | None:
    if name in _SERVICES:
        return _SERVICES[name]
    try:
        return socket.getservbyname(name, "tcp")
    except OSError:
        return None


def protocol(found: list[str], notes: list[str]) -> str:
    names = {p.strip().lower() for text in found for p in text.split(",") if p.strip()}
    kept = names & {"tcp", "udp"}
    for other in sorted(names - kept):
        notes.append(f"protocol {other}: only tcp and udp are banned here")
    if not kept:
        return ""
    return "both" if kept == {"tcp", "udp"} else kept.pop()
