"""The durable store of offenders: its interfaces, the SQLite backend and its migrations."""
