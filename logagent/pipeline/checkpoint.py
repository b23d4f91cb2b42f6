"""A file's committed offset as exactly_once writes it to the offsets topic (docs/delivery.md).

One record per file whose offset moved goes into the same Kafka transaction as the file's
lines: when the transaction commits, the lines and the offset after them are in Kafka together;
when it aborts, neither is. The record's key is `<host id>/<uid>` (uid = device, inode and the
time the agent first saw the file: unique across inode reuse); its value is what the registry
needs to find the file again (its name, device, inode, fingerprint) and the offset every byte
before which is committed. Sources make them (the file source's Shipper), the transactional sink
writes and reads them, and the registry adopts them at start: this module is all they share.

A record keyed `<host id>/@txn` names the process that wrote the host's last committed
transaction and that transaction's sequence number: after a fatal producer error it tells which
open transactions committed, and whether another agent with the same id took over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import orjson

from logagent.pipeline.batch import Batch
from logagent.runtime.names import from_display, is_raw, wire_name

TXN_KEY = "@txn"


@dataclass(frozen=True)
class Checkpoint:
    """Every byte of the file before `offset` is committed to Kafka."""

    uid: str  # the file's unique id: f"{dev}-{ino}-{since in µs}" (registry.uid_of)
    path: str  # the name the file was collected under, as the OS takes it (as the registry keeps it)
    dev: int
    ino: int
    since: float
    fp: str
    fp_len: int
    offset: int
    size: int = 0  # bytes the agent knew the file had

    def key(self, host_id: str) -> bytes:
        return f"{host_id}/{self.uid}".encode()

    def value(self) -> bytes:
        data: dict[str, Any] = {"path": self.path, "dev": self.dev, "ino": self.ino, "since": self.since,
                                "fp": self.fp, "fp_len": self.fp_len, "offset": self.offset, "size": self.size}
        if is_raw(self.path):  # JSON holds no lone surrogates: the lossless escaped form instead
            data["path"], data["raw"] = wire_name(self.path), True
        return orjson.dumps(data)

    @classmethod
    def decode(cls, uid: str, value: bytes) -> Checkpoint:
        """Raises ValueError for a value that is not a checkpoint."""
        try:
            data: Any = orjson.loads(value)
            path = str(data["path"])
            return cls(uid=uid, path=from_display(path) if data.get("raw") else path, dev=int(data["dev"]),
                       ino=int(data["ino"]), since=float(data["since"]), fp=str(data["fp"]), fp_len=int(data["fp_len"]),
                       offset=int(data["offset"]), size=int(data.get("size", 0)))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a checkpoint record ({type(exc).__name__}: {exc})") from None


@runtime_checkable
class Checkpointed(Protocol):
    """A batch owner whose offsets exactly_once commits with its lines (the file source's Shipper)."""

    def checkpoint(self, batch: Batch) -> Checkpoint | None:
        """The record for the owner's offset once `batch` (its last in a transaction) commits; None
        when the batch says nothing about the file's offset any more (a rewind started anew)."""


def split_key(key: bytes, host_id: str) -> str | None:
    """The uid (or TXN_KEY) of a record of this host, None for another host's record."""
    prefix = f"{host_id}/".encode()
    if not key.startswith(prefix):
        return None
    try:
        return key[len(prefix):].decode()
    except UnicodeDecodeError:
        return None
