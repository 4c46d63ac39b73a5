"""Cluster mode across a link that goes silent: PostgreSQL runs in a network namespace of its
own, on TCP with TLS (``sslmode=verify-full``, set up as the README says), and one real daemon
in another reaches it through a switch (a bridge in a third namespace); the test takes the
database's port of the switch down (``ip link set ... down``) for a bounded time: the
appliance's own link stays up, no reset and no error come back, its packets just vanish.
What must hold: the cut is detected within seconds, ``status`` says how old the last heartbeat
is, bans made meanwhile reach the database at once when the link returns, the log says so once
in our format, and SIGTERM during a cut returns at once."""

from __future__ import annotations

import functools
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.daemon import BIN, Daemon, wait_for
from tests.e2e.test_cluster import CONFIG, PORT
from tests.netns import netns, netns_missing, ns_exec
from tests.pg import PgServer, pg_missing, pg_server

pytestmark = pytest.mark.skipif(
    bool(netns_missing() or pg_missing()), reason=str(netns_missing() or pg_missing())
)

CUT = 10.0  # seconds the link stays down
DETECTED_WITHIN = 10.0  # keepalives and tcp_user_timeout: a few seconds, and slack for load
CAUGHT_UP_WITHIN = 5.0  # from the link's return to a ban made during the cut in the database
STOPPED_WITHIN = 5.0  # SIGTERM during a cut (the unit's TimeoutStopSec is 30 s)
DB, NODE = "192.0.2.1", "192.0.2.2"
LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} \[[^\]]+#\w+\] ")


@dataclass
class Site:
    switch: str
    db: str
    node: str
    pg: PgServer

    def link(self, state: str) -> None:
        """The database's port of the switch down or up (then waits until it carries)."""
        ns_exec(self.switch, "ip", "link", "set", "port-db", state)
        if state == "up":
            wait_for("the database's link up", functools.partial(_carries, self.db))

    def stored(self, address: str) -> bool:
        return bool(self.pg.query("SELECT 1 FROM bans WHERE network = %s", f"{address}/32"))


def _carries(ns: str) -> bool:
    return "LOWER_UP" in ns_exec(ns, "ip", "-o", "link", "show", "eth0").stdout


@contextmanager
def switched() -> Iterator[tuple[str, str, str]]:
    """A switch (a bridge) and two namespaces on it, the database's and the appliance's, each
    with ``eth0`` addressed and up; all three deleted on exit."""
    with netns("cut-sw") as switch, netns("cut-db") as db, netns("cut-n") as node:
        ns_exec(switch, "ip", "link", "add", "br0", "type", "bridge")
        ns_exec(switch, "ip", "link", "set", "br0", "up")
        for ns, port, address in ((db, "port-db", DB), (node, "port-node", NODE)):
            ns_exec(switch, "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0",
                    "netns", ns)  # fmt: skip
            ns_exec(switch, "ip", "link", "set", port, "master", "br0", "up")
            ns_exec(ns, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
            ns_exec(ns, "ip", "link", "set", "eth0", "up")
        for ns in (db, node):
            wait_for(f"eth0 up in {ns}", functools.partial(_carries, ns))
        yield switch, db, node


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with switched() as (switch, db, node), pg_server(netns=db, tcp=DB) as pg:
        yield Site(switch, db, node, pg)


def node(site: Site, work: Any, name: str) -> Daemon:
    text = CONFIG.format(port=PORT, dsn=site.pg.tcp_dsn, password_file=site.pg.password_file,
                         node=name)  # fmt: skip
    return Daemon(work, text, args=(), prefix=("ip", "netns", "exec", site.node))


def cluster(daemon: Daemon) -> dict[str, Any]:
    status: dict[str, Any] = daemon.ctl("status")["cluster"]
    return status


def test_check_connect_over_tls_needs_the_ca_in_the_dsn(site: Site, tmp_path: Path) -> None:
    """The README's DSN (verify-full with sslrootcert=) passes `check --connect` from the
    appliance's namespace; without sslrootcert= libpq looks for ~/.postgresql/root.crt, and
    check says the TLS step failed and what to set; a name that does not resolve (no resolver
    is reachable from the namespace: nothing leaves it) is the DNS step."""
    results = {}
    unknown = site.pg.tcp_dsn.replace(f"host={DB}", "host=db.example.invalid")
    for name, dsn in (("with", site.pg.tcp_dsn),
                      ("without", site.pg.tcp_dsn.split(" sslrootcert=")[0]),
                      ("unknown", unknown)):  # fmt: skip
        config = tmp_path / f"{name}.toml"
        config.write_text(CONFIG.format(port=PORT, dsn=dsn, node="alpha",
                                        password_file=site.pg.password_file))  # fmt: skip
        results[name] = ns_exec(site.node, str(BIN / "appliancectl"), "check",
                                "--connect", "--config", str(config), check=False)  # fmt: skip
    ok, bad = results["with"], results["without"]
    assert ok.returncode == 0 and f"applianced@{DB}:5432" in ok.stdout
    assert f"{DB}:5432/applianced: connected; " in ok.stdout
    assert bad.returncode == 3 and ": TLS failed: " in bad.stderr and "sslrootcert" in bad.stderr
    dns = results["unknown"]
    assert dns.returncode == 3 and "db.example.invalid:5432/applianced: DNS failed: " in dns.stderr


def test_a_cut_is_detected_shown_and_caught_up_at_once(
    site: Site, tmp_path_factory: pytest.TempPathFactory
) -> None:
    a = node(site, tmp_path_factory.mktemp("cut"), "alpha").start()
    try:
        wait_for("alpha connected over TLS", lambda: cluster(a)["connected"])
        a.ctl("ban", "postfix-sasl", "198.51.100.70")
        wait_for("the ban in the database", lambda: site.stored("198.51.100.70"))
        before = len(a.output)

        site.link("down")
        cut = time.monotonic()
        try:
            wait_for("alpha to see the cut", lambda: not cluster(a)["connected"], timeout=30)
            detected = time.monotonic() - cut
            a.ctl("ban", "postfix-sasl", "198.51.100.71")
            status = wait_for(
                "the heartbeat's age to grow past the cut's length",
                lambda: (s := cluster(a))["heartbeat_age"] >= CUT and s,
                timeout=CUT + 10,
            )
            assert status["backlog"] == 1 and not status["connected"]
            rc, text, _ = a.ctl_rc("status")
            ago = re.search(r"node alpha: last heartbeat (\d+)s ago", text)
            assert rc == 0 and ago and int(ago[1]) >= CUT, text
        finally:
            site.link("up")
        back = time.monotonic()
        wait_for("the cut's ban in the database", lambda: site.stored("198.51.100.71"), 30)
        caught_up = time.monotonic() - back
        wait_for("alpha connected again", lambda: cluster(a)["connected"])
        print(f"cut detected after {detected:.1f} s, caught up {caught_up:.1f} s after the link")
        assert detected < DETECTED_WITHIN
        assert caught_up < CAUGHT_UP_WITHIN
        assert cluster(a)["backlog"] == 0

        outage = a.output[before:].splitlines()
        assert [x for x in outage if not LINE.match(x)] == [], "a line not in our format"
        assert sum("unreachable" in x for x in outage) == 1, outage
        assert sum("cluster: connected" in x for x in outage) == 1, outage
    finally:
        a.stop()


def test_sigterm_during_a_cut_returns_at_once(
    site: Site, tmp_path_factory: pytest.TempPathFactory
) -> None:
    a = node(site, tmp_path_factory.mktemp("stop"), "beta").start()
    assert a.proc is not None
    try:
        wait_for("beta connected", lambda: cluster(a)["connected"])
        site.link("down")
        a.ctl("ban", "postfix-sasl", "198.51.100.72")  # its push now hangs on the dead path
        wait_for("the push under way", lambda: cluster(a)["backlog"] == 1)
        start = time.monotonic()
        a.proc.send_signal(signal.SIGTERM)
        try:
            a.proc.wait(timeout=STOPPED_WITHIN + 20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"SIGTERM during a cut still running after {STOPPED_WITHIN + 20} s")
        stopped = time.monotonic() - start
        print(f"stopped {stopped:.1f} s after SIGTERM")
        assert stopped < STOPPED_WITHIN and a.proc.returncode == 0
    finally:
        site.link("up")
        if a.proc.poll() is None:
            a.kill()
