"""A config's listeners (conf/listenerconf.py), read through the loader."""

from __future__ import annotations

from ipaddress import ip_network
from pathlib import Path

from applianced.conf.load import parse_config
from tests.conf.test_load import MINIMAL, error_of


def test_listeners_are_required_and_validated(tmp_path: Path) -> None:
    """No listener, a bad transport or a bad address are errors."""
    assert "listeners" in str(error_of("[jails.sshd]\nfilter = 'sshd'\n", tmp_path))
    e = error_of(MINIMAL.replace('"udp"', '"sctp"'), tmp_path)
    assert e.key == "listeners[0].transport" and e.line == 2
    e = error_of(MINIMAL.replace("port = 5514", "port = 5514\naddress = 'localhost'"), tmp_path)
    assert "IP address" in str(e)


def test_listener_inherits_receiver_senders(tmp_path: Path) -> None:
    """allowed_senders defaults to [receiver], then to loopback."""
    config = parse_config(MINIMAL, tmp_path / "a.toml")
    assert config.listeners[0].allowed_senders == (ip_network("127.0.0.0/8"), ip_network("::1/128"))
    text = '[receiver]\nallowed_senders = ["192.0.2.10"]\n' + MINIMAL
    config = parse_config(text, tmp_path / "a.toml")
    assert config.listeners[0].allowed_senders == (ip_network("192.0.2.10/32"),)
