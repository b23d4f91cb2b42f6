"""exactly_once: the compacted offsets topic (`[kafka] offsets_topic`), made sure of and read back.

The topic holds, per host and file, the offset committed with the file's lines
(pipeline/checkpoint.py). It must be compacted (`cleanup.policy=compact`): only the last
record of a key matters, and a time or size retention would forget files that stay idle for
long. It is created so when missing; one that exists with another policy is refused (the
agent stops at start, saying why, rather than trust offsets Kafka may delete). A host's records all go
to one partition (crc32 of the host id), so a start reads that partition only, with
`isolation.level=read_committed`: what aborted transactions wrote is never seen.
"""

from __future__ import annotations

import logging
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from logagent.errors import ConfigError, KafkaError
from logagent.pipeline.checkpoint import TXN_KEY, Checkpoint, split_key

log = logging.getLogger("logagent.producer")

# The connection and security keys a consumer or admin client shares with the producer; the
# producer's own keys (acks, linger.ms ...) would only make librdkafka warn.
_SHARED_PREFIXES = ("bootstrap.servers", "security.protocol", "sasl.", "ssl.", "ssl_", "client.id",
                    "socket.", "broker.", "client.dns.lookup", "reconnect.", "api.version", "metadata.")


def client_config(producer_conf: dict[str, Any]) -> dict[str, Any]:
    """The keys of a producer's configuration that another client of the same cluster needs."""
    return {k: v for k, v in producer_conf.items()
            if not callable(v) and k != "logger" and k.startswith(_SHARED_PREFIXES)}


@dataclass(frozen=True)
class TxnRecord:
    """Who wrote this host's last committed transaction, and its sequence number."""

    instance: str
    seq: int
    started: float = 0.0

    def value(self) -> bytes:
        return orjson.dumps({"instance": self.instance, "seq": self.seq, "started": self.started})

    @classmethod
    def decode(cls, value: bytes) -> TxnRecord | None:
        try:
            data = orjson.loads(value)
            return cls(str(data["instance"]), int(data["seq"]), float(data.get("started", 0.0)))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


@dataclass
class Committed:
    """What a read of the host's partition found: the last checkpoint of each file, and the
    last transaction record."""

    checkpoints: dict[str, Checkpoint]
    txn: TxnRecord | None
    records: int = 0  # the host's records read (a key read twice counts twice)
    bad: int = 0  # records of the host that are not checkpoints (logged)


def new_instance() -> str:
    """This process's id in the transaction record (random: it names a process, not a message)."""
    return uuid.uuid4().hex


class OffsetsTopic:
    """The offsets topic for one host; blocking calls, run them in a worker thread."""

    def __init__(self, producer_conf: dict[str, Any], topic: str, host_id: str,
                 admin_factory: Callable[[dict[str, Any]], AdminClient] = AdminClient) -> None:
        self.topic = topic
        self.host_id = host_id
        self._conf = client_config(producer_conf)
        self._admin_factory = admin_factory
        self.partitions = 0

    @property
    def partition(self) -> int:
        """The partition of this host's records."""
        return zlib.crc32(self.host_id.encode()) % max(1, self.partitions)

    def ensure(self, timeout: float = 10.0) -> None:
        """Create the topic compacted if missing; refuse one that is not compacted (ConfigError).
        KafkaError(retriable) when the cluster does not answer."""
        admin = self._admin_factory(dict(self._conf, logger=logging.getLogger("logagent.librdkafka")))
        deadline = time.monotonic() + timeout
        created = False
        while True:
            try:
                md = admin.list_topics(timeout=max(1.0, deadline - time.monotonic()))
            except KafkaException as exc:
                raise KafkaError(f"offsets topic {self.topic}: no metadata: {exc.args[0].str()}",
                                 retriable=True) from exc
            info = md.topics.get(self.topic)
            if info is not None and info.error is None and info.partitions:
                break
            if info is None and not created:
                self._create(admin, timeout)
                created = True
            if time.monotonic() > deadline:
                raise KafkaError(f"offsets topic {self.topic}: not in the metadata within {timeout:g}s",
                                 retriable=True)
            time.sleep(0.2)
        self._check_compacted(admin, timeout)
        self.partitions = len(info.partitions)

    def _create(self, admin: AdminClient, timeout: float) -> None:
        topic = NewTopic(self.topic, num_partitions=-1, replication_factor=-1,
                         config={"cleanup.policy": "compact"})
        try:
            admin.create_topics([topic], request_timeout=timeout)[self.topic].result(timeout)
            log.info("offsets topic %s created (cleanup.policy=compact)", self.topic)
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() != RdKafkaError.TOPIC_ALREADY_EXISTS:
                raise KafkaError(f"offsets topic {self.topic}: cannot create it: {err.str()}",
                                 retriable=err.retriable()) from exc

    def _check_compacted(self, admin: AdminClient, timeout: float) -> None:
        resource = ConfigResource(ResourceType.TOPIC, self.topic)
        try:
            configs = admin.describe_configs([resource], request_timeout=timeout)[resource].result(timeout)
        except KafkaException as exc:
            raise KafkaError(f"offsets topic {self.topic}: cannot describe it: {exc.args[0].str()}",
                             retriable=True) from exc
        entry = configs.get("cleanup.policy")
        policy = entry.value if entry is not None else ""
        if policy != "compact":
            raise ConfigError(f"[kafka] offsets_topic {self.topic} exists with cleanup.policy={policy}: it must "
                              "be compact (only then does Kafka keep the last offset of every file for as long "
                              "as it is needed); set it with kafka-configs.sh --alter --add-config "
                              "cleanup.policy=compact, or name another topic")

    def read(self, timeout: float = 30.0) -> Committed:
        """This host's committed records, read with read_committed from the beginning of its
        partition to its end (the last stable offset). KafkaError(retriable) on a timeout."""
        consumer = Consumer(dict(self._conf, **{
            "group.id": f"logagent-offsets-{self.host_id}", "enable.auto.commit": False,
            "isolation.level": "read_committed", "enable.partition.eof": True,
            "auto.offset.reset": "earliest", "logger": logging.getLogger("logagent.librdkafka"),
            # The end of the partition is told by a fetch that finds nothing new, which the broker
            # holds for fetch.wait.max.ms (500 ms by default) first: a start paid it twice.
            "fetch.wait.max.ms": 10}))
        out = Committed({}, None)
        try:
            # Offset 0, not OFFSET_BEGINNING: that one is looked up first, and a consumer whose
            # metadata has not come yet retries the lookup only after 500 ms (measured: the first
            # record came 0.55 s after assign(), 0.05 s from offset 0). A log start past 0 resets
            # to the earliest record (auto.offset.reset).
            consumer.assign([TopicPartition(self.topic, self.partition, 0)])
            deadline = time.monotonic() + timeout
            while True:
                if time.monotonic() > deadline:
                    raise KafkaError(f"offsets topic {self.topic}: not read to its end within {timeout:g}s",
                                     retriable=True)
                # consume() returns when it has num_messages or at its timeout: a short timeout, or a
                # partition smaller than num_messages cost the whole timeout at every call (a
                # start read a nearly empty partition in 1.5 s with 0.5).
                for msg in consumer.consume(num_messages=10000, timeout=0.05):
                    err = msg.error()
                    if err is not None:
                        if err.code() == RdKafkaError._PARTITION_EOF:
                            return out
                        if err.fatal() or not err.retriable():
                            raise KafkaError(f"offsets topic {self.topic}: {err.str()}", retriable=True)
                        continue
                    self._take(out, msg.key(), msg.value())
        finally:
            consumer.close()

    def _take(self, out: Committed, key: bytes | None, value: bytes | None) -> None:
        uid = split_key(key or b"", self.host_id)
        if uid is None:
            return  # another host's record
        out.records += 1
        if uid == TXN_KEY:
            out.txn = TxnRecord.decode(value) if value is not None else None
            return
        if value is None:
            out.checkpoints.pop(uid, None)  # a tombstone: the file is forgotten
            return
        try:
            out.checkpoints[uid] = Checkpoint.decode(uid, value)
        except ValueError as exc:
            out.bad += 1
            log.warning("offsets topic %s: record %s of this host ignored: %s", self.topic, uid, exc)
