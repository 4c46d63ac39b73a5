"""Writing the config file safely, for the live edits of ``conf/edit.py`` (and the file
``import-fail2ban --output`` writes): the whole file
replaced atomically (a crash leaves the old or the new one, mode and owner kept) and an
advisory lock on its directory, so two ``appliancectl`` edits never both read the old file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from applianced.errors import ApplianceError

__all__ = ["FileWriteError", "locked", "write_atomic"]


class FileWriteError(ApplianceError):
    """The config file cannot be locked or written as it must be; the message says why."""


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text``: temp file in the same directory, fsync, rename, keeping
    the original's mode and (when we may) owner, so a crash leaves the old or the new file.
    A new file (``import-fail2ban --output``) gets mode 0644."""
    st = path.stat() if path.exists() else None
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            os.fchmod(f.fileno(), stat.S_IMODE(st.st_mode) if st else 0o644)
            if st and (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                try:
                    os.fchown(f.fileno(), st.st_uid, st.st_gid)
                except PermissionError:
                    raise FileWriteError(
                        f"cannot keep the owner of {path} ({st.st_uid}:{st.st_gid}); "
                        "run as root or as the file's owner"
                    ) from None
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Serialise edits: two `appliancectl` runs must not both read the old file."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError as e:
        raise FileWriteError(f"cannot open {directory}: {e.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
