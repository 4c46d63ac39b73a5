"""conf/files.py: the config file replaced atomically, mode kept; the directory lock."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from applianced.conf.files import FileWriteError, locked, write_atomic


def test_write_atomic_replaces_the_text_and_keeps_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "appliance.toml"
    path.write_text("old = 1\n")
    path.chmod(0o640)
    write_atomic(path, "new = 2\n")
    assert path.read_text() == "new = 2\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["appliance.toml"]  # no temp file left


def test_a_directory_that_cannot_be_locked_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileWriteError, match="cannot open"), locked(tmp_path / "missing"):
        pass
