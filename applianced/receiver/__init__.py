"""receiver: bytes -> SyslogMessage (sans-io parsing and framing, Twisted listeners)."""
