"""Every exception applianced defines derives from ``ApplianceError``: what an operator can see
(appliancectl's messages, a refused config, a refused ``tls init``) is one family, caught in one
place by whoever drives the package."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import applianced
from applianced.cli.client import EXIT_DOWN, CliError, request
from applianced.conf.schema import TLSConf
from applianced.errors import ApplianceError
from applianced.receiver.tls import TLSFileError, server_context
from applianced.tlsinit import TLSInitError, init_tls


def _defined_exceptions() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(applianced.__path__, "applianced."):
        if info.name.endswith("__main__"):
            continue  # running it is the CLI itself
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == info.name:
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return sorted(found.values(), key=lambda e: f"{e.__module__}.{e.__qualname__}")


def test_the_walk_finds_the_package_exceptions() -> None:
    names = {e.__name__ for e in _defined_exceptions()}
    assert {"ApplianceError", "ConfigError", "CliError", "TLSInitError", "TLSFileError"} <= names


@pytest.mark.parametrize("error", _defined_exceptions(), ids=lambda e: e.__qualname__)
def test_every_exception_of_the_package_is_an_appliance_error(error: type[BaseException]) -> None:
    assert issubclass(error, ApplianceError)


def test_a_daemon_that_is_down_is_an_appliance_error(tmp_path: Path) -> None:
    with pytest.raises(ApplianceError, match="applianced is not running") as caught:
        request(tmp_path / "none.sock", "status")
    assert isinstance(caught.value, CliError) and caught.value.code == EXIT_DOWN


def test_a_refused_tls_init_is_an_appliance_error(tmp_path: Path) -> None:
    init_tls(tmp_path, ["appliance.example.org"], [])
    with pytest.raises(ApplianceError, match="already holds a CA") as caught:
        init_tls(tmp_path, ["appliance.example.org"], [])
    assert isinstance(caught.value, TLSInitError)


def test_an_unreadable_certificate_is_an_appliance_error(tmp_path: Path) -> None:
    conf = TLSConf(cert=tmp_path / "missing.pem", key=tmp_path / "missing.key")
    with pytest.raises(ApplianceError, match="cannot read the certificate") as caught:
        server_context(conf)
    assert isinstance(caught.value, TLSFileError)
