"""The exception hierarchy: one base, specific subclasses whose messages say what to do."""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "ApplianceError",
    "ConfigError",
    "ConfigErrors",
    "ControlError",
    "EnforcementError",
    "FilterError",
    "ParseError",
    "StoreError",
]


class ApplianceError(Exception):
    """Base of every error applianced raises on purpose."""


class ConfigError(ApplianceError):
    """The configuration is invalid. Names the file, the line (when known) and the key."""

    def __init__(self, path: Path | str, key: str, message: str, line: int | None = None) -> None:
        self.path = Path(path)
        self.key = key
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        what = f" [{key}]" if key else ""
        super().__init__(f"{where}:{what} {message}")


class ConfigErrors(ConfigError):
    """Several mistakes in one config file (``appliancectl check`` lists them all): ``errors``
    in the file's order; the attributes are the first one's, the message has one line each."""

    def __init__(self, errors: tuple[ConfigError, ...]) -> None:
        first = errors[0]
        super().__init__(first.path, first.key, first.message, first.line)
        self.errors = errors

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


class FilterError(ApplianceError):
    """A filter (failregex/ignoreregex) cannot be compiled or loaded."""


class ParseError(ApplianceError):
    """A syslog message could not be parsed. Raised by the sans-io parser only."""


class StoreError(ApplianceError):
    """The durable offenders store failed or is unusable."""


class EnforcementError(ApplianceError):
    """The enforcement backend (kernel firewall) refused an operation."""


class ControlError(ApplianceError):
    """A control request failed: the daemon is unreachable or refused the request."""
