"""rules: (message, now) -> offences -> ban decisions (pure), and the durable offenders store."""
