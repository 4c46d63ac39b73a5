"""The control socket, server side: JSON lines over a UNIX socket.

Each request is one line ``{"verb": "...", "args": {...}}``; each answer one line
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "what went wrong and what to do"}``.
Each verb's arguments are checked by name and type before the Appliance sees them.
Access control is the socket file's mode (0660) and its directory's; ``cli/client.py`` is the
client.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure

from applianced import views
from applianced.appliance import Appliance
from applianced.errors import ApplianceError
from applianced.units import parse_ban_duration
from applianced.views import ban_json

__all__ = ["ControlFactory", "Dispatcher"]

log = Logger()

Handler = Callable[[dict[str, Any]], Any]
# Runs a blocking call in a worker thread (the service: Twisted's reactor thread pool).
InThread = Callable[[Callable[[], Any]], Deferred[Any]]

_PERMANENT = "use `appliancectl blacklist add JAIL ADDR` (the verb blacklist_add)"


def _brief(value: Any) -> str:
    """``value`` as an error message shows it: its repr, cut to 60 characters (a request line
    may be 64 KiB, and the answer and the log need only enough to recognise it)."""
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError("a non-empty string")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("true or false")
    return value


def _duration(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise TypeError('seconds or a duration such as "10m", "1h", "1d", "1w"')
    seconds = parse_ban_duration(value, _PERMANENT)
    if seconds <= 0:
        raise ValueError(f"{_brief(value)}: a ban lasts more than 0 seconds")
    return seconds


# Every argument a verb may take, and how it is checked and converted: a TypeError names what
# the value must be, a ValueError what is wrong with it.
_FIELDS: dict[str, Callable[[Any], Any]] = {
    "jail": _text,
    "target": _text,
    "local": _flag,
    "duration": _duration,
    "frame": _text,
}


@dataclass(frozen=True, slots=True)
class _Verb:
    handler: Handler
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()

    def arguments(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        """``args`` checked against the fields the verb takes, converted (a duration to
        seconds); absent or null optional fields are left out. ValueError says what is wrong."""
        allowed = (*self.required, *self.optional)
        for key in args:
            if key not in allowed:
                takes = ", ".join(allowed) or "no arguments"
                raise ValueError(f"{name}: unknown argument {_brief(key)}; {name} takes: {takes}")
        out = {}
        for key in allowed:
            value = args.get(key)
            if value is None:
                if key in self.required:
                    raise ValueError(f"{name}: missing argument {key!r}")
                continue
            try:
                out[key] = _FIELDS[key](value)
            except TypeError as e:
                raise ValueError(f"{name}: {key!r} must be {e}, not {_brief(value)}") from None
            except ValueError as e:
                raise ValueError(f"{name}: {key!r}: {e}") from None
        return out


class Dispatcher:
    """Maps verbs to the Appliance. ``reload`` is provided by the service."""

    def __init__(
        self,
        appliance: Appliance,
        reload: Callable[[], Any] | None = None,
        in_thread: InThread | None = None,
        bouncers: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> None:
        """``bouncers``: the decision stream's bouncers and their last pulls ([decisions])."""
        self.appliance = appliance
        self.in_thread = in_thread
        jail, target = ("jail",), ("target",)
        self.verbs: dict[str, _Verb] = {
            "ping": _Verb(lambda a: "pong"),
            "status": _Verb(self.status, optional=jail),
            "banned": _Verb(self.banned, optional=jail),
            "ban": _Verb(self.ban, ("jail", "target"), ("duration", "local")),
            "unban": _Verb(self.unban, target, ("jail", "local")),
            "blacklist_add": _Verb(self.blacklist_add, ("jail", "target")),
            "blacklist_remove": _Verb(self.blacklist_remove, target, jail),
            "blacklist_list": _Verb(self.blacklist_list, optional=jail),
            "why": _Verb(lambda a: views.why(appliance, a["target"]), target),
            "senders": _Verb(lambda a: views.senders(appliance)),
            "explain": _Verb(lambda a: views.explain(appliance, a["frame"]), ("frame",)),
            "flush": _Verb(
                lambda a: [ban_json(b, self._now()) for b in appliance.flush(a.get("jail"))],
                optional=jail,
            ),
        }
        if reload is not None:
            self.verbs["reload"] = _Verb(lambda a: reload())
        self.verbs["notify_test"] = _Verb(self.notify_test)
        self.verbs["notify_preview"] = _Verb(self.notify_preview, optional=jail)
        self.verbs["bouncers"] = _Verb(lambda a: None if bouncers is None else bouncers())

    def handle(self, request: Any) -> dict[str, Any] | Deferred[dict[str, Any]]:
        if not isinstance(request, dict) or not isinstance(request.get("verb"), str):
            return {"ok": False, "error": 'a request is {"verb": "...", "args": {...}}'}
        verb = self.verbs.get(request["verb"])
        if verb is None:
            return {"ok": False, "error": f"unknown verb {_brief(request['verb'])}"}
        args = request.get("args")
        if args is None:
            args = {}
        if not isinstance(args, dict):
            return {"ok": False, "error": "args must be an object"}
        try:
            result = verb.handler(verb.arguments(request["verb"], args))
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
            return views.status(self.appliance, jail)
        counts: Deferred[Mapping[str, int]] = self.in_thread(self.appliance.enforcer.counts)
        return counts.addCallback(lambda c: views.status(self.appliance, jail, c))

    def notify_test(self, args: dict[str, Any]) -> Deferred[dict[str, Any]]:
        notifier = self.appliance.notifier
        if notifier is None:
            raise ApplianceError("ban mails are not set up in this daemon")
        return notifier.test()

    def notify_preview(self, args: dict[str, Any]) -> dict[str, Any]:
        notifier = self.appliance.notifier
        if notifier is None:
            raise ApplianceError("ban mails are not set up in this daemon")
        return notifier.preview(args.get("jail"))

    def _now(self) -> float:
        return self.appliance.clock.seconds()

    def banned(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        jail = args.get("jail")
        if jail is not None:
            self.appliance.jail_conf(jail)
        return [ban_json(b, self._now()) for b in self.appliance.banned(jail)]

    def ban(self, args: dict[str, Any]) -> dict[str, Any]:
        ban = views.ban(
            self.appliance,
            args["jail"],
            args["target"],
            args.get("duration"),
            local=args.get("local", False),
        )
        return ban_json(ban, self._now())

    def unban(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        local = args.get("local", False)
        bans = views.unban(self.appliance, args["target"], args.get("jail"), local=local)
        return [ban_json(b, self._now()) for b in bans]

    def blacklist_add(self, args: dict[str, Any]) -> dict[str, Any]:
        ban = views.ban(self.appliance, args["jail"], args["target"], permanent=True)
        return ban_json(ban, self._now())

    def blacklist_remove(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        bans = views.unban(self.appliance, args["target"], args.get("jail"), permanent_only=True)
        return [ban_json(b, self._now()) for b in bans]

    def blacklist_list(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        return [b for b in self.banned(args) if b["expires_at"] is None]


class _ControlProtocol(LineOnlyReceiver):
    MAX_LENGTH = 1 << 16
    delimiter = b"\n"

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    def lineReceived(self, line: bytes) -> None:
        try:
            request = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
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
