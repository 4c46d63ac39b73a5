"""A small whois client (RFC 3912, TCP port 43) for ban mails, with referrals and a cache.

``WhoisClient.lookup(address)`` asks the root server (IANA by default), follows its referral
(``refer:``, ARIN's ``ReferralServer: whois://...``) to the registry that holds the address,
and answers a ``WhoisAnswer``: the sanitised raw text and a summary (netname, country, abuse
contact). The whole lookup has one timeout; answers are cached per network (the
``inetnum``/``NetRange``/``CIDR``/``inet6num`` the registry names) for ``cache_for`` seconds.

The network part is one injected function, ``Query``; ``tcp_query(reactor)`` is the real one.
``notify.py`` is the only caller; it never lets a failed lookup hold back a mail.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from ipaddress import ip_address, ip_network, summarize_address_range
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from applianced.errors import ApplianceError
from applianced.rules.decision import IPAddress, IPNetwork

__all__ = [
    "MAX_ANSWER",
    "Query",
    "WhoisAnswer",
    "WhoisClient",
    "WhoisError",
    "parse_answer",
    "referral",
    "sanitise",
    "tcp_query",
]

MAX_ANSWER = 64 * 1024  # bytes kept of one server's answer; the rest is cut
_MAX_HOPS = 3  # root, registry, and one more referral (ARIN -> another RIR)
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(?::\d{1,5})?")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")

# host, port, query line (without CRLF) -> the server's whole answer
Query = Callable[[str, int, str], "Deferred[bytes]"]


class WhoisError(ApplianceError):
    """No usable whois answer; the message says why (timeout, refused, ...)."""


@dataclass(frozen=True, slots=True)
class WhoisAnswer:
    """What the registry said about an address. ``text`` is sanitised (see ``sanitise``);
    ``networks`` is the range the answer covers (the cache key)."""

    server: str
    text: str
    netname: str | None = None
    country: str | None = None
    abuse: str | None = None
    networks: tuple[IPNetwork, ...] = ()


def sanitise(text: str, max_line: int = 500) -> str:
    """Text from outside (whois answers, log lines) made safe for a mail body: control
    characters become '?', tabs spaces, lines starting with '~' (mail(1) escapes) or '.'
    (the SMTP end of data) are indented by one space, and long lines are cut."""
    out = []
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = _CONTROL.sub("?", raw.replace("\t", "    ").rstrip())
        if line.startswith(("~", ".")):
            line = " " + line
        if len(line) > max_line:
            line = line[:max_line] + " [...]"
        out.append(line)
    return "\n".join(out).strip("\n")


def referral(text: str) -> str | None:
    """The ``host[:port]`` another whois server that the answer points to, or None."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        if key == "refer" or key == "whois":
            host = value
        elif key == "referralserver" and value.lower().startswith("whois://"):
            host = value[len("whois://") :].rstrip("/")
        else:
            continue
        if _HOST.fullmatch(host):
            return host.lower()
    return None


def _field(text: str, *keys: str) -> str | None:
    wanted = {k.lower() for k in keys}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in wanted and value.strip():
            return value.strip()
    return None


def _networks(text: str) -> tuple[IPNetwork, ...]:
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        if not sep or key not in ("inetnum", "netrange", "inet6num", "cidr"):
            continue
        value = value.strip()
        try:
            if " - " in value:
                low, high = (ip_address(v.strip()) for v in value.split(" - ", 1))
                return tuple(summarize_address_range(low, high))
            return tuple(ip_network(v.strip(), strict=False) for v in value.split(","))
        except (ValueError, TypeError):
            continue
    return ()


def parse_answer(server: str, raw: str) -> WhoisAnswer:
    """Summarise one registry answer (RIPE/APNIC/AFRINIC style, ARIN style, LACNIC style)."""
    text = sanitise(raw)
    abuse = _field(text, "abuse-mailbox", "OrgAbuseEmail", "abuse-email", "e-mail")
    if abuse is None:
        found = re.search(r"Abuse contact for .*? is '([^']+)'", text)
        abuse = found[1] if found else None
    return WhoisAnswer(
        server=server,
        text=text,
        netname=_field(text, "netname", "NetName", "ownerid", "owner"),
        country=_field(text, "country", "Country"),
        abuse=abuse,
        networks=_networks(text),
    )


class WhoisClient:
    """Lookups with referral, timeout (seconds, for the whole lookup) and a per-network cache.

    ``root`` is the first server asked (``host`` or ``host:port``); ``servers`` maps a server
    name, as referrals name it, to the ``host:port`` to ask instead (a pinned or local server).
    """

    def __init__(
        self,
        clock: IReactorTime,
        query: Query,
        root: str = "whois.iana.org",
        servers: Mapping[str, str] | None = None,
        timeout: float = 15.0,
        cache_for: float = 86400.0,
        max_cache: int = 4096,
    ) -> None:
        self.clock = clock
        self.query = query
        self.root = root
        self.servers = {k.lower(): v for k, v in (servers or {}).items()}
        self.timeout = timeout
        self.cache_for = cache_for
        self.max_cache = max_cache
        self._cache: OrderedDict[IPNetwork, tuple[float, WhoisAnswer]] = OrderedDict()
        self.lookups = 0
        self.cache_hits = 0
        self.failures = 0

    def cached(self, address: IPAddress) -> WhoisAnswer | None:
        now = self.clock.seconds()
        for network, (expires, answer) in list(self._cache.items()):
            if expires <= now:
                del self._cache[network]
            elif network.version == address.version and address in network:
                return answer
        return None

    def lookup(self, address: IPAddress) -> Deferred[WhoisAnswer]:
        """The registry's answer for ``address``; fails with WhoisError (never hangs longer
        than ``timeout`` seconds)."""
        hit = self.cached(address)
        if hit is not None:
            self.cache_hits += 1
            d: Deferred[WhoisAnswer] = Deferred()
            d.callback(hit)
            return d
        self.lookups += 1
        d = self._ask(str(address), self.root, 0, ())
        d.addTimeout(self.timeout, self.clock)
        d.addCallback(self._remember, address)
        d.addErrback(self._failed)
        return d

    def _ask(self, query: str, server: str, hop: int, seen: tuple[str, ...]) -> Deferred[Any]:
        host, port = _host_port(self.servers.get(server.lower(), server))
        d = self.query(host, port, query)

        def answered(data: bytes) -> Any:
            text = data[:MAX_ANSWER].decode("utf-8", "replace")
            nxt = referral(text)
            if nxt and nxt not in (server, *seen) and hop + 1 < _MAX_HOPS:
                return self._ask(query, nxt, hop + 1, (*seen, server)).addErrback(
                    _fall_back, server, text
                )
            return parse_answer(server, text)

        return d.addCallback(answered)

    def _remember(self, answer: WhoisAnswer, address: IPAddress) -> WhoisAnswer:
        networks = answer.networks or (
            ip_network(f"{address}/{24 if address.version == 4 else 48}", strict=False),
        )
        expires = self.clock.seconds() + self.cache_for
        for network in networks[:16]:
            self._cache[network] = (expires, answer)
        while len(self._cache) > self.max_cache:
            self._cache.popitem(last=False)
        return answer

    def _failed(self, reason: Failure) -> WhoisAnswer:
        self.failures += 1
        error = reason.value
        if isinstance(error, TimeoutError | CancelledError):
            raise WhoisError(f"no answer within {self.timeout:g}s")
        if isinstance(error, WhoisError):
            raise error
        raise WhoisError(str(error) or type(error).__name__)


def _fall_back(reason: Failure, server: str, text: str) -> WhoisAnswer | Failure:
    """A referral that failed: the referring server's own answer is better than nothing, but
    a timeout must still end the lookup."""
    if isinstance(reason.value, CancelledError | TimeoutError):
        return reason
    return parse_answer(server, text)


def _host_port(target: str) -> tuple[str, int]:
    host, sep, port = target.rpartition(":")
    if sep and port.isdigit() and ":" not in host.strip("[]"):
        return host.strip("[]"), int(port)
    if sep and port.isdigit() and host.startswith("["):
        return host.strip("[]"), int(port)
    return target, 43


class _Answer(Protocol):
    """Send the query, collect the answer until the server closes (RFC 3912)."""

    def __init__(self, query: str) -> None:
        self.query = query
        self.chunks: list[bytes] = []
        self.size = 0
        self.done: Deferred[bytes] = Deferred(lambda d: self._abort())

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def connectionMade(self) -> None:
        self.transport.write(self.query.encode("ascii", "replace") + b"\r\n")  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if self.size < MAX_ANSWER:
            self.chunks.append(data)
        self.size += len(data)
        if self.size > 4 * MAX_ANSWER:
            self._abort()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.done.called:
            self.done.callback(b"".join(self.chunks))


def tcp_query(reactor: Any, connect_timeout: float = 10.0) -> Query:
    """The real ``Query``: one TCP connection per question, host names resolved by the
    reactor's resolver (in a thread), so nothing blocks."""

    def query(host: str, port: int, text: str) -> Deferred[bytes]:
        endpoint = HostnameEndpoint(reactor, host.encode("idna"), port, timeout=connect_timeout)
        protocol = _Answer(text)
        # Cancelling this cancels the connection attempt, or the wait for the answer (which
        # aborts the connection): either way nothing is left open after a timeout.
        d: Deferred[Any] = connectProtocol(endpoint, protocol)  # type: ignore[no-untyped-call]
        d.addCallback(lambda _: protocol.done)
        return d

    return query
