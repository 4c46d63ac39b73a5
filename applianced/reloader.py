"""The one reload of the running daemon: the config file read again, listeners moved, jails swapped.

``service.make_service`` builds the ``Reloader`` and hands it to the control socket's
dispatcher (``appliancectl reload``) and to systemd's side (SIGHUP);
``Reload`` is the shape those callers take.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from applianced.appliance import Appliance
from applianced.conf.load import load_config
from applianced.conf.schema import Config
from applianced.errors import ApplianceError, ConfigError
from applianced.receiver.listeners import Listeners
from applianced.units import plural

__all__ = ["Reload", "Reloader"]

# The reload's log lines keep the namespace they have always had (the journal shows it).
log = Logger(namespace="applianced.service")

Reload = Callable[[], Deferred[dict[str, Any]]]


class Reloader:
    """The one reload, used by SIGHUP and by ``appliancectl reload``: read and validate the
    config file, rebind the listeners whose transport/address/port changed (new sockets first;
    a bind failure refuses the whole reload and keeps every old listener), apply the other
    listener settings in place, then swap the jails. Reloads run one at a time.

    ``around`` wraps each reload (systemd's RELOADING=1 ... READY=1); the config is read
    synchronously inside it, so a bad file raises there. The Deferred fails with
    ``ApplianceError`` (``ConfigError`` for a bad file) and the running config stays.
    ``then`` is told the new config once it applies (the log's level)."""

    def __init__(
        self,
        config: Config,
        appliance: Appliance,
        listeners: Listeners,
        around: Callable[[Reload], Deferred[dict[str, Any]]] = lambda work: work(),
        then: Callable[[Config], None] | None = None,
    ) -> None:
        self.config = config
        self.appliance = appliance
        self.listeners = listeners
        self.around = around
        self.then = then
        self._lock = DeferredLock()

    def __call__(self) -> Deferred[dict[str, Any]]:
        return self._lock.run(self.around, self._start)

    def _start(self) -> Deferred[dict[str, Any]]:
        try:
            new = load_config(self.config.path)
        except ConfigError as e:
            log.error("reload refused, keeping the running config: {error}", error=str(e))
            raise
        return Deferred.fromCoroutine(self._apply(new))

    async def _apply(self, new: Config) -> dict[str, Any]:
        try:
            moved = await self.listeners.update(new.listeners)
        except CannotListenError as e:
            message = (
                f"cannot listen on {e.interface or '*'}:{e.port}: {e.socketError}; reload "
                "refused, the running config and its listeners stay"
            )
            log.error("{error}", error=message)
            raise ApplianceError(message) from None
        self.appliance.reload(new)
        if self.then is not None:
            self.then(new)
        old, self.config = self.config, new
        for key in ("state_dir", "control_socket", "lines_per_ban"):
            if getattr(old, key) != getattr(new, key):
                log.warn("[daemon] {key} changed: it applies at the next start", key=key)
        for table in ("state", "metrics", "decisions"):  # bound or opened at start only
            if getattr(old, table) != getattr(new, table):
                log.warn("[{table}] changed: it applies at the next start", table=table)
        log.info(
            "reloaded {path}: {jails}; listeners opened {opened}, closed {closed}, "
            "updated {updated}",
            path=str(new.path),
            jails=plural(len(new.enabled_jails), "jail"),
            opened=moved["opened"] or "none",
            closed=moved["closed"] or "none",
            updated=moved["updated"] or "none",
        )
        return {
            # Absolute: appliancectl, in another directory, compares it with the file it edited.
            "config": str(new.path.resolve()),
            "jails": [j.name for j in new.enabled_jails],
            "listeners": moved,
        }
