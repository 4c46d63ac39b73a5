"""The enforcement batcher: one apply per batch, a refused batch kept and retried with backoff."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import ip_network

from twisted.internet.task import Clock

from applianced.enforcement.base import ElementsRefused, JailRules, Refused
from applianced.enforcement.batcher import RETRY_MAX, Batcher
from applianced.errors import EnforcementError
from applianced.health import Health
from applianced.rules.decision import Ban, BanKind
from applianced.testing import MemoryEnforcer


class Refusing(MemoryEnforcer):
    """Refuses whole batches while ``down``; records every batch it was sent."""

    def __init__(self) -> None:
        super().__init__()
        self.setup([JailRules("sshd", ("22",), "tcp", "input", "drop")])
        self.down = False
        self.sent: list[tuple[list[str], list[str]]] = []

    def apply(self, bans: Sequence[Ban], unbans: Sequence[Ban], now: float) -> None:
        self.sent.append(([str(b.network) for b in bans], [str(u.network) for u in unbans]))
        if self.down:
            raise EnforcementError("netlink: Operation not permitted")
        super().apply(bans, unbans, now)


def ban(address: str) -> Ban:
    return Ban("sshd", ip_network(address), 0.0, 100.0, BanKind.AUTO, 1)


def test_a_refused_batch_is_retried_with_doubling_delays_up_to_a_minute() -> None:
    clock, health, enforcer = Clock(), Health(), Refusing()
    batcher = Batcher(enforcer, clock, health, lambda b: True)
    enforcer.down = True
    assert not batcher.send([ban("192.0.2.1")], [])
    assert (health.enforcement_errors, health.unapplied) == (1, 1)
    tries = []
    for _ in range(8):
        clock.advance(clock.getDelayedCalls()[0].getTime() - clock.seconds())
        tries.append(clock.seconds())
    assert [b - a for a, b in zip([0.0, *tries], tries, strict=False)] == [
        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, RETRY_MAX, RETRY_MAX
    ]  # fmt: skip
    enforcer.down = False
    clock.advance(RETRY_MAX)
    assert list(enforcer.bans) == [("sshd", ip_network("192.0.2.1/32"))]
    assert health.unapplied == 0 and not clock.getDelayedCalls()
    enforcer.down = True
    batcher.send([ban("192.0.2.2")], [])
    assert clock.getDelayedCalls()[0].getTime() == clock.seconds() + 1.0  # backoff starts again


def test_a_retry_sends_what_is_still_wanted_and_the_last_word_per_network() -> None:
    clock, health, enforcer = Clock(), Health(), Refusing()
    lifted = ban("192.0.2.9")
    batcher = Batcher(enforcer, clock, health, lambda b: b != lifted)
    enforcer.down = True
    batcher.send([ban("192.0.2.1"), ban("192.0.2.2"), lifted], [])
    batcher.send([], [ban("192.0.2.2")])  # unbanned before its ban was applied
    assert health.unapplied == 3
    enforcer.down = False
    clock.advance(1.0)
    assert enforcer.sent[-1] == (["192.0.2.1/32"], ["192.0.2.2/32"])


def test_a_batch_does_not_unban_what_it_bans_again() -> None:
    clock, enforcer = Clock(), Refusing()
    batcher = Batcher(enforcer, clock, Health(), lambda b: True)
    assert batcher.send([ban("192.0.2.1")], [ban("192.0.2.1"), ban("192.0.2.2")])
    assert enforcer.sent == [(["192.0.2.1/32"], ["192.0.2.2/32"])]


def test_elements_refused_alone_are_counted_and_not_retried() -> None:
    class RefusesOne(Refusing):
        def apply(self, bans: Sequence[Ban], unbans: Sequence[Ban], now: float) -> None:
            super().apply(bans, unbans, now)
            raise ElementsRefused([Refused("sshd", "10.0.0.0/24", "Error: value too large")])

    clock, health = Clock(), Health()
    batcher = Batcher(RefusesOne(), clock, health, lambda b: True)
    assert batcher.send([ban("10.0.0.0/24")], [])
    assert health.refused_elements == 1 and "10.0.0.0/24" in (health.last_error or "")
    assert not clock.getDelayedCalls()


def test_a_refused_restore_is_kept_for_retry() -> None:
    clock, health, enforcer = Clock(), Health(), Refusing()
    batcher = Batcher(enforcer, clock, health, lambda b: True)
    enforcer.down = True
    active = batcher.restore(lambda: [ban("192.0.2.7")], lambda: [], 0.0)
    assert active == [ban("192.0.2.7")] and health.unapplied == 1
    enforcer.down = False
    clock.advance(1.0)
    assert list(enforcer.bans) == [("sshd", ip_network("192.0.2.7/32"))]
