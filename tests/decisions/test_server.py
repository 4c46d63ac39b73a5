"""The decision stream's HTTP resource: keys checked and refusals counted, the stream, the
query by ip or range, HEAD, a bad parameter; and the service's listening and bouncer list."""

from __future__ import annotations

import json
from collections.abc import Callable
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from applianced import views
from applianced.appliance import Appliance
from applianced.bouncers import KeyRing, add_bouncer, remove_bouncer
from applianced.conf.schema import DecisionsConf
from applianced.control import Dispatcher
from applianced.decisions.server import DecisionService
from applianced.metrics import make_registry
from applianced.store.sqlite import SqliteOffenderStore
from applianced.testing import MemoryEnforcer
from applianced.weblimits import MAX_CONNECTIONS, MAX_PER_ADDRESS
from tests.helpers import config

T0 = 1_800_000_000.0


@pytest.fixture
def app(tmp_path: Path) -> Appliance:
    clock = Clock()
    clock.advance(T0)
    a = Appliance(
        config(tmp_path), SqliteOffenderStore(tmp_path / "o.sqlite"), MemoryEnforcer(), clock
    )
    a.start()
    return a


def service(app: Appliance) -> DecisionService:
    keys = KeyRing(app.config.state_dir)
    return DecisionService(DecisionsConf(), app, keys, MemoryReactorClock())  # type: ignore[no-untyped-call]


def request(
    path: list[bytes], key: str | None, args: dict[str, list[str]] | None = None
) -> DummyRequest:
    r = DummyRequest(path)  # type: ignore[no-untyped-call]
    r.client = IPv4Address("TCP", "198.51.100.25", 40000)
    r.args = {k.encode(): [v.encode() for v in vs] for k, vs in (args or {}).items()}
    if key is not None:
        r.requestHeaders.addRawHeader(b"X-Api-Key", key.encode())
    r.requestHeaders.addRawHeader(b"User-Agent", b"crowdsec-firewall-bouncer/v0.0.25")
    return r


def get(s: DecisionService, r: DummyRequest) -> Any:
    return json.loads(s.resource.render_GET(r))  # type: ignore[arg-type]


def test_a_missing_or_wrong_key_is_refused_with_403_and_counted(app: Appliance) -> None:
    s = service(app)
    add_bouncer(app.config.state_dir, "mx1")
    for key in (None, "", "0" * 64):
        r = request([b"stream"], key, {"startup": ["true"]})
        assert get(s, r) == {"message": "access forbidden"}
        assert r.responseCode == 403
    head = request([], "wrong")
    assert s.resource.render_HEAD(head) == b'{"message": "access forbidden"}'  # type: ignore[arg-type]
    assert head.responseCode == 403
    other = request([b"nope"], "wrong")
    assert get(s, other) == {"message": "not found"} and other.responseCode == 404
    status = views.status(app)
    assert status["decisions"] == {"pulls": 0, "refused": 4, "connections_refused": 0}
    registry = make_registry(app)
    assert registry.get_sample_value("applianced_bouncer_refused_total") == 4
    assert registry.get_sample_value("applianced_bouncer_pulls_total") == 0


def test_refusals_are_logged_with_the_address_at_most_once_a_minute(app: Appliance) -> None:
    """A bouncer with a removed or mistyped key: the operator reads where it pulls from and
    what it is (it was only counted); a storm of them writes one line a minute."""
    s = service(app)
    add_bouncer(app.config.state_dir, "mx1")
    clock: Any = app.clock
    with capturedLogs() as events:
        for _ in range(5):
            get(s, request([b"stream"], "0" * 64))
        clock.advance(59)
        get(s, request([b"stream"], None))
        clock.advance(1)
        r = request([b"stream"], "nope")
        r.requestHeaders.setRawHeaders(b"User-Agent", [b"evil\x1b[2J"])  # controls escaped
        get(s, r)
    lines = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
    assert lines == [
        "decision stream: refused a request from 198.51.100.25 "
        "(crowdsec-firewall-bouncer/v0.0.25): its X-Api-Key is missing or not a registered "
        "bouncer's (1 refused since start; this line at most once a minute); "
        "`appliancectl bouncer list` shows the registered ones, `bouncer add NAME` makes a key",
        "decision stream: refused a request from 198.51.100.25 "
        "(evil\\x1b[2J): its X-Api-Key is missing or not a registered "
        "bouncer's (7 refused since start; this line at most once a minute); "
        "`appliancectl bouncer list` shows the registered ones, `bouncer add NAME` makes a key",
    ]


def test_an_unreadable_keys_file_is_logged_once_a_minute_as_an_error(app: Appliance) -> None:
    """Every bouncer is refused while the file is broken: one error line a minute says why
    (it was one line a pull, beside the refusal's)."""
    s = service(app)
    (app.config.state_dir / "bouncers.json").write_text("{not json")
    with capturedLogs() as events:
        for _ in range(3):
            get(s, request([b"stream"], "0" * 64))
    lines = [(e["log_level"], formatEvent(e)) for e in events]
    assert len(lines) == 1 and lines[0][0] == LogLevel.error
    assert "bouncers.json is not a bouncer keys file; move it away" in lines[0][1]
    assert app.health.bouncer_refused == 3


def test_the_stream_and_the_query_for_a_registered_bouncer(app: Appliance) -> None:
    s = service(app)
    key = add_bouncer(app.config.state_dir, "mx1")
    app.ban("sshd", ip_network("198.51.100.0/24"), 60)
    first = get(s, request([b"stream"], key, {"startup": ["true"], "scopes": ["ip,range"]}))
    assert [d["value"] for d in first["new"]] == ["198.51.100.0/24"]
    assert first["deleted"] is None
    assert get(s, request([b"stream"], key)) == {"new": None, "deleted": None}

    found = get(s, request([], key, {"ip": ["198.51.100.7"]}))
    assert [(d["scope"], d["value"], d["duration"]) for d in found] == [
        ("Range", "198.51.100.0/24", "1m0s")
    ]
    assert get(s, request([], key, {"ip": ["192.0.2.1"]})) is None
    bad = request([], key, {"range": ["nope"]})
    assert get(s, bad) == {"message": "range='nope' is not an address or a range"}
    assert bad.responseCode == 400
    head = request([b"stream"], key)
    assert s.resource.render_HEAD(head) == b""  # type: ignore[arg-type]
    assert head.responseCode is None  # left at 200
    assert views.status(app)["decisions"] == {"pulls": 4, "refused": 0, "connections_refused": 0}


def test_bouncer_list_shows_the_last_pull_and_forgets_removed_bouncers(app: Appliance) -> None:
    s = service(app)
    key = add_bouncer(app.config.state_dir, "mx1")
    add_bouncer(app.config.state_dir, "mx2")
    get(s, request([b"stream"], key, {"startup": ["true"]}))
    listed = Dispatcher(app, bouncers=s.bouncers).handle({"verb": "bouncers"})
    assert listed == {
        "ok": True,
        "result": [
            {
                "name": "mx1",
                "last_pull": T0,
                "address": "198.51.100.25",
                "version": "crowdsec-firewall-bouncer/v0.0.25",
            },
            {"name": "mx2", "last_pull": None, "address": None, "version": None},
        ],
    }
    remove_bouncer(app.config.state_dir, "mx1")
    revoked = request([b"stream"], key)  # the next pull, without a reload: refused
    assert get(s, revoked) == {"message": "access forbidden"} and revoked.responseCode == 403
    assert [b["name"] for b in s.bouncers()] == ["mx2"]
    assert Dispatcher(app).handle({"verb": "bouncers"}) == {"ok": True, "result": None}


def test_the_service_listens_on_the_configured_address(app: Appliance) -> None:
    reactor = MemoryReactorClock()  # type: ignore[no-untyped-call]
    conf = DecisionsConf("::1", 8443)
    s = DecisionService(conf, app, KeyRing(app.config.state_dir), reactor)
    s.startService()
    [(port, _, _, interface)] = reactor.tcpServers
    assert (port, interface) == (8443, "::1")
    s.stopService()
    assert s.port is None


def test_a_full_answer_is_built_by_in_thread_and_written_when_ready(app: Appliance) -> None:
    """A startup pull builds its (large) answer where ``in_thread`` says (the daemon: a worker
    thread), and the request is answered when it is ready; a delta stays inline."""
    built: list[Deferred[bytes]] = []

    def in_thread(fn: Callable[[], bytes]) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        d.addCallback(lambda _: fn())
        built.append(d)
        return d

    keys = KeyRing(app.config.state_dir)
    s = DecisionService(DecisionsConf(), app, keys, MemoryReactorClock(), in_thread)  # type: ignore[no-untyped-call]
    key = add_bouncer(app.config.state_dir, "mx1")
    app.ban("sshd", ip_network("192.0.2.1/32"), 60)
    r = request([b"stream"], key, {"startup": ["true"]})
    assert s.resource.render_GET(r) == NOT_DONE_YET  # type: ignore[arg-type]
    assert r.written == [] and len(built) == 1
    built[0].callback(None)
    [body] = r.written
    assert [d["value"] for d in json.loads(body)["new"]] == ["192.0.2.1"]
    assert r.finished
    assert get(s, request([b"stream"], key)) == {"new": None, "deleted": None}
    assert len(built) == 1
    # GET /v1/decisions without ip or range is every ban too: built there as well (it was
    # built on the reactor, about 1.5 s at 100,000 bans); with ip, inline.
    every = request([], key)
    assert s.resource.render_GET(every) == NOT_DONE_YET  # type: ignore[arg-type]
    assert len(built) == 2
    built[1].callback(None)
    assert [d["value"] for d in json.loads(every.written[0])] == ["192.0.2.1"]
    assert [d["value"] for d in get(s, request([], key, {"ip": ["192.0.2.1"]}))] == ["192.0.2.1"]
    assert len(built) == 2


def connect(factory: Any, host: str) -> tuple[Any, StringTransport]:
    """A connection from ``host`` to ``factory``, over a StringTransport."""
    peer = IPv4Address("TCP", host, 40000)
    protocol = factory.buildProtocol(peer)
    transport = StringTransport(peerAddress=peer)
    if protocol is not None:
        protocol.makeConnection(transport)
    return protocol, transport


def test_a_request_body_is_refused_with_413_before_it_is_stored(app: Appliance) -> None:
    """Bouncers send no body: a long or chunked one is refused at its headers, unread and
    unrendered (twisted.web spooled 300 MB from a client without a key to a temporary file);
    a request without a body is answered as before."""
    s = service(app)
    key = add_bouncer(app.config.state_dir, "mx1")
    head = f"GET /v1/decisions/stream?startup=true HTTP/1.1\r\nHost: a\r\nX-Api-Key: {key}\r\n"
    for framing in (f"Content-Length: {300 << 20}\r\n\r\n", "Transfer-Encoding: chunked\r\n\r\n"):
        protocol, transport = connect(s.factory(), "198.51.100.25")
        protocol.dataReceived((head + framing).encode() + b"A" * 65536)
        assert transport.value().startswith(b"HTTP/1.1 413 Content Too Large\r\n")
        assert b"refused above 4096 bytes" in transport.value()
        assert transport.disconnecting
    assert app.health.bouncer_pulls == 0
    assert app.health.bouncer_connections_refused == 2
    protocol, transport = connect(s.factory(), "198.51.100.25")
    protocol.dataReceived((head + "Content-Length: 0\r\n\r\n").encode())
    assert transport.value().startswith(b"HTTP/1.1 200 OK\r\n")
    assert app.health.bouncer_pulls == 1


def test_connections_past_the_caps_are_closed_at_once(app: Appliance) -> None:
    """At most MAX_PER_ADDRESS connections from one address and MAX_CONNECTIONS in all: a
    flood of idle ones (no key needed to open them) cannot take every descriptor."""
    factory = service(app).factory()
    held = [connect(factory, "198.51.100.25")[0] for _ in range(MAX_PER_ADDRESS)]
    assert factory.buildProtocol(IPv4Address("TCP", "198.51.100.25", 1)) is None
    held[0].connectionLost(Failure(ConnectionDone()))
    held[0] = connect(factory, "198.51.100.25")[0]
    assert held[0] is not None
    others = [
        connect(factory, f"203.0.113.{i // MAX_PER_ADDRESS}")[0]
        for i in range(MAX_CONNECTIONS - MAX_PER_ADDRESS)
    ]
    assert None not in others
    assert factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 1)) is None
    registry = make_registry(app, process=False)
    assert registry.get_sample_value("applianced_bouncer_connections_refused_total") == 2
    for p in held:
        p.connectionLost(Failure(ConnectionDone()))
    assert connect(factory, "192.0.2.1")[0] is not None


def test_unknown_keys_keep_no_state(app: Appliance) -> None:
    """A thousand distinct wrong keys are counted and leave nothing behind: no last pull, no
    place in the change log (memory does not grow with an attacker's keys)."""
    s = service(app)
    add_bouncer(app.config.state_dir, "mx1")
    with capturedLogs():
        for i in range(1000):
            get(s, request([b"stream"], f"{i:064x}", {"startup": ["true"]}))
    assert app.health.bouncer_refused == 1000
    assert s.seen == {} and s.stream._places == {}
