"""The config file an offline verb reads (``check``, ``explain --config``, ``store recover``,
the cluster verbs): loaded, or refused as a ``CliError`` (exit 2) that lists every mistake with
its place, for the human and for ``--json``. Called by those verbs' modules.
"""

from __future__ import annotations

from pathlib import Path

from applianced.cli.client import CliError
from applianced.conf.load import load_config
from applianced.conf.schema import Config
from applianced.errors import ConfigError, ConfigErrors

__all__ = ["load"]


def load(path: Path) -> Config:
    """The config at ``path``; a CliError naming each mistake when the loader refuses it."""
    try:
        return load_config(path)
    except ConfigErrors as e:
        raise CliError.config(e, f"{len(e.errors)} errors in {path}:\n{e}") from None
    except ConfigError as e:
        raise CliError.config(e) from None
