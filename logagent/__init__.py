"""logagent: ship every line of every log file, and the host's vital signs, to Kafka."""

__version__ = "0.1.0"
