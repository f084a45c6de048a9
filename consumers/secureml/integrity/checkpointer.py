"""The materializer's checkpointer: signs what the lake holds, now and then and at the end of a run.

Each checkpoint extends the chain: it reads only the rows past the covered ``last_offset`` of
every source (from the files of one table version), appends their leaves to the stored
Merkle frontiers and records the chain heads of the operations they touch. A lock file in
``_checkpoints`` keeps the chain linear when several materializers share the lake. While a
replay rebuilds the lake, the lake holds less than the chain covered; no checkpoint is written
until it has caught up again.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from secureml.audit._fs import file_lock, make_private_dir
from secureml.audit.config import ENV_PREFIX, AuditConfig
from secureml.audit.timeutil import micros_to_iso, now_micros
from secureml.integrity.checkpoints import (
    ChainState,
    Checkpoint,
    OperationHead,
    SourceCoverage,
    canonical_json,
    checkpoint_dir,
    checkpoint_files,
    read_checkpoint,
    write_checkpoint,
    write_lake_public_key,
)
from secureml.integrity.exceptions import CheckpointError, IntegrityError, SigningKeyError
from secureml.integrity.keys import (
    default_key_path,
    generate_key,
    key_id,
    load_signing_key,
    public_key_path,
    public_pem,
    sign,
    signature_valid,
)
from secureml.integrity.lakerows import by_source, grouped, snapshot_rows
from secureml.integrity.merkle import extend_frontier, leaf_hashes, root_of_frontier
from secureml.lake.table import Lake

# Its warnings are notes the user must see (a key created, a checkpoint not written): with no
# logging configured, Python's last-resort handler still prints them on stderr.
log = logging.getLogger(__name__)

INTERVAL_ENV = ENV_PREFIX + "CHECKPOINT_INTERVAL"
DEFAULT_INTERVAL = 60.0
LOCK_FILE = ".lock"
CLOSED = "audit_closed"


def checkpoint_topic(topic: str) -> str:
    """The Kafka topic the checkpoints of an event topic are published to."""
    return f"{topic}-checkpoints"


class KafkaPublisher:
    """Publishes each checkpoint's signed JSON to ``<topic>-checkpoints`` (one partition, keyed by topic)."""

    def __init__(self, config: AuditConfig) -> None:
        from confluent_kafka import Producer

        from secureml.audit.transports.kafka import PRODUCER_DEFAULTS, ensure_topic

        self.topic = checkpoint_topic(config.topic)
        self._key = config.topic.encode()
        ensure_topic(config, self.topic, partitions=1)
        self._producer = Producer(
            {**PRODUCER_DEFAULTS, "bootstrap.servers": config.bootstrap_servers, **config.librdkafka_settings()}
        )

    def publish(self, checkpoint: Checkpoint) -> None:
        """Send one checkpoint and wait for it; a failure is reported, the lake keeps its copy."""
        errors: list[str] = []

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(err.str())

        self._producer.produce(self.topic, canonical_json(checkpoint.to_dict()), self._key, on_delivery=on_delivery)
        if self._producer.flush(30) or errors:
            log.warning("checkpoint #%d is stored in the lake but was not published to %s (%s); check the broker",
                        checkpoint.sequence, self.topic, errors[0] if errors else "timed out")


@dataclass(frozen=True)
class _Chain:
    """The chain as this process last extended it: the last file, its checkpoint, the folded state."""

    name: str
    last: Checkpoint
    state: ChainState


class LakeCheckpointer:
    """Writes signed checkpoints of a lake: at most every ``interval`` seconds after commits, and at the end."""

    def __init__(
        self, key_path: Path, *, create_key: bool, interval: float = DEFAULT_INTERVAL,
        publisher: KafkaPublisher | None = None,
    ) -> None:
        self.key_path = key_path
        self.create_key = create_key
        self.interval = interval
        self.publisher = publisher
        self._last_run = time.monotonic()
        self._behind_noted = False
        self._chain: _Chain | None = None

    def after_commit(self, lake: Lake) -> None:
        """Checkpoint if the interval has passed since the last one."""
        if time.monotonic() - self._last_run >= self.interval:
            self._checkpoint_reporting(lake)

    def finish(self, lake: Lake) -> None:
        """Checkpoint everything the lake holds at the end of a run."""
        self._checkpoint_reporting(lake)

    def _checkpoint_reporting(self, lake: Lake) -> None:
        # Ingestion must go on when a checkpoint fails: say why; the next one covers the rows.
        try:
            self.checkpoint(lake)
        except (IntegrityError, OSError, duckdb.Error) as exc:
            log.warning("checkpoint not written: %s", exc)

    def _signing_key(self) -> Ed25519PrivateKey:
        if self.create_key and not self.key_path.exists():
            try:
                generate_key(self.key_path)
                log.warning("created a signing key for audit checkpoints at %s (owner-only); its public key is %s: "
                            "give that to auditors, keep the private key safe", self.key_path,
                            public_key_path(self.key_path))
            except SigningKeyError:
                pass  # another process created it first: use that one
        return load_signing_key(self.key_path)

    def checkpoint(self, lake: Lake) -> Checkpoint | None:
        """Sign and store a checkpoint of what the lake holds now; None when nothing is new."""
        self._last_run = time.monotonic()
        key = self._signing_key()
        public = key.public_key()
        directory = make_private_dir(checkpoint_dir(lake.root))
        with file_lock(directory / LOCK_FILE):  # one chain, even with several materializers on this host
            previous, state = self._folded(lake.root, public)
            unsigned = self._next(lake, previous, state, key_id(public))
            if unsigned is None:
                return None
            checkpoint = replace(unsigned, signature=sign(key, unsigned.signed_bytes()))
            path = write_checkpoint(lake.root, checkpoint)
            write_lake_public_key(lake.root, public_pem(public))
            state.add(checkpoint)
            self._chain = _Chain(path.name, checkpoint, state)
        if self.publisher is not None:
            self.publisher.publish(checkpoint)
        return checkpoint

    def _folded(self, lake_root: Path, public: Ed25519PublicKey) -> tuple[Checkpoint | None, ChainState]:
        """The last checkpoint (checked before the chain grows from it) and the whole chain folded."""
        files = checkpoint_files(lake_root)
        if not files:
            return None, ChainState()
        last = read_checkpoint(files[-1])
        if last.checkpoint is None:
            raise CheckpointError(
                f"the last checkpoint {last.name} is unreadable ({last.problem}), so the chain cannot go on: "
                "run `secureml-audit verify` on the lake and restore the file from a backup or the Kafka topic"
            )
        checkpoint = last.checkpoint
        genuine = checkpoint.operations_intact() and signature_valid(public, checkpoint.signed_bytes(),
                                                                     checkpoint.signature)
        if checkpoint.key_id == key_id(public) and not genuine:
            raise CheckpointError(
                f"checkpoint {last.name} is not validly signed by this key: the lake's checkpoints were "
                "altered. Run `secureml-audit verify` on the lake"
            )
        cached = self._chain
        if cached is not None and cached.name == last.name and cached.last.digest() == checkpoint.digest():
            return checkpoint, cached.state
        state = ChainState()
        for stored in map(read_checkpoint, files):
            if stored.checkpoint is not None:
                state.add(stored.checkpoint)
        return checkpoint, state

    def _next(self, lake: Lake, previous: Checkpoint | None, state: ChainState, signer: str) -> Checkpoint | None:
        """The unsigned checkpoint that extends the chain with the rows added since it."""
        covered = {source: coverage for source, (_seq, coverage) in state.sources.items()}
        snapshot, rows = snapshot_rows(
            lake, ("operation_id", "seq", "event_type", "hash", "source", "source_offset"),
            "source_offset > coalesce(list_extract(?::BIGINT[], list_position(?::VARCHAR[], source)), -1)",
            [[c.last_offset for c in covered.values()], list(covered)],
        )
        behind = [s for s, c in covered.items() if (snapshot.position(s) or 0) <= c.last_offset]
        if behind:
            if not self._behind_noted:
                log.warning("no checkpoint for now: the lake holds less of %s than the checkpoints covered (a "
                            "replay is rebuilding it); one is written once it has caught up", behind[0])
                self._behind_noted = True
            return None
        if rows.num_rows == 0:
            return None
        return Checkpoint.new(
            sequence=previous.sequence + 1 if previous else 0,
            created_at=micros_to_iso(now_micros()),
            key_id=signer,
            sources=_extended(rows, covered),
            operations=_heads(rows),
            prev_checkpoint_hash=previous.digest() if previous else "",
            table_version=snapshot.version,
        )


def _extended(rows: pa.Table, covered: dict[str, SourceCoverage]) -> dict[str, SourceCoverage]:
    """New coverage of every source with rows past its old coverage."""
    spans, offsets, hashes = by_source(rows)
    extended: dict[str, SourceCoverage] = {}
    for source, (start, end) in spans.items():
        old = covered.get(source)
        size = old.tree_size if old else 0
        frontier = extend_frontier([bytes.fromhex(n) for n in old.frontier] if old else [], size,
                                   leaf_hashes(hashes.slice(start, end - start).to_pylist()))
        extended[source] = SourceCoverage(
            size + end - start, int(offsets[end - 1]), root_of_frontier(frontier).hex(),
            tuple(n.hex() for n in frontier),
        )
    return extended


def _heads(rows: pa.Table) -> dict[str, OperationHead]:
    """The last event of every operation among the rows."""
    operations = grouped(rows, "operation_id", "seq")
    take = pa.array(operations.order[operations.last])
    return {
        operations.names[group]: OperationHead(seq, digest, event_type == CLOSED)
        for group, seq, digest, event_type in zip(
            operations.group[operations.last].tolist(), rows.column("seq").take(take).to_pylist(),
            rows.column("hash").take(take).to_pylist(), rows.column("event_type").take(take).to_pylist(),
        )
    }


def checkpointer_for(config: AuditConfig) -> LakeCheckpointer | None:
    """The checkpointer of a materializer configuration (None in Kafka mode without a signing key).

    Embedded mode creates the key on first use. Kafka mode needs one made beforehand with
    ``secureml-audit keygen``: a key created inside a throwaway container would sign
    checkpoints nobody can verify later.
    """
    key_path = default_key_path()
    if key_path.is_relative_to(config.log_dir):
        raise SigningKeyError(
            f"the signing key {key_path} is inside the audit log directory {config.log_dir}: whoever can "
            "rewrite the lake could re-sign it. Move the key elsewhere and set SECUREML_AUDIT_SIGNING_KEY"
        )
    interval = float(os.environ.get(INTERVAL_ENV) or DEFAULT_INTERVAL)
    if config.transport == "embedded":
        return LakeCheckpointer(key_path, create_key=True, interval=interval)
    if not key_path.exists():
        log.warning("no signing key at %s: the lake gets no signed checkpoints. Create one with "
                    "`secureml-audit keygen` (or set SECUREML_AUDIT_SIGNING_KEY) and restart the materializer",
                    key_path)
        return None
    return LakeCheckpointer(key_path, create_key=False, interval=interval, publisher=KafkaPublisher(config))
