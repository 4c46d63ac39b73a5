"""conf: the TOML configuration file -> a frozen Config (see schema.py, load.py)."""
