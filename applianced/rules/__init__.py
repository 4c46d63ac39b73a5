"""rules: (message, now) -> offences -> ban decisions; pure: no Twisted, sqlite3, sockets, files."""
