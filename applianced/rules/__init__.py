"""rules: (message, now) -> failures -> ban decisions. Pure: no clock, no I/O, no logging."""
