"""The Enforcer interface: the few operations every firewall backend offers.

Bans decided in one reactor turn reach a backend as one ``apply`` call, which a backend must
carry out as one transaction. The durable store, not the backend, is the source of truth: the
Appliance calls ``restore`` at start with every active ban (``restore_rows``, straight from the
store's rows, for a backend that is a ``RowRestorer``), and the backend makes its state equal to
that list (restoring what is missing, removing what the store does not know); before that, the
start reads the backend's ``elements`` and adopts those the store lacks (``recovery.py``), and
the periodic reconcile (``reconcile.py``) reads ``counts`` and ``elements`` to find a drift. A
backend that refuses some elements of a batch applies the rest and raises ``ElementsRefused``
naming them.
``BanNotifier`` is the ban mails' interface, which the Appliance tells of each new ban (and
``silence.SilenceWatch`` of a watched syslog sender's ``Silence`` and return).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol, runtime_checkable

from applianced.conf.schema import Config, JailConf
from applianced.errors import EnforcementError
from applianced.rules.decision import Ban

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

__all__ = [
    "BanNotifier",
    "Element",
    "ElementsRefused",
    "Enforcer",
    "JailRules",
    "Refused",
    "Restored",
    "RowRestorer",
    "Silence",
]


@dataclass(frozen=True, slots=True)
class JailRules:
    """What a backend needs to know of a jail to guard its ports.

    ``ports`` are ``"25"`` or ranges ``"1000-2000"``; ``("all",)`` guards every port (and
    every protocol, whatever ``protocol`` says).
    """

    name: str
    ports: tuple[str, ...]
    protocol: Literal["tcp", "udp", "both"]
    hook: Literal["input", "forward"] = "input"
    verdict: Literal["drop", "reject"] = "drop"

    @classmethod
    def of(cls, conf: JailConf) -> JailRules:
        return cls(conf.name, conf.ports, conf.protocol, conf.hook, conf.verdict)


@runtime_checkable
class Enforcer(Protocol):
    """A firewall backend. Every method may raise EnforcementError; none blocks for long."""

    name: str

    def setup(self, jails: Sequence[JailRules]) -> None:
        """Build (or rebuild) what the backend owns for these jails, atomically. Bans of
        jails that remain are kept; those of jails no longer listed go with them."""

    def apply(self, bans: Sequence[Ban], unbans: Sequence[Ban], now: float) -> None:
        """Add ``bans`` (each for its remaining time at ``now``) and remove ``unbans``, as one
        transaction. Removing a ban that is not there is not an error."""

    def restore(self, active: Sequence[Ban], now: float) -> None:
        """Make the backend hold exactly ``active``, with their remaining times at ``now``."""

    def elements(self, now: float) -> list[Element]:
        """Every element the backend holds at ``now``, read back from it (an element placed by
        an earlier process included, an expired one not). Slow like ``counts`` (a kernel
        listing), and like it called from a worker thread or at start."""

    def counts(self) -> Mapping[str, int]:
        """Elements currently enforced, per jail name. May be slow (a kernel listing) and is
        called from a worker thread while the reactor applies batches: it must not share
        what ``apply`` uses."""

    def set_counts(self) -> Mapping[str, int]:
        """Elements currently in the kernel, per set of the backend (none for a backend
        without sets); as slow as ``counts``, and called the same way (the metrics)."""

    def flush(self) -> None:
        """Remove every ban (the jails' rules may stay)."""

    def close(self) -> None:
        """Release resources. Bans stay in force unless ``flush`` was called."""


class Element(NamedTuple):
    """An element as the backend holds it: its jail, its network in canonical text, when it
    ends (None: permanent) and when it was placed (None: not known, a permanent one)."""

    jail: str
    network: str
    expires_at: float | None
    placed_at: float | None


class Restored(NamedTuple):
    """An active ban as the store holds it, for ``RowRestorer.restore_rows``: no address
    object is built for it."""

    jail: str
    network: str  # canonical text: str(ip_network(...))
    expires_at: float | None  # None: permanent


@runtime_checkable
class RowRestorer(Protocol):
    """An Enforcer that restores from the store's rows (nftables): at start the Appliance loads
    it in a worker thread while it builds its Bans from the same rows."""

    def restore_rows(self, active: Sequence[Restored], now: float) -> None:
        """``Enforcer.restore`` from rows. Runs in a worker thread: nothing else uses the
        enforcer until it returns."""


class Refused(NamedTuple):
    """One element a backend refused: the ban's jail and network (canonical text), and why."""

    jail: str
    network: str
    reason: str


class ElementsRefused(EnforcementError):
    """The backend applied a batch (``apply``, ``restore``) but for these elements, each refused
    on its own: sending them again would be refused again, so they are reported, not retried."""

    def __init__(self, refused: Sequence[Refused]) -> None:
        self.refused = tuple(refused)
        listed = "; ".join(f"{r.network} (jail {r.jail}): {r.reason}" for r in self.refused)
        super().__init__(
            f"the kernel refused {len(self.refused)} elements and took the rest of their batch: "
            f"{listed}. They are not sent again: the next start sets the kernel from the store"
        )

    def __reduce__(self) -> tuple[type[ElementsRefused], tuple[tuple[Refused, ...]]]:
        return type(self), (self.refused,)


@dataclass(frozen=True, slots=True)
class Silence:
    """A watched syslog sender's silence (``sender_silence``): its address, since when nothing
    came (its last message, or the start of the watch when ``last_seen`` is None), the listener
    of its last message ("" when none) and the silence configured (seconds)."""

    sender: str
    since: float
    last_seen: float | None
    listener: str
    silence: float


class BanNotifier(Protocol):
    """What the Appliance, the control socket and the metrics ask of the ban mails
    (``enforcement/notify.Notifier``; ``testing.RecordingNotifier`` in tests)."""

    def banned(self, ban: Ban, lines: tuple[str, ...]) -> None:
        """A new ban (not a restored or adopted one) and its matched lines; returns at once."""

    def sender_silent(self, silence: Silence, now: float) -> None:
        """A watched sender went silent: mail it once; returns at once."""

    def sender_returned(self, silence: Silence, now: float) -> None:
        """A silent sender sent again at ``now``: mail it; returns at once."""

    def reconfigure(self, config: Config) -> None: ...

    def status(self) -> dict[str, Any]: ...

    def test(self) -> Deferred[dict[str, Any]]:
        """Send a test mail; the outcome, or a failure the operator can read."""

    def preview(self, jail: str | None = None) -> dict[str, Any]:
        """The mail a ban in ``jail`` would send (headers, body), from sample data, unsent."""

    def stop(self) -> None: ...
