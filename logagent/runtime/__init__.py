"""The process around the pipeline: signals, supervision, the status server, systemd, atomic writes."""
