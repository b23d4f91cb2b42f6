"""The test kit: the one home of what the tests share (the stack's fixtures are in
tests/integration/conftest.py).

From devstack/, the harness the tests share with bench/ (bench/ never imports tests/):
- devstack.waiting: `wait_until` (from a thread), `eventually` (from an `async def` test;
  pytest-asyncio runs those, in auto mode: no hand-rolled `asyncio.run` helpers)
- devstack.agentproc: `AgentProcess` (the agent as a real process), `write_config`, `render_config`,
  `http_get`
- devstack.promtext: `parse_metrics` and `metric_sum`, the one /metrics parser
- devstack.kafkaread: `KafkaReader` (`.data()`: the lines), `new_topic`, `read_topic`, `read_all`,
  `wait_delivered`
- devstack.delivery: `LineWriter`, `tally`/`Tally`, `tally_delivered`, `check_delivery`
- devstack.kubelet: the fake kubelet: `PodTree` (pods' container logs written and rotated as the
  runtime and the kubelet do), `KubeletServer` (its /pods endpoint), `tally_pods` (line by line,
  per container and stream, with the pod's identity)
Here, for the tests only:
- servers: `start_or_fail`, `running` (started for a block, always stopped), `make_certs`, `etcdctl`,
  `enable_etcd_auth` (and its root password, ETCD_ROOT_PASSWORD)
- fakes: `RecordingAgent`, what a control plane drives
- files: `file_fingerprint`, a file's identity as the registry records it
- compiled: `need_compiled`, a test of one of the agent's C modules fails in CI when it is not built

Import from `tests.kit`; the modules are how it is arranged, not an interface.
"""

from devstack.agentproc import ROOT, AgentProcess, http_get, render_config, write_config
from devstack.delivery import LineWriter, Tally, check_delivery, tally, tally_delivered
from devstack.kafkaread import KafkaReader, new_topic, read_all, read_topic, wait_delivered
from devstack.kubelet import KubeletServer, PodTally, PodTree, tally_pods
from devstack.promtext import metric_sum, parse_metrics, split_sample
from devstack.waiting import eventually, wait_until
from tests.kit.compiled import need_compiled
from tests.kit.fakes import RecordingAgent
from tests.kit.files import file_fingerprint
from tests.kit.servers import ETCD_ROOT_PASSWORD, enable_etcd_auth, etcdctl, make_certs, running, start_or_fail

__all__ = [
    "ETCD_ROOT_PASSWORD",
    "ROOT",
    "AgentProcess",
    "KafkaReader",
    "KubeletServer",
    "LineWriter",
    "PodTally",
    "PodTree",
    "RecordingAgent",
    "Tally",
    "check_delivery",
    "enable_etcd_auth",
    "etcdctl",
    "eventually",
    "file_fingerprint",
    "http_get",
    "make_certs",
    "metric_sum",
    "need_compiled",
    "new_topic",
    "parse_metrics",
    "read_all",
    "read_topic",
    "render_config",
    "running",
    "split_sample",
    "start_or_fail",
    "tally",
    "tally_delivered",
    "tally_pods",
    "wait_delivered",
    "wait_until",
    "write_config",
]
