"""The Kafka connectivity probe behind /readyz.

The sink learns that the broker answers from delivery reports, and that it is gone from
librdkafka's "all brokers down"; an agent with nothing to send hears neither (a broker
that came back stays "not reachable"). Every EVERY seconds the probe asks the cluster
for metadata, which sets the sink's `connected` flag and the kafka_up metric.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from logagent.runtime.supervise import spawn

EVERY = 5.0  # seconds between two probes
TIMEOUT = 2.0  # short: a metadata request runs in a thread that cannot be cancelled, and shutdown waits for it


class Probed(Protocol):
    """What the probe needs of the Kafka sink."""

    def check_connection(self, timeout: float = ...) -> bool: ...


class KafkaProbe:
    """Runs `sink.check_connection` off the event loop every EVERY seconds, from start() to stop()."""

    def __init__(self, sink: Probed, every: float = EVERY, timeout: float = TIMEOUT) -> None:
        self.sink, self.every, self.timeout = sink, every, timeout
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = spawn("kafka probe", "kafka_probe", self._run)

    async def stop(self) -> None:
        """Cancel the loop. A metadata request under way goes on in its thread (threads cannot
        be cancelled) and the interpreter's exit waits for it: hence the short TIMEOUT."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.to_thread(self.sink.check_connection, self.timeout)
            await asyncio.sleep(self.every)
