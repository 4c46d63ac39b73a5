"""The Reloader: a reload applied in order, a bad file or a failed bind refused whole, one at
a time. Driven with fake listeners and a fake appliance; the daemon's tests reload for real."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import CannotListenError
from twisted.logger import LogLevel, capturedLogs, formatEvent

from applianced import reloader
from applianced.conf.schema import Config, DecisionsConf, MetricsConf
from applianced.errors import ApplianceError, ConfigError
from applianced.reloader import Reloader
from tests.helpers import config, jail_conf

MOVED = {"opened": ["udp/127.0.0.1:1"], "closed": [], "updated": []}


class FakeAppliance:
    def __init__(self) -> None:
        self.reloaded: list[Config] = []

    def reload(self, config: Config) -> None:
        self.reloaded.append(config)


class FakeListeners:
    def __init__(self, result: Deferred[dict[str, list[str]]] | None = None) -> None:
        self.result = result
        self.updates: list[Any] = []

    def update(self, confs: Any) -> Deferred[dict[str, list[str]]]:
        self.updates.append(confs)
        return self.result if self.result is not None else succeed(MOVED)


def make(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listeners: FakeListeners, **kw: Any
) -> tuple[Reloader, FakeAppliance, Config]:
    old = config(tmp_path)
    new = config(tmp_path, jail_conf("sshd"), jail_conf("web"))
    monkeypatch.setattr(reloader, "load_config", lambda path: new)
    app = FakeAppliance()
    return Reloader(old, app, listeners, **kw), app, new  # type: ignore[arg-type]


def test_reload_moves_listeners_then_swaps_jails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listeners = FakeListeners()
    reload, app, new = make(tmp_path, monkeypatch, listeners)
    result: list[dict[str, Any]] = []
    reload().addCallback(result.append)
    assert listeners.updates == [new.listeners]
    assert app.reloaded == [new]
    assert reload.config is new
    assert result == [{"config": str(new.path), "jails": ["sshd", "web"], "listeners": MOVED}]


def test_a_bad_file_keeps_the_running_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listeners = FakeListeners()
    reload, app, _ = make(tmp_path, monkeypatch, listeners)
    old = reload.config

    def bad(path: Path) -> Config:
        raise ConfigError(path, "jails", "bad file")

    monkeypatch.setattr(reloader, "load_config", bad)
    failures: list[Any] = []
    reload().addErrback(failures.append)
    assert failures[0].check(ConfigError)
    assert listeners.updates == [] and app.reloaded == [] and reload.config is old


def test_a_failed_bind_refuses_the_whole_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listeners = FakeListeners(fail(CannotListenError("127.0.0.1", 514, OSError("in use"))))
    reload, app, _ = make(tmp_path, monkeypatch, listeners)
    old = reload.config
    failures: list[Any] = []
    reload().addErrback(failures.append)
    assert failures[0].check(ApplianceError)
    assert "cannot listen on 127.0.0.1:514" in str(failures[0].value)
    assert app.reloaded == [] and reload.config is old


def test_reloads_run_one_at_a_time_inside_around(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gates: list[Deferred[None]] = []

    def around(work: Any) -> Deferred[dict[str, Any]]:
        gate: Deferred[None] = Deferred()
        gates.append(gate)
        return gate.addCallback(lambda _: work())

    listeners = FakeListeners()
    reload, app, _ = make(tmp_path, monkeypatch, listeners, around=around)
    reload()
    reload()
    assert len(gates) == 1  # the second waits for the first
    gates[0].callback(None)
    assert len(app.reloaded) == 1 and len(gates) == 2
    gates[1].callback(None)
    assert len(app.reloaded) == 2


def test_then_is_told_the_new_config_once_it_applies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service sets the log's level from the new file here; a refused reload tells nothing."""
    told: list[Config] = []
    reload, _, new = make(tmp_path, monkeypatch, FakeListeners(), then=told.append)
    reload()
    assert told == [new]
    refused = Deferred[dict[str, list[str]]]()
    reload, _, _ = make(tmp_path, monkeypatch, FakeListeners(refused), then=told.append)
    reload().addErrback(lambda f: None)
    refused.errback(CannotListenError("127.0.0.1", 1, OSError("in use")))
    assert told == [new]


def test_a_changed_metrics_or_decisions_table_says_it_waits_for_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both endpoints are bound at start: a reload that changes them says so (it said nothing,
    and the old port went on answering)."""
    old = config(tmp_path)
    new = replace(
        old, metrics=MetricsConf(enabled=True, port=9600), decisions=DecisionsConf(port=8443)
    )
    monkeypatch.setattr(reloader, "load_config", lambda path: new)
    reload = Reloader(old, FakeAppliance(), FakeListeners())  # type: ignore[arg-type]
    with capturedLogs() as events:
        reload()
    warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
    assert warnings == [
        "[metrics] changed: it applies at the next start",
        "[decisions] changed: it applies at the next start",
    ]
