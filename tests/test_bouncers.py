"""The bouncers' keys file: a key shown once, its hash kept; the daemon's KeyRing follows the
file without being told."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from applianced.bouncers import (
    KEYS_FILE,
    BouncerError,
    KeyRing,
    add_bouncer,
    key_hash,
    read_keys,
    remove_bouncer,
)


def test_add_keeps_only_the_hash_and_the_ring_finds_the_key(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path)
    assert ring.lookup("anything") is None
    key = add_bouncer(tmp_path, "mx1")
    assert len(key) == 64
    text = (tmp_path / KEYS_FILE).read_text()
    assert key not in text and key_hash(key) in text
    assert (tmp_path / KEYS_FILE).stat().st_mode & 0o777 == 0o640
    assert ring.lookup(key) == "mx1"
    assert ring.lookup("") is None and ring.lookup(key[:-1]) is None
    other = add_bouncer(tmp_path, "mx2")
    assert ring.lookup(other) == "mx2" and ring.names() == ["mx1", "mx2"]
    remove_bouncer(tmp_path, "mx1")
    assert ring.lookup(key) is None
    assert list(read_keys(tmp_path)) == ["mx2"]


def test_refusals_say_what_to_do(tmp_path: Path) -> None:
    add_bouncer(tmp_path, "mx1")
    with pytest.raises(BouncerError, match="exists; `appliancectl bouncer remove mx1` first"):
        add_bouncer(tmp_path, "mx1")
    with pytest.raises(BouncerError, match="is not a bouncer name"):
        add_bouncer(tmp_path, "mx 1")
    with pytest.raises(BouncerError, match="no bouncer 'mx9'; registered: mx1"):
        remove_bouncer(tmp_path, "mx9")
    (tmp_path / KEYS_FILE).write_text(json.dumps({"something": "else"}))
    with pytest.raises(BouncerError, match="is not a bouncer keys file; move it away"):
        read_keys(tmp_path)
