"""MessageLimits with a fake cluster (an AdminClient stand-in) and a fake clock: the topic's own
max.message.bytes wins, larger or smaller than the broker's message.max.bytes; a topic not created
yet gets the broker's; a cluster that cannot be asked gives Kafka's default; every answer is kept
REFRESH seconds (a guess only RETRY) and `forget` asks again. `usable` leaves room for the framing.
Against a real broker the limits are exercised by the sink's integration tests."""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import ConfigResource, ResourceType

from logagent.sinks.kafka.limits import KAFKA_DEFAULT, REFRESH, RETRY, MessageLimits, usable
from tests.kit import wait_until

BROKER_LIMIT = 2_000_000  # not Kafka's default, so that a test tells them apart

Answer = dict[str, str] | BaseException


def denied() -> KafkaException:
    return KafkaException(KafkaError(KafkaError.CLUSTER_AUTHORIZATION_FAILED))


def unknown_topic() -> KafkaException:
    return KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))


class FakeFuture:
    """A DescribeConfigs future: the config entries, or the error that result() raises."""

    def __init__(self, answer: Answer, hold: threading.Event | None) -> None:
        self.answer, self.hold = answer, hold

    def result(self, timeout: float | None = None) -> dict[str, Any]:
        if self.hold is not None:
            self.hold.wait(10)
        if isinstance(self.answer, BaseException):
            raise self.answer
        return {name: SimpleNamespace(value=value) for name, value in self.answer.items()}


class FakeCluster:
    """What MessageLimits asks of an AdminClient: metadata (the broker ids) and DescribeConfigs of
    one broker or one topic. `asked` lists every request; `down` fails the metadata request;
    `hold`, when given, makes DescribeConfigs (of `hold_kind` only, when given) wait until it is set."""

    def __init__(self) -> None:
        self.brokers: dict[int, object] = {1: object()}
        self.configs: dict[tuple[ResourceType, str], Answer] = {
            (ResourceType.BROKER, "1"): {"message.max.bytes": str(BROKER_LIMIT)},
        }
        self.down = False
        self.asked: list[tuple[str, str]] = []
        self.made: list[dict[str, Any]] = []  # the configuration of each admin client made
        self.hold: threading.Event | None = None
        self.hold_kind: ResourceType | None = None

    def topic(self, name: str, answer: Answer) -> None:
        self.configs[(ResourceType.TOPIC, name)] = answer

    def broker(self, answer: Answer) -> None:
        self.configs[(ResourceType.BROKER, "1")] = answer

    def __call__(self, conf: dict[str, Any]) -> FakeCluster:  # the admin_factory
        self.made.append(conf)
        return self

    def list_topics(self, timeout: float | None = None) -> Any:
        self.asked.append(("metadata", ""))
        if self.down:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))
        return SimpleNamespace(brokers=dict(self.brokers))

    def describe_configs(self, resources: list[ConfigResource], request_timeout: float | None = None) -> Any:
        (res,) = resources
        self.asked.append((res.restype.name.lower(), res.name))
        hold = self.hold if self.hold_kind in (None, res.restype) else None
        return {res: FakeFuture(self.configs.get((res.restype, res.name), unknown_topic()), hold)}

    def topic_asks(self, name: str) -> int:
        return self.asked.count(("topic", name))

    def broker_asks(self) -> int:
        return sum(kind == "broker" for kind, _ in self.asked)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def limits(cluster: FakeCluster, clock: Clock) -> MessageLimits:
    return MessageLimits({"bootstrap.servers": "127.0.0.1:9"}, admin_factory=cluster, clock=clock)


# ---- usable


@pytest.mark.parametrize("limit", [100_000, KAFKA_DEFAULT, 16_777_216])
@pytest.mark.parametrize("key_len", [0, 40])
def test_usable_leaves_room_for_framing_key_and_compression(limit: int, key_len: int):
    value = usable(limit, key_len)
    # The value and its key, lz4's worst case on incompressible bytes (+0.5 %), and 512 bytes of
    # batch and record headers fit the limit ...
    assert value * 1.005 + key_len + 512 <= limit
    # ... and not much more is given away than that.
    assert value >= limit * 0.99 - key_len - 512


def test_usable_never_goes_below_one_kibibyte():
    assert usable(600, 0) == 1024
    assert usable(2000, 1000) == 1024


# ---- the topic's limit and the broker's


def test_the_topics_own_limit_wins_larger_or_smaller_than_the_brokers(cluster: FakeCluster,
                                                                      limits: MessageLimits):
    cluster.topic("big", {"max.message.bytes": "8388608"})
    cluster.topic("small", {"max.message.bytes": "100000"})
    assert limits.lookup("big") == 8_388_608
    assert limits.lookup("small") == 100_000


def test_a_topic_not_created_yet_gets_the_brokers_limit_until_it_exists(cluster: FakeCluster, clock: Clock,
                                                                       limits: MessageLimits):
    assert limits.lookup("new") == BROKER_LIMIT  # auto-create will give it the broker's
    cluster.topic("new", {"max.message.bytes": "300000"})
    clock.now += RETRY - 1
    assert limits.cached("new") == BROKER_LIMIT
    clock.now += 1
    assert limits.cached("new") is None  # a guess is kept RETRY seconds, not REFRESH
    assert limits.lookup("new") == 300_000


def test_a_topic_that_times_out_gets_the_brokers_limit_for_a_while(cluster: FakeCluster, clock: Clock,
                                                                   limits: MessageLimits):
    cluster.topic("slow", TimeoutError())
    assert limits.lookup("slow") == BROKER_LIMIT
    clock.now += RETRY
    assert limits.cached("slow") is None


def test_a_topic_we_may_not_describe_gets_the_brokers_limit(cluster: FakeCluster, limits: MessageLimits):
    cluster.topic("locked", KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)))
    assert limits.lookup("locked") == BROKER_LIMIT


def test_the_topics_limit_is_used_when_the_broker_may_not_be_described(cluster: FakeCluster,
                                                                        limits: MessageLimits):
    """ACLs that allow DescribeConfigs on the topic but not on the cluster: the topic's own
    limit is known, and is the one that counts."""
    cluster.broker(denied())
    cluster.topic("logs", {"max.message.bytes": "8388608"})
    assert limits.lookup("logs") == 8_388_608


def test_nothing_described_at_all_gives_kafkas_default(cluster: FakeCluster, clock: Clock,
                                                       limits: MessageLimits):
    cluster.broker(denied())
    assert limits.lookup("new") == KAFKA_DEFAULT
    cluster.broker({"message.max.bytes": str(BROKER_LIMIT)})  # the ACLs fixed: asked again soon
    clock.now += RETRY
    assert limits.lookup("new") == BROKER_LIMIT


# ---- a cluster that cannot be asked


def test_a_cluster_that_is_down_gives_kafkas_default_then_is_asked_again(
        cluster: FakeCluster, clock: Clock, limits: MessageLimits, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG, logger="logagent.producer")
    cluster.down = True
    cluster.topic("logs", {"max.message.bytes": "500000"})
    assert limits.lookup("logs") == KAFKA_DEFAULT
    assert any("cannot ask the cluster for the message size limit of logs" in r.getMessage()
               for r in caplog.records)
    cluster.down = False
    clock.now += RETRY - 1
    assert limits.lookup("logs") == KAFKA_DEFAULT  # not asked again meanwhile
    clock.now += 1
    assert limits.lookup("logs") == 500_000


def test_a_broker_describe_that_times_out_gives_kafkas_default(cluster: FakeCluster, limits: MessageLimits):
    cluster.broker(TimeoutError())
    cluster.topic("logs", {"max.message.bytes": "500000"})
    assert limits.lookup("logs") == KAFKA_DEFAULT
    assert cluster.topic_asks("logs") == 0  # a slow cluster is not waited for twice


@pytest.mark.parametrize("spoil", ["no brokers", "not a number", "no such entry"])
def test_a_malformed_answer_gives_kafkas_default(cluster: FakeCluster, limits: MessageLimits, spoil: str):
    if spoil == "no brokers":
        cluster.brokers = {}
    elif spoil == "not a number":
        cluster.broker({"message.max.bytes": "lots"})
    else:
        cluster.broker({})
    assert limits.lookup("new") == KAFKA_DEFAULT


def test_an_admin_client_that_cannot_be_made_gives_kafkas_default(clock: Clock):
    def refuse(conf: dict[str, Any]) -> Any:
        raise KafkaException(KafkaError(KafkaError._INVALID_ARG, "No such configuration property"))

    limits = MessageLimits({"bootstrap.servers": "127.0.0.1:9"}, admin_factory=refuse, clock=clock)
    assert limits.lookup("logs") == KAFKA_DEFAULT


# ---- what is kept, and for how long


def test_cached_never_asks_the_cluster(cluster: FakeCluster, limits: MessageLimits):
    """`cached` runs on the event loop: it answers from memory or says "ask"."""
    assert limits.cached("logs") is None
    assert cluster.made == [] and cluster.asked == []


def test_an_answer_is_kept_refresh_seconds(cluster: FakeCluster, clock: Clock, limits: MessageLimits):
    cluster.topic("logs", {"max.message.bytes": "500000"})
    assert limits.lookup("logs") == 500_000
    asked = len(cluster.asked)
    cluster.topic("logs", {"max.message.bytes": "400000"})  # changed by an operator
    clock.now += REFRESH - 1
    assert limits.cached("logs") == 500_000
    assert limits.lookup("logs") == 500_000
    assert len(cluster.asked) == asked
    clock.now += 1
    assert limits.cached("logs") is None
    assert limits.lookup("logs") == 400_000


def test_the_brokers_limit_is_asked_once_for_many_topics(cluster: FakeCluster, clock: Clock,
                                                          limits: MessageLimits):
    for name in ("a", "b", "c"):
        limits.lookup(name)
    assert cluster.broker_asks() == 1
    clock.now += REFRESH
    limits.lookup("d")
    assert cluster.broker_asks() == 2


def test_forget_asks_again_before_the_next_message(cluster: FakeCluster, limits: MessageLimits):
    """The broker refused a message for its size: its limit was lowered since the last answer."""
    cluster.topic("logs", {"max.message.bytes": "500000"})
    cluster.broker({"message.max.bytes": "3000000"})
    assert limits.lookup("logs") == 500_000
    assert limits.lookup("new") == 3_000_000
    cluster.topic("logs", {"max.message.bytes": "200000"})
    cluster.broker({"message.max.bytes": "1000000"})
    limits.forget("logs")
    assert limits.cached("logs") is None
    assert limits.lookup("logs") == 200_000
    limits.forget("new")
    assert limits.lookup("new") == 1_000_000  # the broker's limit is asked again too


def test_concurrent_lookups_of_one_topic_ask_once(cluster: FakeCluster, limits: MessageLimits):
    cluster.topic("logs", {"max.message.bytes": "500000"})
    cluster.hold = threading.Event()
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(limits.lookup("logs"))) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: cluster.asked, what="the first lookup to ask")
    finally:
        cluster.hold.set()
        for t in threads:
            t.join(10)
    assert results == [500_000] * 3
    assert cluster.topic_asks("logs") == 1


def test_a_forget_meanwhile_does_not_spoil_a_lookup_under_way(cluster: FakeCluster, limits: MessageLimits):
    """The loop may `forget` (a message refused for its size) while a worker thread looks up
    another topic: that lookup still answers with the broker's limit it has just learned."""
    cluster.hold, cluster.hold_kind = threading.Event(), ResourceType.TOPIC
    results: list[int] = []
    worker = threading.Thread(target=lambda: results.append(limits.lookup("new")))
    worker.start()
    try:
        wait_until(lambda: cluster.topic_asks("new"), what="the lookup to ask for the topic")
        limits.forget("other")
    finally:
        cluster.hold.set()
        worker.join(10)
    assert results == [BROKER_LIMIT]


# ---- the admin client's configuration


def test_the_admin_client_gets_the_connection_settings_without_the_producers_callbacks(cluster: FakeCluster,
                                                                                       clock: Clock):
    conf = {"bootstrap.servers": "127.0.0.1:9", "security.protocol": "SASL_SSL", "sasl.username": "u",
            "error_cb": lambda err: None, "logger": logging.getLogger("elsewhere")}
    MessageLimits(conf, admin_factory=cluster, clock=clock).lookup("logs")
    (made,) = cluster.made
    assert made["bootstrap.servers"] == "127.0.0.1:9"
    assert made["security.protocol"] == "SASL_SSL" and made["sasl.username"] == "u"
    assert "error_cb" not in made
    assert made["logger"] is logging.getLogger("logagent.librdkafka")
    assert conf["logger"] is logging.getLogger("elsewhere")  # the producer's own is not changed
