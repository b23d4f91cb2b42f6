"""The test kit: the one home of what the tests share (the stack's fixtures are in
tests/integration/conftest.py).

- waiting: `wait_until` (from a thread), `eventually` (from an `async def` test; pytest-asyncio
  runs those, in auto mode: no hand-rolled `asyncio.run` helpers)
- agent: `AgentProcess` (the agent as a real process), `write_config`, `render_config`, `http_get`
- metrics: `parse_metrics` and `metric_sum`, the one /metrics parser (bench/ uses it too)
- kafka: `KafkaReader` (`.data()`: the lines), `new_topic`, `read_topic`, `read_all`, `wait_delivered`
- delivery: `LineWriter`, `tally`/`Tally`, `tally_delivered`, `check_delivery`
- servers: `start_or_fail`, `running` (started for a block, always stopped), `make_certs`
- fakes: `RecordingAgent`, what a control plane drives

Import from `tests.kit`; the modules are how it is arranged, not an interface.
"""

from tests.kit.agent import ROOT, AgentProcess, http_get, render_config, write_config
from tests.kit.delivery import LineWriter, Tally, check_delivery, tally, tally_delivered
from tests.kit.fakes import RecordingAgent
from tests.kit.kafka import KafkaReader, new_topic, read_all, read_topic, wait_delivered
from tests.kit.metrics import metric_sum, parse_metrics, split_sample
from tests.kit.servers import make_certs, running, start_or_fail
from tests.kit.waiting import eventually, wait_until

__all__ = [
    "ROOT", "AgentProcess", "KafkaReader", "LineWriter", "RecordingAgent", "Tally", "check_delivery", "eventually",
    "http_get", "make_certs", "metric_sum", "new_topic", "parse_metrics", "read_all", "read_topic",
    "render_config", "running", "split_sample", "start_or_fail", "tally", "tally_delivered", "wait_delivered",
    "wait_until", "write_config",
]
