"""Cluster mode end to end: two real daemons, each in its own network namespace with its own
nftables table, sharing one real PostgreSQL server (a private cluster on a UNIX socket, which
reaches into both namespaces as a file). Failures are sent with the real logger to each
daemon's own listener; what each kernel drops is read with nft. The daemons and the database
are shared by the tests of this module, which use distinct addresses (RFC 5737); the
share_failures test starts a pair of its own on the same database."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest

from applianced.banlines import BANS_PER_SECOND
from applianced.cli.client import request
from tests.e2e.daemon import BIN, LOOPBACK_UDP, Daemon, sasl_failures, wait_for
from tests.netns import netns, netns_missing, ns_exec, ns_python
from tests.pg import PASSWORD, PgServer, pg_missing, pg_server

pytestmark = pytest.mark.skipif(
    bool(netns_missing() or pg_missing()), reason=str(netns_missing() or pg_missing())
)

PORT = 5514
CONFIG = (
    LOOPBACK_UDP
    + """
[defaults]
bantime = "1h"
maxretry = 2
max_count = 3
protocol = "tcp"

[jails.postfix-sasl]
filter = "postfix-sasl"
ports = [25]

[decisions]
address = "127.0.0.1"
port = 8080

[state]
backend = "postgresql"
dsn = "{dsn}"
password_file = "{password_file}"
node = "{node}"
"""
)
SET = "postfix_sasl_v4"
# A bouncer's pull of the decision stream on 127.0.0.1:8080 in a node's namespace.
PULL = """
import sys, urllib.request
req = urllib.request.Request("http://127.0.0.1:8080/v1/decisions/stream?startup=" + sys.argv[2])
req.add_header("X-Api-Key", sys.argv[1])
print(urllib.request.urlopen(req, timeout=10).read().decode())
"""


@dataclass
class Node:
    name: str
    ns: str
    daemon: Daemon

    def fail(self, address: str, n: int = 2) -> None:
        sasl_failures(PORT, address, n, self.ns)

    def kernel(self, set_name: str = SET) -> dict[str, float | None]:
        """The addresses in one of our sets, with their expiry in seconds (None: no timeout)."""
        out = ns_exec(self.ns, "nft", "-j", "list", "set", "inet", "applianced", set_name).stdout
        found: dict[str, float | None] = {}
        for item in json.loads(out)["nftables"]:
            for elem in item.get("set", {}).get("elem", []):
                if isinstance(elem, dict):
                    found[str(elem["elem"]["val"])] = elem["elem"].get("expires")
                else:
                    found[str(elem)] = None
        return found

    def ctl(self, *args: str) -> object:
        return self.daemon.ctl(*args)

    def pull(self, key: str, startup: bool) -> dict[str, Any]:
        """One pull of this node's decision stream, as a bouncer does."""
        out = ns_python(self.ns, PULL, key, "true" if startup else "false").stdout
        found: dict[str, Any] = json.loads(out)
        return found

    def bouncer_key(self, name: str) -> str:
        config = str(self.daemon.config)
        added = subprocess.run(
            [str(BIN / "appliancectl"), "--config", config, "bouncer", "add", name, "--json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        key: str = json.loads(added.stdout)["api_key"]
        return key


@dataclass
class Cluster:
    pg: PgServer
    a: Node
    b: Node


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with pg_server() as pg, netns("cl-a") as ns_a, netns("cl-b") as ns_b:
        nodes = []
        try:
            for name, ns in (("alpha", ns_a), ("beta", ns_b)):
                text = CONFIG.format(
                    port=PORT, dsn=pg.dsn, password_file=pg.password_file, node=name
                )
                work = tmp_path_factory.mktemp(name)
                daemon = Daemon(work, text, args=(), prefix=("ip", "netns", "exec", ns))
                nodes.append(Node(name, ns, daemon))
            start_all(nodes)
            yield Cluster(pg, *nodes)
        finally:
            for node in nodes:
                node.daemon.stop()
        for node in nodes:
            assert PASSWORD not in node.daemon.output, f"the password is in {node.name}'s log"


def start_all(nodes: list[Node]) -> None:
    """Start the daemons at once (each start waits for its control socket)."""
    with ThreadPoolExecutor(len(nodes)) as pool:
        list(pool.map(lambda n: n.daemon.start(), nodes))


def pushed_once(pg: PgServer, address: str) -> bool:
    """One ban of ``address`` in the cluster log, announced by one event."""
    rows = pg.query(
        "SELECT count(DISTINCT uid), count(*) FROM bans JOIN events USING (uid)"
        " WHERE network = %s AND op = 'ban'",
        f"{address}/32",
    )
    return rows == [(1, 1)]


def heartbeats(node: Node) -> set[str]:
    status: dict[str, Any] = node.ctl("status")  # type: ignore[assignment]
    return {n["name"] for n in status["cluster"]["nodes"] if n["age"] < 30}


def wait_kernel(node: Node, address: str, present: bool = True, timeout: float = 10.0) -> float:
    """Poll ``node``'s kernel set until ``address`` is (or is not) in it; seconds waited."""
    start = time.monotonic()
    wait_for(
        f"{address} {'in' if present else 'out of'} {node.name}'s kernel set",
        lambda: (address in node.kernel()) == present,
        timeout=timeout,
    )
    return time.monotonic() - start


def test_ban_on_a_is_in_b_kernel_within_a_second_and_unban_on_b_lifts_a(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    address = "198.51.100.10"
    a.fail(address)
    wait_kernel(a, address, timeout=10)
    assert wait_kernel(b, address, timeout=1.0) < 1.0
    expiry_a, expiry_b = a.kernel()[address], b.kernel()[address]
    assert expiry_a is not None and expiry_b is not None
    assert expiry_b == pytest.approx(expiry_a, abs=2), "B must keep A's expiry"
    why = b.ctl("why", address)
    (ban,) = why["history"]  # type: ignore[index]
    assert (ban["node"], ban["sender"]) == ("alpha", "127.0.0.1")

    b.ctl("unban", address)
    wait_kernel(b, address, present=False, timeout=1.0)
    wait_kernel(a, address, present=False, timeout=2.0)
    assert address not in {x["address"].split("/")[0] for x in a.ctl("banned")}  # type: ignore[attr-defined]

    status = a.ctl("status")["cluster"]  # type: ignore[index]
    assert status["connected"] and status["backlog"] == 0
    wait_for("both nodes' heartbeats", lambda: heartbeats(b) >= {"alpha", "beta"})
    rc, out, _ = b.daemon.ctl_rc("status")
    assert rc == 0 and "node alpha: last heartbeat" in out and "cluster node beta" in out


def test_every_node_serves_the_clusters_bans_to_bouncers(cluster: Cluster) -> None:
    """A ban decided on A reaches a bouncer pulling B's decision stream, under the id A's
    stream gives it; its unban on A reaches it as a deletion."""
    a, b = cluster.a, cluster.b
    address = "198.51.100.70"
    key_a, key_b = a.bouncer_key("mx-a"), b.bouncer_key("mx-b")
    assert address not in {d["value"] for d in b.pull(key_b, startup=True)["new"] or ()}
    a.fail(address)
    wait_kernel(b, address, timeout=10)
    [on_b] = b.pull(key_b, startup=False)["new"]
    assert (on_b["value"], on_b["scenario"], on_b["origin"]) == (
        address,
        "postfix-sasl",
        "applianced",
    )
    [on_a] = [d for d in a.pull(key_a, startup=True)["new"] if d["value"] == address]
    assert on_a["id"] == on_b["id"]
    a.ctl("unban", address)
    wait_kernel(b, address, present=False, timeout=10)
    assert [d["value"] for d in b.pull(key_b, startup=False)["deleted"]] == [address]


def test_local_ban_and_unban_stay_on_their_appliance(cluster: Cluster) -> None:
    """The outbox is pushed in order: when the shared ban that follows reaches B, a local
    one would have too."""
    a, b = cluster.a, cluster.b
    local, shared = "198.51.100.50", "198.51.100.51"
    a.ctl("ban", "postfix-sasl", local, "--local")
    a.ctl("ban", "postfix-sasl", shared)
    wait_kernel(b, shared)
    assert local not in b.kernel() and local in a.kernel()
    b.ctl("unban", shared, "--local")
    a.ctl("ban", "postfix-sasl", "198.51.100.52")
    wait_kernel(b, "198.51.100.52")
    assert shared in a.kernel() and shared not in b.kernel()


def test_third_ban_on_b_after_two_on_a_blacklists(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    address = "198.51.100.20"
    for _ in range(2):
        a.fail(address)
        wait_kernel(b, address)
        a.ctl("unban", address)
        wait_kernel(b, address, present=False)
    b.fail(address)
    wait_for("the blacklist entry on A", lambda: address in a.kernel("postfix_sasl_bl_v4"))
    (ban,) = [x for x in b.ctl("banned") if x["address"] == f"{address}/32"]  # type: ignore[attr-defined]
    assert (ban["kind"], ban["count"], ban["expires_at"]) == ("blacklist", 3, None)


def test_database_down_a_bans_restarts_from_its_store_and_b_gets_the_ban(
    cluster: Cluster,
) -> None:
    a, b = cluster.a, cluster.b
    address = "198.51.100.30"
    cluster.pg.stop()
    try:
        a.fail(address)
        wait_kernel(a, address)
        a.daemon.kill()  # and it starts again while the database is still down
        a.daemon.start()
        assert address in a.kernel()
        status = wait_for(
            "A to see the database down",
            lambda: (s := a.ctl("status")["cluster"]) and not s["connected"] and s,  # type: ignore[index]
        )
        assert status["backlog"] == 1 and status["last_error"]
        assert "unreachable" in a.daemon.output
    finally:
        cluster.pg.start()
    wait_kernel(b, address, timeout=15)
    wait_for("A's backlog to drain", lambda: a.ctl("status")["cluster"]["backlog"] == 0)  # type: ignore[index]
    assert pushed_once(cluster.pg, address)


def test_sigkill_loses_nothing_and_doubles_nothing(cluster: Cluster) -> None:
    """Both appliances killed right after A decided a ban (pushed or not, received or not):
    after a restart both enforce it, and the cluster log holds it once."""
    a, b = cluster.a, cluster.b
    address = "198.51.100.40"
    a.fail(address)
    wait_for("the ban on A", lambda: f"{address}/32" in a.daemon.banned())
    a.daemon.kill()
    b.daemon.kill()
    start_all([a, b])
    wait_kernel(a, address)
    wait_kernel(b, address)
    assert pushed_once(cluster.pg, address)
    assert [x["count"] for x in b.ctl("banned") if x["address"] == f"{address}/32"] == [1]  # type: ignore[attr-defined]


def connected(node: Node) -> bool:
    status: dict[str, Any] = node.ctl("status")  # type: ignore[assignment]
    return bool(status["cluster"]["connected"])


def test_shared_failures_two_on_a_and_one_on_b_ban_everywhere(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """share_failures with maxretry 3: B counts A's two failures in its own window, so its one
    failure is the third; B bans, and the ban reaches A like any other."""
    address = "198.51.100.60"
    config = CONFIG.replace("maxretry = 2", "maxretry = 3") + "share_failures = true\n"
    with ExitStack() as stack:
        nodes = []
        for name in ("gamma", "delta"):
            ns = stack.enter_context(netns(f"cl-{name[0]}"))
            text = config.format(
                port=PORT, dsn=cluster.pg.dsn, password_file=cluster.pg.password_file, node=name
            )
            daemon = Daemon(tmp_path_factory.mktemp(name), text, args=(),
                            prefix=("ip", "netns", "exec", ns))  # fmt: skip
            stack.callback(daemon.stop)
            nodes.append(Node(name, ns, daemon))
        start_all(nodes)
        a, b = nodes
        # Connected means each listener has taken its failure cursor (the flaky run: B said
        # connected before it had, and A's failures pushed in between were never read).
        wait_for("both connected", lambda: all(connected(n) for n in nodes))
        a.fail(address, 2)
        wait_for(
            "A's two failures in B's window",
            lambda: b.ctl("why", address)["jails"]["postfix-sasl"]["failures"] == 2,  # type: ignore[index]
        )
        assert address not in a.kernel() and address not in b.kernel()  # 2 < maxretry
        b.fail(address, 1)
        wait_kernel(b, address)
        wait_kernel(a, address)
        (ban,) = a.ctl("why", address)["history"]  # type: ignore[index]
        assert ban["node"] == "delta"
        # A counts its push as shared once its thread hands the commit back: wait for it.
        shared = wait_for(
            "A's two failures counted as shared",
            lambda: (f := a.ctl("status")["cluster"]["failures"])["shared"] == 2 and f,  # type: ignore[index]
        )
        assert shared["dropped"] == 0
        assert b.ctl("status")["cluster"]["failures"]["received"] == 2  # type: ignore[index]


def test_an_outage_is_logged_once_in_our_format(cluster: Cluster) -> None:
    """The database stopped while A bans: A's log says once that it is unreachable and once
    that it is back, in our format; the driver's own lines (psycopg's) never bypass it."""
    a = cluster.a
    before = len(a.daemon.output)
    cluster.pg.stop()
    try:
        wait_for("A to see the database down", lambda: not connected(a))
        a.ctl("ban", "postfix-sasl", "198.51.100.80")  # its push is retried during the outage
        wait_for("A's heartbeat 3 s old", lambda: a.ctl("status")["cluster"]["heartbeat_age"] > 3)  # type: ignore[index]
    finally:
        cluster.pg.start()
    wait_for("A's backlog pushed", lambda: a.ctl("status")["cluster"]["backlog"] == 0)  # type: ignore[index]
    outage = a.daemon.output[before:].splitlines()
    assert [x for x in outage if not re.match(r"\d{4}-\d\d-\d\dT[\d:]+[+-]\d{4} \[", x)] == []
    assert sum("unreachable" in x for x in outage) == 1, outage
    assert sum("cluster: connected" in x for x in outage) == 1, outage


def test_a_cluster_flush_logs_within_the_budget_on_the_other_node(cluster: Cluster) -> None:
    """A's flush lifts every ban on B too; B's unban lines share the ban lines' budget."""
    a, b = cluster.a, cluster.b
    many = [f"203.0.113.{i}" for i in range(1, 3 * BANS_PER_SECOND + 1)]
    for address in many:
        request(a.daemon.socket, "ban", {"jail": "postfix-sasl", "target": address})
    wait_for("B to hold A's bans", lambda: set(many) <= set(b.kernel()))
    before = len(b.daemon.output)
    request(a.daemon.socket, "flush", {})
    wait_for("B's sets empty", lambda: not set(many) & set(b.kernel()))
    wait_for(
        "B's summary line", lambda: "more unbans in the last second" in b.daemon.output[before:]
    )
    unbans = [x for x in b.daemon.output[before:].splitlines() if "] unban " in x]
    assert len(unbans) <= 2 * BANS_PER_SECOND, unbans  # a second boundary may split them
