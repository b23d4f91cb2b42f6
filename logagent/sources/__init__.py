"""Sources: where messages come from (log files, the host's vital signs)."""
