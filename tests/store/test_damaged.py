"""A damaged offenders store is refused at start with the recovery steps, and
``store/recover.py`` builds a new one from what can be read (issue 20, item 3)."""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
from ipaddress import ip_network
from pathlib import Path

import pytest

from applianced.cli.parser import main as appliancectl
from applianced.errors import StoreError
from applianced.rules.decision import BanDecision, BanKind
from applianced.store.recover import recover
from applianced.store.sqlite import SqliteOffenderStore

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_800_000_000.0
PAGE = 4096


def _filled(path: Path, bans: int = 3000) -> None:
    store = SqliteOffenderStore(path)
    store.record_bans(
        [
            BanDecision(
                "sshd",
                ip_network(f"10.0.{i // 256}.{i % 256}/32"),
                3600.0,
                BanKind.AUTO,
                1,
                T0,
                (f"[192.0.2.1] Failed password for root from 10.0.{i // 256}.{i % 256}",),
            )
            for i in range(bans)
        ]
    )
    store.close()


def _scribble(path: Path, pages: range, seed: int = 20) -> None:
    """Random bytes (deterministic) over whole pages of the file."""
    rng = random.Random(seed)
    with path.open("r+b") as f:
        for page in pages:
            f.seek(page * PAGE)
            f.write(rng.randbytes(PAGE))


def test_random_bytes_over_some_pages_are_refused_with_the_recovery_steps(
    tmp_path: Path,
) -> None:
    path = tmp_path / "offenders.sqlite"
    _filled(path)
    _scribble(path, range(20, 24))
    with pytest.raises(
        StoreError, match=r"is damaged \(.*\); applianced does not start on it.*store recover"
    ):
        SqliteOffenderStore(path)


def test_a_damaged_header_is_refused_with_the_recovery_steps(tmp_path: Path) -> None:
    path = tmp_path / "offenders.sqlite"
    _filled(path, 10)
    _scribble(path, range(1))
    with pytest.raises(StoreError, match=r"is damaged .*appliancectl store recover"):
        SqliteOffenderStore(path)


def test_a_truncated_store_opens_empty(tmp_path: Path) -> None:
    """0 bytes is a new store to SQLite: it opens empty (the start then adopts the kernel's
    bans and says so, tests/test_drift.py)."""
    path = tmp_path / "offenders.sqlite"
    _filled(path, 10)
    path.write_bytes(b"")
    assert SqliteOffenderStore(path).active_bans(T0) == []


def test_recover_keeps_the_damaged_file_and_copies_what_it_can_read(tmp_path: Path) -> None:
    path = tmp_path / "offenders.sqlite"
    _filled(path)
    _scribble(path, range(20, 24))
    done = recover(path, "20261207T000000Z")
    assert done.aside == tmp_path / "offenders.sqlite.damaged-20261207T000000Z"
    assert done.aside.stat().st_size > 0
    store = SqliteOffenderStore(path)  # a sound store again
    active = store.active_bans(T0)
    assert 0 < len(active) == done.active == done.bans < 3000
    history = store.history(active[0].network)
    assert history[0].lines and history[0].sender == "192.0.2.1"
    with pytest.raises(StoreError, match="exists already"):
        recover(path, "20261207T000000Z")


def test_recover_counts_every_ban_it_could_not_copy(tmp_path: Path) -> None:
    """Bans are never deleted, so each id up to the largest that was not copied is a ban lost;
    a damaged page may lose rows without an error, and those count too."""
    path = tmp_path / "offenders.sqlite"
    _filled(path)
    with path.open("r+b") as f:  # part of a page overwritten: rows lost without an error
        f.seek(5 * PAGE + 100)
        f.write(b"\xff" * 2000)
    done = recover(path, "20261207T000000Z")
    assert done.bans < 3000
    assert done.bans + done.unreadable == 3000


def test_recover_of_a_file_that_is_no_database_says_nothing_could_be_read(
    tmp_path: Path,
) -> None:
    path = tmp_path / "offenders.sqlite"
    path.write_bytes(random.Random(3).randbytes(30_000))
    done = recover(path, "20261207T000000Z")
    assert done.bans == 0
    assert done.unreadable_tables == ("bans", "ban_lines", "outbox", "cluster")
    assert SqliteOffenderStore(path).active_bans(T0) == []


FULL_DISK = """
import sys
from pathlib import Path
from applianced.cli.parser import main as appliancectl
from applianced.errors import StoreError
from applianced.store.sqlite import SqliteOffenderStore
directory = Path(sys.argv[1])
with open(directory / "filler", "wb", buffering=0) as f:
    try:
        while True:
            f.write(bytes(4096))
    except OSError:
        pass
try:
    SqliteOffenderStore(directory / "offenders.sqlite")
except StoreError as e:
    print(e)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a tmpfs in a mount namespace)")
def test_a_store_that_cannot_open_on_a_full_disk_says_the_disk_is_full(tmp_path: Path) -> None:
    """A new store on a full filesystem (a 256 KiB tmpfs of a mount namespace of its own):
    SQLite says only "disk I/O error"; the message says the disk is full and what follows."""
    mount = 'mount -t tmpfs -o size=256k tmpfs "$1" && exec "$2" -c "$3" "$1"'
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount, "sh",
         str(tmp_path), sys.executable, FULL_DISK],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert "the disk is full" in done.stdout and "free space on" in done.stdout, done.stdout


RECOVER_FULL = """
import sys
from pathlib import Path
from applianced.errors import StoreError
from applianced.store.recover import recover
from tests.store.test_damaged import _filled
directory = Path(sys.argv[1])
_filled(directory / "offenders.sqlite", 100)
with open(directory / "filler", "wb", buffering=0) as f:
    try:
        while True:
            f.write(bytes(4096))
    except OSError:
        pass
try:
    recover(directory / "offenders.sqlite", "20261207T000000Z")
except StoreError as e:
    print(e)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a tmpfs in a mount namespace)")
def test_store_recover_on_a_full_disk_says_where_the_damaged_file_went(tmp_path: Path) -> None:
    """The damaged file is moved aside, then the new store cannot be made (a full 256 KiB
    tmpfs): the error says where the damaged file is and how to try again."""
    mount = 'mount -t tmpfs -o size=256k tmpfs "$1" && exec "$2" -c "$3" "$1"'
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount, "sh",
         str(tmp_path), sys.executable, RECOVER_FULL],
        capture_output=True, text=True, timeout=60, check=True, cwd=ROOT,
    )  # fmt: skip
    assert "the disk is full" in done.stdout, done.stdout + done.stderr
    assert "offenders.sqlite.damaged-20261207T000000Z (kept)" in done.stdout
    assert "move it back to offenders.sqlite" in done.stdout


def test_store_recover_says_when_the_file_could_not_be_read_at_all(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "offenders.sqlite").write_bytes(b"this is a mail log, not a database\n" * 100)
    config = tmp_path / "appliance.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{state}"\ncontrol_socket = "{tmp_path / "ctl.sock"}"\n'
        '[[listeners]]\ntransport = "udp"\naddress = "127.0.0.1"\nport = 5514\n'
    )
    assert appliancectl(["store", "recover", "--config", str(config)]) == 0
    said = capsys.readouterr().out
    assert "holds 0 bans" in said
    assert "SQLite could not read its tables bans, ban_lines, outbox, cluster at all" in said


@pytest.mark.timeout(60)
def test_recover_jumps_the_gap_to_a_huge_row_id(tmp_path: Path) -> None:
    """A damaged page may report a huge largest id: the walk jumps the gap between ids
    rather than read every chunk up to it (which would never end), and copies every ban."""
    path = tmp_path / "offenders.sqlite"
    _filled(path, bans=10)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE ban_lines SET ban_id = ? WHERE ban_id = 10", (1 << 62,))
        conn.execute("UPDATE bans SET id = ? WHERE id = 10", (1 << 62,))
    conn.close()
    done = recover(path, "20261207T000000Z")
    assert done.bans == 10 and done.unreadable < 1000  # ids 10 to 1000 count, not the gap
    assert len(SqliteOffenderStore(path).active_bans(T0)) == 10
