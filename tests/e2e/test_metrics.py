"""End to end: the real applianced (--dry-run), real logger over UDP and TCP, and a real HTTP
scrape of /metrics parsed with prometheus_client's own parser."""

from __future__ import annotations

import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from applianced import __version__
from tests.e2e.daemon import LOOPBACK, Daemon, free_port, logger, wait_for
from tests.netns import netns, netns_missing, ns_exec

pytestmark = pytest.mark.skipif(shutil.which("logger") is None, reason="util-linux logger missing")

CONFIG = (
    LOOPBACK
    + """
[defaults]
maxretry = 3

[jails.sshd]
filter = "sshd"
ports = [22]
"""
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> tuple[str, Samples]:
    """GET /metrics over real HTTP: the Content-Type and every sample."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        content_type = response.headers["Content-Type"]
        text = response.read().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return content_type, samples


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def fail(port: int, address: str, transport: str) -> None:
    extra = ("--octet-count", "--rfc5424") if transport == "tcp" else ("--rfc3164",)
    for _ in range(3):
        logger(
            port,
            f"Failed password for invalid user admin from {address} port 4242 ssh2",
            tag="sshd",
            transport=transport,
            extra=extra,
        )


def test_metrics_are_off_by_default(tmp_path: Path) -> None:
    """Without [metrics] the daemon opens no HTTP port: its only TCP listener is syslog's."""
    port = free_port()
    d = Daemon(tmp_path, CONFIG.format(port=port)).start()
    try:
        assert d.proc is not None
        assert _tcp_listeners_of(d.proc.pid) == {port}
    finally:
        d.stop()


def _tcp_listeners_of(pid: int) -> set[int]:
    """The TCP ports ``pid`` listens on, from /proc (no ss/netstat needed)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_scrape_after_bans_shows_the_counts(tmp_path: Path) -> None:
    """[metrics] enabled: failures over UDP and TCP ban, and a real HTTP scrape shows the
    received counts per transport, the failures, the bans and the latency histogram."""
    port, metrics_port = free_port(), free_port()
    config = CONFIG.format(port=port) + (
        f'\n[metrics]\nenabled = true\naddress = "127.0.0.1"\nport = {metrics_port}\n'
    )
    d = Daemon(tmp_path, config).start()
    try:
        assert d.proc is not None
        assert _tcp_listeners_of(d.proc.pid) == {port, metrics_port}
        fail(port, "203.0.113.7", "udp")
        fail(port, "2001:db8::77", "tcp")

        def two_bans() -> tuple[str, Samples] | None:
            content_type, samples = scrape(metrics_port)
            bans = sample(samples, "applianced_bans_total", jail="sshd", kind="auto")
            return (content_type, samples) if bans == 2 else None

        content_type, s = wait_for("two bans in the scrape", two_bans)
        assert content_type == CONTENT_TYPE_LATEST
        assert sample(s, "applianced_messages_received_total", transport="udp") == 3
        assert sample(s, "applianced_messages_received_total", transport="tcp") == 3
        assert sample(s, "applianced_failures_total", jail="sshd") == 6
        assert sample(s, "applianced_active_bans", jail="sshd", kind="auto") == 2
        assert sample(s, "applianced_ban_latency_seconds_count") == 2
        assert sample(s, "applianced_ban_latency_seconds_bucket", le="1.0") == 2
        assert sample(s, "applianced_enforcement_errors_total") == 0
        assert sample(s, "applianced_tracked_addresses", jail="sshd") == 0
        assert sample(s, "process_resident_memory_bytes") > 0
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/", timeout=10)
        assert info.value.code == 404
    finally:
        d.stop()


@pytest.mark.skipif(netns_missing() is not None, reason=str(netns_missing()))
def test_kernel_elements_per_set_and_build_info(tmp_path: Path) -> None:
    """On real nftables (a namespace of its own): the scrape lists the elements of each of
    our sets as the kernel holds them, and the build's version."""
    port = 5514
    config = CONFIG.format(port=port) + "\n[metrics]\nenabled = true\n"
    with netns("metrics") as ns:
        d = Daemon(tmp_path, config, args=(), prefix=("ip", "netns", "exec", ns)).start()
        try:
            for address in ("203.0.113.7", "203.0.113.8"):
                for _ in range(3):
                    logger(port, f"Failed password for root from {address} port 22 ssh2",
                           tag="sshd", prefix=("ip", "netns", "exec", ns))  # fmt: skip
            d.ctl("blacklist", "add", "sshd", "198.51.100.0/24")

            def scraped() -> Samples | None:
                text = ns_exec(ns, sys.executable, "-c", FETCH).stdout
                samples = {
                    (s.name, tuple(sorted(s.labels.items()))): s.value
                    for family in text_string_to_metric_families(text)
                    for s in family.samples
                }
                elements = sample(samples, "applianced_kernel_elements", set="sshd_v4")
                return samples if elements == 2 else None

            s = wait_for("two elements in sshd_v4", scraped)
            assert sample(s, "applianced_kernel_elements", set="sshd_bl_net_v4") == 1
            assert sample(s, "applianced_kernel_elements", set="sshd_v6") == 0
            (info,) = [k for k in s if k[0] == "applianced_build_info"]
            assert dict(info[1])["version"] == __version__
        finally:
            d.stop()


FETCH = (
    "import urllib.request; print(urllib.request.urlopen("
    "'http://127.0.0.1:9515/metrics', timeout=10).read().decode())"
)
