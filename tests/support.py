"""The test kit's former name: everything here is tests.kit's. Kept only while bench/harness.py and
the two test files being changed elsewhere (tests/faults/test_rotation_outage.py,
tests/integration/test_hardening.py) still import it; new code imports tests.kit. Delete this file
when `grep -r tests.support` finds nothing else."""

from tests.kit import (
    ROOT,
    AgentProcess,
    KafkaReader,
    LineWriter,
    check_delivery,
    metric_sum,
    new_topic,
    parse_metrics,
    render_config,
    wait_until,
    write_config,
)

__all__ = ["ROOT", "AgentProcess", "KafkaReader", "LineWriter", "check_delivery", "metric_sum", "new_topic",
           "parse_metrics", "render_config", "wait_until", "write_config"]
