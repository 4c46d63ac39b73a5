"""The control dispatcher: verbs mapped to the Appliance, answers as JSON-ready dicts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from applianced.appliance import Appliance
from applianced.control import Dispatcher
from applianced.enforcement.memory import MemoryEnforcer
from applianced.rules.offenders import SqliteOffenderStore
from tests.helpers import config, message, ssh_failure


def appliance(tmp_path: Path) -> Appliance:
    clock = Clock()
    clock.advance(1_800_000_000.0)
    store = SqliteOffenderStore(tmp_path / "offenders.sqlite")
    app = Appliance(config(tmp_path), store, MemoryEnforcer(), clock)
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
