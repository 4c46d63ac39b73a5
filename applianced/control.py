"""The control socket, server side: JSON lines over a UNIX socket.

Each request is one line ``{"verb": "...", "args": {...}}``; each answer one line
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "what went wrong and what to do"}``.
Access control is the socket file's mode (0660) and its directory's; ``cli.py`` is the client.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure

from applianced.appliance import Appliance, ban_json
from applianced.errors import ApplianceError
from applianced.units import parse_duration

__all__ = ["ControlFactory", "Dispatcher"]

log = Logger()

Handler = Callable[[dict[str, Any]], Any]
# Runs a blocking call in a worker thread (the service: Twisted's reactor thread pool).
InThread = Callable[[Callable[[], Any]], Deferred[Any]]


class Dispatcher:
    """Maps verbs to the Appliance. ``reload`` is provided by the service."""

    def __init__(
        self,
        appliance: Appliance,
        reload: Callable[[], Any] | None = None,
        in_thread: InThread | None = None,
    ) -> None:
        self.appliance = appliance
        self.in_thread = in_thread
        self.verbs: dict[str, Handler] = {
            "ping": lambda a: "pong",
            "status": self.status,
            "banned": self.banned,
            "ban": self.ban,
            "unban": self.unban,
            "blacklist_add": self.blacklist_add,
            "blacklist_remove": self.blacklist_remove,
            "blacklist_list": self.blacklist_list,
            "why": lambda a: appliance.why(_str(a, "target")),
            "flush": lambda a: [ban_json(b, self._now()) for b in appliance.flush(a.get("jail"))],
        }
        if reload is not None:
            self.verbs["reload"] = lambda a: reload()
        self.verbs["notify_test"] = self.notify_test

    def handle(self, request: Any) -> dict[str, Any] | Deferred[dict[str, Any]]:
        if not isinstance(request, dict) or not isinstance(request.get("verb"), str):
            return {"ok": False, "error": 'a request is {"verb": "...", "args": {...}}'}
        handler = self.verbs.get(request["verb"])
        if handler is None:
            return {"ok": False, "error": f"unknown verb {request['verb']!r}"}
        args = request.get("args") or {}
        if not isinstance(args, dict):
            return {"ok": False, "error": "args must be an object"}
        try:
            result = handler(args)
        except (ApplianceError, ValueError) as e:
            return {"ok": False, "error": str(e)}
        if isinstance(result, Deferred):  # a verb that waits (notify_test): answer later

            def refused(reason: Failure) -> dict[str, Any]:
                if isinstance(reason.value, ApplianceError | ValueError):
                    return {"ok": False, "error": str(reason.value)}
                log.failure("control request failed: {request}", reason, request=request)
                return {"ok": False, "error": f"internal error: {reason.value}; see the log"}

            return result.addCallbacks(lambda r: {"ok": True, "result": r}, refused)
        return {"ok": True, "result": result}

    def status(self, args: dict[str, Any]) -> Any:
        """Counting the kernel's elements lists every set, about 1.5 s at 100,000 bans: with
        ``in_thread`` it runs in a worker thread, and the reactor keeps receiving meanwhile
        (held ~0.2 s at most, by the binding's JSON parse)."""
        jail = args.get("jail")
        if self.in_thread is None:
            return self.appliance.status(jail)
        counts: Deferred[Mapping[str, int]] = self.in_thread(self.appliance.enforcer.counts)
        return counts.addCallback(lambda c: self.appliance.status(jail, c))

    def notify_test(self, args: dict[str, Any]) -> Deferred[dict[str, Any]]:
        notifier = self.appliance.notifier
        if notifier is None:
            raise ApplianceError("ban mails are not set up in this daemon")
        return notifier.test()

    def _now(self) -> float:
        return self.appliance.clock.seconds()

    def banned(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        jail = args.get("jail")
        if jail is not None:
            self.appliance.jail_conf(jail)
        return [ban_json(b, self._now()) for b in self.appliance.banned(jail)]

    def ban(self, args: dict[str, Any]) -> dict[str, Any]:
        duration = args.get("duration")
        seconds = parse_duration(duration) if duration is not None else None
        if seconds is not None and seconds <= 0:
            raise ValueError("a ban lasts more than 0 seconds")
        local = bool(args.get("local"))
        ban = self.appliance.ban(_str(args, "jail"), _str(args, "target"), seconds, local=local)
        return ban_json(ban, self._now())

    def unban(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        local = bool(args.get("local"))
        bans = self.appliance.unban(_str(args, "target"), args.get("jail"), local=local)
        return [ban_json(b, self._now()) for b in bans]

    def blacklist_add(self, args: dict[str, Any]) -> dict[str, Any]:
        ban = self.appliance.ban(_str(args, "jail"), _str(args, "target"), permanent=True)
        return ban_json(ban, self._now())

    def blacklist_remove(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        bans = self.appliance.unban(_str(args, "target"), args.get("jail"), permanent_only=True)
        return [ban_json(b, self._now()) for b in bans]

    def blacklist_list(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        return [b for b in self.banned(args) if b["expires_at"] is None]


def _str(args: dict[str, Any], key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"missing argument {key!r}")
    return value


class _ControlProtocol(LineOnlyReceiver):
    MAX_LENGTH = 1 << 16
    delimiter = b"\n"

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    def lineReceived(self, line: bytes) -> None:
        try:
            request = json.loads(line)
        except ValueError:
            answer: dict[str, Any] | Deferred[dict[str, Any]] = {
                "ok": False,
                "error": "not a JSON line",
            }
        else:
            try:
                answer = self.dispatcher.handle(request)
            except Exception as e:
                log.failure("control request failed: {request}", request=request)
                answer = {"ok": False, "error": f"internal error: {e}; see the daemon's log"}
        if isinstance(answer, Deferred):
            answer.addCallback(lambda a: self.sendLine(json.dumps(a).encode()))
            return
        self.sendLine(json.dumps(answer).encode())

    def lineLengthExceeded(self, line: bytes) -> None:
        self.sendLine(json.dumps({"ok": False, "error": "request too long"}).encode())
        self.transport.loseConnection()  # type: ignore[union-attr]


class ControlFactory(Factory):
    noisy = False

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    def buildProtocol(self, addr: object) -> _ControlProtocol:
        return _ControlProtocol(self.dispatcher)
