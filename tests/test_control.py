"""The control dispatcher: verbs mapped to the Appliance, answers as JSON-ready dicts."""

from __future__ import annotations

import json
from collections.abc import Callable
from ipaddress import ip_network
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from applianced.appliance import Appliance
from applianced.control import Dispatcher
from applianced.testing import MemoryEnforcer, MemoryStore
from tests.helpers import config, jail_conf, message, ssh_failure


def appliance(tmp_path: Path) -> Appliance:
    clock = Clock()
    clock.advance(1_800_000_000.0)
    app = Appliance(config(tmp_path), MemoryStore(), MemoryEnforcer(), clock)
    app.start()
    for _ in range(3):
        app.receive(message(ssh_failure("203.0.113.7"), at=clock.seconds()))
    clock.advance(0)
    return app


def test_status_counts_the_kernel_in_a_worker_thread(tmp_path: Path) -> None:
    """With in_thread, status hands the enforcer's (slow) count to it and answers when it
    returns: the reactor is not held for the kernel listing."""
    app = appliance(tmp_path)
    queued: list[tuple[Callable[[], Any], Deferred[Any]]] = []

    def in_thread(f: Callable[[], Any]) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        queued.append((f, d))
        return d

    answers: list[Any] = []
    result = Dispatcher(app, in_thread=in_thread).handle({"verb": "status"})
    assert isinstance(result, Deferred)
    result.addCallback(answers.append)
    assert not answers and [f for f, _ in queued] == [app.enforcer.counts]
    f, d = queued[0]
    d.callback(f())
    assert answers[0]["ok"]
    assert answers[0]["result"]["jails"]["sshd"]["kernel_elements"] == 1


def test_status_without_a_thread_answers_at_once(tmp_path: Path) -> None:
    answer = Dispatcher(appliance(tmp_path)).handle({"verb": "status"})
    assert isinstance(answer, dict) and answer["ok"]
    assert answer["result"]["jails"]["sshd"]["kernel_elements"] == 1


def test_status_of_an_unknown_jail_is_an_error_in_the_thread_path_too(tmp_path: Path) -> None:
    app = appliance(tmp_path)
    answers: list[Any] = []

    def in_thread(f: Callable[[], Any]) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        d.callback(f())
        return d

    result = Dispatcher(app, in_thread=in_thread).handle(
        {"verb": "status", "args": {"jail": "nope"}}
    )
    assert isinstance(result, Deferred)
    result.addCallback(answers.append)
    assert not answers[0]["ok"] and "nope" in answers[0]["error"]


def ask(app: Appliance, verb: str, **args: Any) -> dict[str, Any]:
    answer = Dispatcher(app).handle({"verb": verb, "args": args})
    assert isinstance(answer, dict)
    return answer


def test_a_ban_longer_than_the_kernel_takes_is_refused_with_the_limit_and_the_way_out(
    tmp_path: Path,
) -> None:
    app = appliance(tmp_path)
    for duration in ("166w", 100_000_000, "99999999.5"):
        answer = ask(app, "ban", jail="sshd", target="198.51.100.9", duration=duration)
        assert not answer["ok"], duration
        assert "99,999,999 s" in answer["error"] and "blacklist add" in answer["error"]
    assert ask(app, "ban", jail="sshd", target="198.51.100.9", duration=99_999_999)["ok"]


def test_a_duration_that_is_not_a_number_of_seconds_is_refused_and_bans_nothing(
    tmp_path: Path,
) -> None:
    app = appliance(tmp_path)
    before = app.banned()
    for duration in (float("inf"), float("nan"), -5, 0, True, [60], {"s": 60}, "soon"):
        answer = ask(app, "ban", jail="sshd", target="198.51.100.9", duration=duration)
        assert not answer["ok"] and "duration" in answer["error"], duration
        assert "internal error" not in answer["error"]
    assert app.banned() == before


def test_fields_of_the_wrong_type_are_refused_by_name(tmp_path: Path) -> None:
    """A list or dict where a jail name belongs, a string where a flag belongs: an error
    reply that names the field and what it must be, never a traceback."""
    app = appliance(tmp_path)
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("flush", {"jail": ["sshd"]}, "'jail'"),
        ("banned", {"jail": {"name": "sshd"}}, "'jail'"),
        ("status", {"jail": 7}, "'jail'"),
        ("unban", {"target": "203.0.113.7", "jail": ["sshd"]}, "'jail'"),
        ("blacklist_remove", {"target": "203.0.113.7", "jail": {}}, "'jail'"),
        ("blacklist_list", {"jail": [1]}, "'jail'"),
        ("ban", {"jail": "sshd", "target": ["198.51.100.9"]}, "'target'"),
        ("ban", {"jail": "sshd", "target": "198.51.100.9", "local": "false"}, "'local'"),
        ("unban", {"target": "203.0.113.7", "local": 1}, "'local'"),
        ("why", {"target": 7}, "'target'"),
    ]
    for verb, args, field in cases:
        answer = ask(app, verb, **args)
        assert not answer["ok"], (verb, args)
        assert field in answer["error"] and "must be" in answer["error"], answer["error"]
    assert [b.network for b in app.banned()] == [ip_network("203.0.113.7/32")]


def test_an_unknown_field_is_refused_rather_than_ignored(tmp_path: Path) -> None:
    """A typo must not silently fall back to a default (here: the jail's bantime)."""
    app = appliance(tmp_path)
    answer = ask(app, "ban", jail="sshd", target="198.51.100.9", durration="1h")
    assert not answer["ok"] and "'durration'" in answer["error"]
    assert "duration" in answer["error"]  # the fields the verb takes
    assert ip_network("198.51.100.9/32") not in {b.network for b in app.banned()}


def test_an_error_shows_a_huge_bad_value_cut_short(tmp_path: Path) -> None:
    """A 60 KiB value is named, not echoed whole, in the answer (and so in the log)."""
    app = appliance(tmp_path)
    huge = ["x" * 1000] * 60
    answer = ask(app, "ban", jail="sshd", target=huge)
    assert not answer["ok"] and "'target'" in answer["error"]
    assert len(answer["error"]) < 200
    answer = Dispatcher(app).handle({"verb": "y" * 60_000})
    assert not answer["ok"] and len(answer["error"]) < 200  # type: ignore[index]


def test_args_must_be_an_object(tmp_path: Path) -> None:
    for args in ([], "x", 0):
        answer = Dispatcher(appliance(tmp_path)).handle({"verb": "banned", "args": args})
        assert isinstance(answer, dict) and answer == {
            "ok": False,
            "error": "args must be an object",
        }


def test_an_ipv4_mapped_cidr_is_checked_against_the_protected_ipv4_address(
    tmp_path: Path,
) -> None:
    """``::ffff:192.0.2.10/128`` is 192.0.2.10: an ignored address must not be banned by
    writing it the IPv6 way."""
    clock = Clock()
    clock.advance(1_800_000_000.0)
    conf = config(tmp_path, jail_conf(ignoreip=(ip_network("192.0.2.10/32"),)))
    app = Appliance(conf, MemoryStore(), MemoryEnforcer(), clock)
    app.start()
    for target in ("::ffff:192.0.2.10/128", "::ffff:192.0.2.10", "::ffff:192.0.2.0/120"):
        answer = ask(app, "ban", jail="sshd", target=target)
        assert not answer["ok"] and "protected" in answer["error"], target
    assert app.banned() == []
    answer = ask(app, "ban", jail="sshd", target="::ffff:198.51.100.7/128")
    assert answer["ok"] and answer["result"]["address"] == "198.51.100.7/32"
    assert ask(app, "unban", target="::ffff:198.51.100.7/128")["ok"]


def test_a_line_nested_too_deep_is_not_json_not_a_traceback(tmp_path: Path) -> None:
    """``[`` sixty thousand times over the socket: Python's JSON parser gives up with
    RecursionError; the answer is the usual "not a JSON line" and the connection stays."""
    from twisted.internet.testing import StringTransport

    from applianced.control import ControlFactory

    proto = ControlFactory(Dispatcher(appliance(tmp_path))).buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    proto.dataReceived(b"[" * 60_000 + b"\n")
    proto.dataReceived(b'{"verb": "ping"}\n')
    answers = [json.loads(line) for line in transport.value().splitlines()]
    assert answers == [{"ok": False, "error": "not a JSON line"}, {"ok": True, "result": "pong"}]


def test_explain_walks_a_frame_through_the_running_jails_and_counts_nothing(
    tmp_path: Path,
) -> None:
    """The daemon's jails (with their windows) answer; a frame that does not parse is an
    error the operator reads; a missing frame is refused by name."""
    app = appliance(tmp_path)
    frame = "<38>1 2026-11-22T10:00:01Z mx sshd 1 - -  " + ssh_failure("203.0.113.9")
    answer = Dispatcher(app).handle({"verb": "explain", "args": {"frame": frame}})
    assert isinstance(answer, dict) and answer["ok"], answer
    result = answer["result"]
    assert result["shape"] == "RFC 5424" and result["summary"] == "a failure for sshd"
    assert result["jails"][0]["match"]["address"] == "203.0.113.9"
    assert app.engine.jails["sshd"].stats.matched == 3  # the three of appliance(), no more
    bad = Dispatcher(app).handle({"verb": "explain", "args": {"frame": "<999>x"}})
    assert bad == {"ok": False, "error": "PRI out of range 0..191: <999>"}
    missing = Dispatcher(app).handle({"verb": "explain", "args": {}})
    assert missing == {"ok": False, "error": "explain: missing argument 'frame'"}
