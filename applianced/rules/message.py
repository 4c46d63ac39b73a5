"""SyslogMessage: what the receiver hands to the rules engine.

ARCHITECTURE. Owned by rules/ because it is the engine's input: the receiver (one layer up)
creates it from bytes, the rules and the appliance read it; nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["SyslogMessage"]


@dataclass(slots=True)
class SyslogMessage:
    """One syslog message, parsed; read-only by convention (nothing writes a field after the
    parse). Not ``frozen``: a frozen dataclass sets each field through ``object.__setattr__``,
    which costs 1.1 us a message on the hot path, a fifth of a whole parse.

    ``timestamp`` is the time written in the message (aware, or None); it is kept for display
    only. Windows and bans run on ``received_at`` (POSIX seconds, from the injected clock).
    ``sender`` is the address of the peer that delivered the message (the socket's, never the
    forgeable HOSTNAME field); None when the message did not come over a socket (a file).
    """

    facility: int
    severity: int
    timestamp: datetime | None
    hostname: str | None
    app_name: str | None
    procid: str | None
    msgid: str | None
    structured_data: str | None
    msg: str
    sender: str | None = None
    transport: str | None = None
    received_at: float = 0.0

    @property
    def line(self) -> str:
        """The traditional one-line form fail2ban filters expect after their date."""
        host = self.hostname or "-"
        app = self.app_name or "-"
        pid = f"[{self.procid}]" if self.procid else ""
        return f"{host} {app}{pid}: {self.msg}"
