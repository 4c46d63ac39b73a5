"""enforcement: ban decisions -> the world (nftables sets; ban mails with whois)."""
