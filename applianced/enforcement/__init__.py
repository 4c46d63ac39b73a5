"""enforcement: ban decisions -> the world (kernel sets; later, mail)."""
