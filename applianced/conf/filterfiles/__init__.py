"""Filter files read from disk: native TOML (native.py) and fail2ban .conf (fail2ban.py)."""
