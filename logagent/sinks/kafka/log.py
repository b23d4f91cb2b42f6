"""librdkafka's own log lines, through the agent's log (logger `logagent.librdkafka`).

The Kafka library's log adapter lives with the sink that configures it (as Filebeat's
outputs/kafka/log.go does). Each producer gets its own `LibrdkafkaLog`: nothing is attached to
a global logger at import, and a second producer does not reset the first one's clock.
- The same message (numbers aside) goes through at most once per `repeat` seconds: with the
  broker down librdkafka reports every failed reconnect, ten lines a second.
- Complaints that resolve themselves on a broker that is still starting ("Coordinator load in
  progress") are INFO during the producer's first `grace` seconds; later they keep WARNING.
"""

from __future__ import annotations

import logging
import re
import time


class RepeatFilter(logging.Filter):
    """Lets the same message (numbers aside) through once per `interval` seconds.

    librdkafka reports every failed reconnect; with the broker down that would be
    ten lines a second in the journal.
    """

    def __init__(self, interval: float = 30.0) -> None:
        super().__init__()
        self.interval = interval
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = re.sub(r"\d+", "#", record.getMessage())[:300]
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            return False
        if len(self._last) > 1000:
            self._last.clear()
        self._last[key] = now
        return True


class SettlingFilter(logging.Filter):
    """librdkafka's complaints that resolve themselves on a broker that is still starting
    ("Failed to acquire idempotence PID ... Coordinator load in progress") are INFO during the
    first `grace` seconds of a producer; past that they keep their WARNING."""

    TRANSIENT = ("Coordinator load in progress", "Failed to acquire idempotence PID",
                 "COORDINATOR_LOAD_IN_PROGRESS")

    def __init__(self, grace: float = 60.0) -> None:
        super().__init__()
        self.grace = grace
        self.started = time.monotonic()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and time.monotonic() - self.started < self.grace \
                and any(t in record.getMessage() for t in self.TRANSIENT):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


class LibrdkafkaLog:
    """What confluent-kafka's `logger` setting calls: `log(level, fmt, *args)`; one per producer."""

    def __init__(self, repeat: float = 30.0, grace: float = 60.0) -> None:
        self._logger = logging.getLogger("logagent.librdkafka")
        self._filters: list[logging.Filter] = [RepeatFilter(repeat), SettlingFilter(grace)]

    def log(self, level: int, msg: str, *args: object) -> None:
        if not self._logger.isEnabledFor(level):
            return
        record = self._logger.makeRecord(self._logger.name, level, "(librdkafka)", 0, msg, args, None)
        if all(f.filter(record) for f in self._filters):
            self._logger.handle(record)
