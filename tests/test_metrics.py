"""Metrics: the collector's samples read from a running Appliance (task.Clock, in-memory
enforcer), the latency histogram, the HTTP resource, the [metrics] config and its wiring."""

from __future__ import annotations

import platform
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from email.message import EmailMessage
from ipaddress import ip_network
from pathlib import Path

import pytest
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from applianced import __version__, views
from applianced.appliance import Appliance
from applianced.conf.load import parse_config
from applianced.conf.schema import Config, ListenerConf, MetricsConf, NotifyConf
from applianced.enforcement.mailer import DeliveryError, Mailer
from applianced.enforcement.notify import Notifier
from applianced.errors import ConfigError, EnforcementError
from applianced.kernelelements import LISTING_MAX_AGE, KernelElements
from applianced.latency import BAN_LATENCY_BUCKETS, LatencyHistogram
from applianced.metrics import MetricsResource, MetricsService, make_registry
from applianced.receiver.streams import SyslogTCPFactory
from applianced.receiver.udp import SyslogUDP
from applianced.rules.decision import Ban
from applianced.service import make_service
from applianced.store.sqlite import SqliteOffenderStore
from applianced.testing import MemoryEnforcer
from applianced.weblimits import MAX_PER_ADDRESS
from tests.helpers import config, jail_conf, message, ssh_failure

T0 = 1_800_000_000.0
LOOPBACK = (ip_network("127.0.0.0/8"),)


class SlowEnforcer(MemoryEnforcer):
    """Each kernel batch takes ``delay`` seconds of the test clock (a real one takes time)."""

    def __init__(self, clock: Clock, delay: float) -> None:
        super().__init__()
        self.clock = clock
        self.delay = delay
        self.refuse = False

    def apply(self, bans: Sequence[Ban], unbans: Sequence[Ban], now: float) -> None:
        self.clock.advance(self.delay)
        if self.refuse:
            raise EnforcementError("netlink: Operation not permitted")
        super().apply(bans, unbans, now)


class StuckMailer:
    """A smarthost that never answers: every ban stays in the notifier's backlog."""

    description = "stuck"

    def send(self, message: EmailMessage, sender: str, recipients: Sequence[str]) -> Deferred[str]:
        return Deferred()


class ScriptedMailer:
    """A smarthost answering each mail in turn: "ok", "retry" (4xx) or "refuse" (5xx)."""

    description = "scripted"

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)

    def send(self, message: EmailMessage, sender: str, recipients: Sequence[str]) -> Deferred[str]:
        answer = self.answers.pop(0)
        if answer == "ok":
            return succeed("250 queued")
        return fail(DeliveryError(f"{answer}d", permanent=answer == "refuse"))


def start(
    tmp_path: Path,
    conf: Config | None = None,
    delay: float = 0.0,
    notify: bool = False,
    mailer: Mailer | None = None,
) -> tuple[Appliance, Clock, SlowEnforcer]:
    clock = Clock()
    clock.advance(T0)
    enforcer = SlowEnforcer(clock, delay)
    conf = conf or config(tmp_path)
    notifier = None
    if notify:
        conf = replace(
            config(tmp_path, jail_conf(notify=("mail",))),
            notify=NotifyConf(to=("admin@example.org",)),
        )
        notifier = Notifier(conf, clock, lambda c: mailer or StuckMailer())
    store = SqliteOffenderStore(tmp_path / "offenders.sqlite")
    app = Appliance(conf, store, enforcer, clock, notifier=notifier)
    app.start()
    return app, clock, enforcer


def attack(app: Appliance, clock: Clock, address: str, times: int = 3) -> None:
    for _ in range(times):
        app.receive(message(ssh_failure(address), at=clock.seconds()))
    clock.advance(0)


def scrape(app: Appliance) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, through the text format and prometheus_client's parser."""
    text = generate_latest(make_registry(app, process=False)).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
          ) -> float:  # fmt: skip
    return samples[(name, tuple(sorted(labels.items())))]


def test_ban_counts_show_per_jail_and_kind(tmp_path: Path) -> None:
    """Failures, bans and active bans per jail and kind, tracked addresses, after real bans."""
    app, clock, _ = start(tmp_path)
    attack(app, clock, "203.0.113.7")
    attack(app, clock, "203.0.113.8", times=2)
    views.ban(app, "sshd", "198.51.100.0/24")
    views.ban(app, "sshd", "198.51.100.200", permanent=True)
    s = scrape(app)
    assert value(s, "applianced_failures_total", jail="sshd") == 5
    assert value(s, "applianced_bans_total", jail="sshd", kind="auto") == 1
    assert value(s, "applianced_bans_total", jail="sshd", kind="manual") == 1
    assert value(s, "applianced_bans_total", jail="sshd", kind="blacklist") == 1
    assert value(s, "applianced_active_bans", jail="sshd", kind="auto") == 1
    assert value(s, "applianced_active_bans", jail="sshd", kind="blacklist") == 1
    assert value(s, "applianced_tracked_addresses", jail="sshd") == 1  # .8, still counting
    assert value(s, "applianced_evictions_total", jail="sshd") == 0
    assert value(s, "applianced_enforcement_errors_total") == 0
    assert value(s, "applianced_notify_backlog") == 0


def test_active_bans_drop_when_bans_expire_and_counters_do_not(tmp_path: Path) -> None:
    """active_bans is the state now; bans_total only grows."""
    app, clock, _ = start(tmp_path)
    attack(app, clock, "203.0.113.7")
    clock.advance(101)  # bantime is 100 s
    s = scrape(app)
    assert value(s, "applianced_active_bans", jail="sshd", kind="auto") == 0
    assert value(s, "applianced_bans_total", jail="sshd", kind="auto") == 1
    assert value(s, "applianced_expired_bans_total") == 1


def test_evictions_per_jail(tmp_path: Path) -> None:
    """Tracking past max_tracked evicts the oldest address, and the metric counts it."""
    app, clock, _ = start(tmp_path, config(tmp_path, jail_conf(max_tracked=2)))
    for i in range(5):
        attack(app, clock, f"203.0.113.{i}", times=1)
    s = scrape(app)
    assert value(s, "applianced_tracked_addresses", jail="sshd") == 2
    assert value(s, "applianced_evictions_total", jail="sshd") == 3


def test_messages_per_transport_parse_errors_and_refused_senders(tmp_path: Path) -> None:
    """The listeners' counters, split per transport, reach the scrape."""
    app, clock, _ = start(tmp_path)
    stats = app.receiver_stats
    udp_conf = ListenerConf("udp", "127.0.0.1", 0, LOOPBACK, 8192)
    udp = SyslogUDP(udp_conf, app.receive, stats, clock)
    line = b"<38>Nov 22 10:00:01 mx sshd[1]: " + ssh_failure("203.0.113.9").encode()
    for _ in range(3):
        udp.datagramReceived(line, ("127.0.0.1", 40000))
    udp.datagramReceived(b"<999>junk", ("127.0.0.1", 40000))
    udp.datagramReceived(line, ("192.0.2.1", 40000))
    tcp = SyslogTCPFactory(replace(udp_conf, transport="tcp"), app.receive, stats, clock)
    stream = tcp.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40001))
    assert stream is not None
    stream.dataReceived(line + b"\n" + line + b"\n")
    clock.advance(0)
    s = scrape(app)
    assert value(s, "applianced_messages_received_total", transport="udp") == 3
    assert value(s, "applianced_messages_received_total", transport="tcp") == 2
    assert value(s, "applianced_parse_errors_total") == 1
    assert value(s, "applianced_refused_senders_total") == 1
    assert value(s, "applianced_bans_total", jail="sshd", kind="auto") == 1


def test_ban_latency_is_receipt_to_kernel_one_sample_per_ban(tmp_path: Path) -> None:
    """A 3 ms kernel batch puts each ban of the batch in the 5 ms bucket, not the 2.5 ms one;
    manual bans (no deciding message) are not samples."""
    app, clock, _ = start(tmp_path, delay=0.003)
    for i in range(4):
        for _ in range(3):
            app.receive(message(ssh_failure(f"203.0.113.{i}"), at=clock.seconds()))
    clock.advance(0)
    views.ban(app, "sshd", "198.51.100.1")
    s = scrape(app)
    assert value(s, "applianced_ban_latency_seconds_count") == 4
    assert value(s, "applianced_ban_latency_seconds_sum") == pytest.approx(4 * 0.003, abs=1e-6)
    assert value(s, "applianced_ban_latency_seconds_bucket", le="0.0025") == 0
    assert value(s, "applianced_ban_latency_seconds_bucket", le="0.005") == 4
    assert value(s, "applianced_ban_latency_seconds_bucket", le="+Inf") == 4


def test_a_refused_kernel_batch_counts_an_error_and_no_latency(tmp_path: Path) -> None:
    """nftables transaction failures = health.enforcement_errors; an unenforced ban has no
    latency to report."""
    app, clock, enforcer = start(tmp_path)
    enforcer.refuse = True
    attack(app, clock, "203.0.113.7")
    s = scrape(app)
    assert value(s, "applianced_enforcement_errors_total") == 1
    assert value(s, "applianced_ban_latency_seconds_count") == 0
    assert value(s, "applianced_bans_total", jail="sshd", kind="auto") == 1


def test_notify_backlog_counts_bans_waiting_for_mail(tmp_path: Path) -> None:
    """Bans whose mail the smarthost has not yet taken are the backlog."""
    app, clock, _ = start(tmp_path, notify=True)
    attack(app, clock, "203.0.113.7")
    attack(app, clock, "203.0.113.8")
    assert value(scrape(app), "applianced_notify_backlog") == 2


def test_mails_sent_and_failed_are_counted(tmp_path: Path) -> None:
    """A delivered mail counts as sent; a temporary failure (retried) and a refusal (dropped)
    count apart."""
    app, clock, _ = start(tmp_path, notify=True, mailer=ScriptedMailer("ok", "retry", "refuse"))
    attack(app, clock, "203.0.113.7")
    attack(app, clock, "203.0.113.8")
    clock.advance(0)
    samples = scrape(app)
    assert value(samples, "applianced_mails_sent_total") == 1
    assert value(samples, "applianced_mails_failed_total", outcome="retried") == 1
    clock.advance(NotifyConf().retry_first)  # the retry is refused: dropped, counted
    samples = scrape(app)
    assert value(samples, "applianced_mails_failed_total", outcome="refused") == 1
    assert value(samples, "applianced_mails_sent_total") == 1


def test_build_info_names_the_version_and_python(tmp_path: Path) -> None:
    app, _, _ = start(tmp_path)
    info = value(
        scrape(app),
        "applianced_build_info",
        version=__version__,
        python=platform.python_version(),
    )
    assert info == 1


class Sets(MemoryEnforcer):
    """A backend with kernel sets: ``set_counts`` answers what the test says."""

    def __init__(self, counts: dict[str, int]) -> None:
        super().__init__()
        self.answer = counts

    def set_counts(self) -> dict[str, int]:
        if not self.answer:
            raise EnforcementError("netlink: Operation not permitted")
        return self.answer


def test_kernel_elements_per_set_are_read_before_each_scrape(tmp_path: Path) -> None:
    """The resource waits for the listing (in a thread in the daemon) and then answers with
    one sample per set and the listing's age; a failed listing is a 500 that says why."""
    app, _, _ = start(tmp_path)
    enforcer = Sets({"sshd_v4": 2, "sshd_bl_v4": 1})
    listings: list[Deferred[tuple[dict[str, int], float]]] = []
    clock = Clock()
    kernel = KernelElements(enforcer, clock, lambda f: listings.append(Deferred()) or listings[-1])
    resource = MetricsResource(make_registry(app, process=False, kernel=kernel), kernel.refresh)
    request = DummyRequest([b""])
    assert resource.render_GET(request) == NOT_DONE_YET  # type: ignore[arg-type]
    assert not request.finished
    clock.advance(2)
    listings[0].callback((enforcer.set_counts(), 0.001))
    text = b"".join(request.written).decode()
    assert 'applianced_kernel_elements{set="sshd_v4"} 2.0' in text
    assert 'applianced_kernel_elements{set="sshd_bl_v4"} 1.0' in text
    assert "applianced_kernel_elements_age_seconds 0.0" in text
    clock.advance(1)  # older than 50 times 1 ms: listed again, and this one fails
    enforcer.answer = {}
    kernel.in_thread = maybeDeferred
    request = DummyRequest([b""])
    resource = MetricsResource(make_registry(app, kernel=kernel), kernel.refresh)
    resource.render_GET(request)  # type: ignore[arg-type]
    assert request.responseCode == 500
    assert b"cannot read the kernel's sets: netlink: Operation not permitted" in b"".join(
        request.written
    )


def test_a_costly_listing_is_reused_and_shared_by_the_scrapes_meanwhile() -> None:
    """A listing that cost 0.9 s of CPU (100,000 elements) serves the scrapes of the next 45 s
    (2% of a core), scrapes during a listing wait for that one, and none is older than
    LISTING_MAX_AGE; a cheap one is listed again at each scrape."""
    clock = Clock()
    listings: list[Deferred[tuple[dict[str, int], float]]] = []
    kernel = KernelElements(
        Sets({"a": 1}), clock, lambda f: listings.append(Deferred()) or listings[-1]
    )
    first, second = kernel.refresh(), kernel.refresh()
    assert len(listings) == 1 and not first.called
    listings[0].callback(({"a": 100_000}, 0.9))
    assert first.called and second.called and kernel.counts == {"a": 100_000}
    clock.advance(44.9)
    assert kernel.refresh().called and len(listings) == 1
    clock.advance(0.1)
    assert not kernel.refresh().called and len(listings) == 2
    listings[1].callback(({"a": 5}, 10.0))  # a million elements: capped
    clock.advance(LISTING_MAX_AGE)
    kernel.refresh()
    assert len(listings) == 3
    listings[2].callback(({"a": 5}, 0.0001))
    clock.advance(0.01)
    kernel.refresh()
    assert len(listings) == 4


def test_latency_buckets_include_their_bound_and_clamp_negatives() -> None:
    """le means <=; a clock stepped backwards counts as 0, not as a negative latency."""
    h = LatencyHistogram()
    for seconds in (0.0001, 0.00011, -1.0, 5.0):
        h.observe(seconds)
    buckets = dict(h.cumulative())
    assert buckets[0.0001] == 2  # 0.0001 itself and the clamped -1
    assert buckets[0.00025] == 3
    assert buckets[1.0] == 3 and buckets[float("inf")] == 4
    assert h.count == 4 and h.sum == pytest.approx(5.00021)
    assert len(buckets) == len(BAN_LATENCY_BUCKETS) + 1


def test_registry_is_private_and_names_follow_conventions(tmp_path: Path) -> None:
    """Our families live in their own registry (not the global one), counters end in _total,
    and the process collector adds memory and CPU."""
    app, _, _ = start(tmp_path)
    registry = make_registry(app)
    names = {f.name for f in text_string_to_metric_families(generate_latest(registry).decode())}
    assert {
        "applianced_messages_received",
        "applianced_ban_latency_seconds",
        "applianced_active_bans",
        "process_resident_memory_bytes",
    } <= names
    global_text = generate_latest(REGISTRY).decode()
    assert "applianced_" not in global_text
    counters = {
        s.name
        for f in text_string_to_metric_families(generate_latest(registry).decode())
        if f.type == "counter" and f.name.startswith("applianced_")
        for s in f.samples
    }
    assert counters and all(n.endswith("_total") for n in counters)


def test_resource_serves_the_text_format_with_its_content_type(tmp_path: Path) -> None:
    """GET /metrics answers with CONTENT_TYPE_LATEST and the scrape."""
    app, clock, _ = start(tmp_path)
    attack(app, clock, "203.0.113.7")
    request = DummyRequest([b""])
    body = MetricsResource(make_registry(app)).render_GET(request)  # type: ignore[arg-type]
    content_type = request.responseHeaders.getRawHeaders(b"Content-Type")
    assert content_type == [CONTENT_TYPE_LATEST.encode()]
    assert b'applianced_bans_total{jail="sshd",kind="auto"} 1.0' in body


def test_service_listens_on_the_configured_address_only(tmp_path: Path) -> None:
    """MetricsService binds [metrics] address:port and releases it at stop."""
    reactor = MemoryReactorClock()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    service = MetricsService(MetricsConf(True, "127.0.0.1", 9515), registry, reactor)
    service.startService()
    [(port, factory, _, interface)] = reactor.tcpServers
    assert (port, interface) == (9515, "127.0.0.1")
    root = factory.wrappedFactory.resource  # type: ignore[attr-defined]
    assert isinstance(root.getStaticEntity(b"metrics"), MetricsResource)
    service.stopService()
    assert service.port is None


def test_the_endpoint_refuses_a_body_and_caps_connections() -> None:
    """As the decision stream (weblimits.py): a request body is refused with 413 before it is
    read (twisted.web spooled any size to a temporary file), and one address holds at most
    MAX_PER_ADDRESS connections."""
    reactor = MemoryReactorClock()  # type: ignore[no-untyped-call]
    service = MetricsService(MetricsConf(True, "127.0.0.1", 9515), CollectorRegistry(), reactor)
    service.startService()
    [(_, factory, _, _)] = reactor.tcpServers
    peer = IPv4Address("TCP", "127.0.0.1", 40000)
    held = []
    for _ in range(MAX_PER_ADDRESS):
        protocol = factory.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        protocol.makeConnection(transport)
        held.append(transport)
    assert factory.buildProtocol(peer) is None
    protocol.dataReceived(b"GET /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999\r\n\r\n")
    assert held[-1].value().startswith(b"HTTP/1.1 413 Content Too Large\r\n")
    assert held[-1].disconnecting


def _service_names(tmp_path: Path, conf: Config) -> list[str]:
    reactor = MemoryReactorClock()  # type: ignore[no-untyped-call]
    top, app = make_service(conf, reactor, MemoryEnforcer())
    try:
        return [type(s).__name__ for s in top]
    finally:
        app.store.close()


def test_make_service_adds_metrics_last_only_when_enabled(tmp_path: Path) -> None:
    """Off by default: no listener; on: a MetricsService after the control socket (and before
    systemd's side, which stops first)."""
    conf = config(tmp_path)
    assert "MetricsService" not in _service_names(tmp_path, conf)
    on = replace(conf, metrics=MetricsConf(enabled=True))
    names = _service_names(tmp_path, on)
    assert names[-3:] == ["UNIXServer", "MetricsService", "SystemdService"]


CONFIG = """\
[[listeners]]
port = 5514

[jails.sshd]
filter = "sshd"
"""


def test_metrics_config_defaults_to_off_on_loopback(tmp_path: Path) -> None:
    """No [metrics] section: disabled, 127.0.0.1:9515."""
    conf = parse_config(CONFIG, tmp_path / "appliance.toml")
    assert conf.metrics == MetricsConf(enabled=False, address="127.0.0.1", port=9515)
    conf = parse_config(
        CONFIG + '[metrics]\nenabled = true\naddress = "::1"\nport = 9100\n',
        tmp_path / "appliance.toml",
    )
    assert conf.metrics == MetricsConf(enabled=True, address="::1", port=9100)


@pytest.mark.parametrize(
    ("body", "key", "line", "says"),
    [
        ("enabeld = true\n", "metrics.enabeld", 7, "unknown key 'enabeld'"),
        ('enabled = "yes"\n', "metrics.enabled", 7, "true or false"),
        ('address = "localhost"\n', "metrics.address", 7, "not an IP address"),
        ("port = 0\n", "metrics.port", 7, "between 1 and 65535"),
    ],
)
def test_bad_metrics_config_names_key_and_line(
    tmp_path: Path, body: str, key: str, line: int, says: str
) -> None:
    """[metrics] errors name the file, the line and the key, like every other section."""
    with pytest.raises(ConfigError) as info:
        parse_config(CONFIG + "[metrics]\n" + body, tmp_path / "appliance.toml")
    e = info.value
    assert (e.key, e.line) == (key, line)
    assert says in str(e) and "appliance.toml:7" in str(e)


def test_the_daemon_imports_prometheus_and_twisted_web_only_for_metrics() -> None:
    """A tenth of a second of every start: imported by make_service when [metrics] is on."""
    code = (
        "import sys, applianced.service; "
        "print([m for m in ('prometheus_client', 'twisted.web.server') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_store_and_the_kernel_drifting_apart_shows_in_the_metrics(tmp_path: Path) -> None:
    """Issue 20: rows waiting for a store that refuses writes, and a reconcile's repair."""
    app, clock, enforcer = start(tmp_path)
    conn = app.store._conn  # type: ignore[attr-defined]
    conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
    for i in range(30):
        attack(app, clock, f"203.0.113.{i}")
    s = scrape(app)
    assert value(s, "applianced_store_pending") > 0
    assert value(s, "applianced_store_errors_total") >= 1
    conn.execute("PRAGMA max_page_count = 1000000")
    enforcer.bans.clear()
    clock.advance(60)
    s = scrape(app)
    assert value(s, "applianced_store_pending") == 0
    assert value(s, "applianced_reconcile_repairs_total") == 1
    assert value(s, "applianced_reconcile_missing_total") == 30
    assert value(s, "applianced_recovered_bans_total") == 0


def test_unmatched_messages_per_jail_and_program(tmp_path: Path) -> None:
    """A message a jail reads and finds no failure in is counted under the jail and the
    program as its programs name it; failures are not."""
    app, clock, _ = start(tmp_path)
    app.receive(message("Accepted publickey for alice", at=clock.seconds()))
    app.receive(message("Connection closed by 203.0.113.7", at=clock.seconds()))
    attack(app, clock, "203.0.113.8", times=1)
    s = scrape(app)
    assert value(s, "applianced_unmatched_messages_total", jail="sshd", program="sshd") == 2
    assert value(s, "applianced_failures_total", jail="sshd") == 1
