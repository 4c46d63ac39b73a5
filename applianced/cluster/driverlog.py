"""psycopg's log records (the standard ``logging`` module) as our log's events, at their
level, in the ``applianced.cluster.driver`` namespace: without it they would bypass our format
(Python's last-resort handler writes bare lines to stderr). The replicator installs it while it
runs."""

from __future__ import annotations

import logging

from twisted.logger import Logger, LogLevel

__all__ = ["DriverLog"]

log = Logger(namespace="applianced.cluster.driver")

_DRIVER = logging.getLogger("psycopg")
_LEVELS = {
    logging.DEBUG: LogLevel.debug,
    logging.INFO: LogLevel.info,
    logging.WARNING: LogLevel.warn,
    logging.ERROR: LogLevel.error,
    logging.CRITICAL: LogLevel.critical,
}


class DriverLog(logging.Handler):
    """Forwards psycopg's records, each on one line."""

    def install(self) -> None:
        _DRIVER.addHandler(self)
        _DRIVER.propagate = False

    def uninstall(self) -> None:
        _DRIVER.removeHandler(self)
        _DRIVER.propagate = True

    def emit(self, record: logging.LogRecord) -> None:
        level = _LEVELS.get(record.levelno, LogLevel.warn)
        log.emit(level, "psycopg: {message}", message=" ".join(self.format(record).split()))
