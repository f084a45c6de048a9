"""The materializer's checkpointer: signs what the lake holds, now and then and at the end of a run.

Each checkpoint extends the chain: it reads only the rows past the covered ``last_offset`` of
every source (from the files of one table version), appends their leaves to the stored
Merkle frontiers and records the chain heads of the operations they touch. A lock file in
``_checkpoints`` keeps the chain linear when several materializers share the lake. While a
replay rebuilds the lake, the lake holds less than the chain covered; no checkpoint is written
until it has caught up again.

Each checkpoint also extends the log tree (``logtree``) and stores its C2SP checkpoint note,
signed by the same key, as ``<sequence>.note``; with witnesses configured (``cosigning``) the
note is then submitted to each of them and their cosignatures are appended to it. A witness
that is down or refuses costs a warning, never a checkpoint; the latest checkpoint is offered
again at the next one.
"""

from __future__ import annotations

import base64
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from secureml.audit._fs import file_lock, make_private_dir
from secureml.audit.config import ENV_PREFIX, AuditConfig
from secureml.audit.timeutil import micros_to_iso, now_micros
from secureml.integrity import logtree
from secureml.integrity.checkpoints import (
    ChainState,
    Checkpoint,
    LogTree,
    OperationHead,
    SourceCoverage,
    canonical_json,
    checkpoint_dir,
    checkpoint_files,
    read_checkpoint,
    read_note,
    stored_checkpoints,
    write_checkpoint,
    write_lake_public_key,
    write_note,
)
from secureml.integrity.cosigning import WitnessClient, parse_witnesses, witnesses_from_env
from secureml.integrity.exceptions import (
    CheckpointError,
    CheckpointPublishError,
    IntegrityError,
    SigningKeyError,
    WitnessConfigError,
)
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
from secureml.integrity.merkle import (
    LEAF_SIZE,
    consistency_proof_with,
    extend_frontier,
    leaf_block,
    new_ranges,
    root_of_frontier,
)
from secureml.integrity.notes import SignedNote, valid_name
from secureml.integrity.rowstore import BATCH_ROWS, spilling_connection
from secureml.integrity.topicwitness import KAFKA, collect_cosignatures
from secureml.integrity.treehead import sign_tree_head
from secureml.lake.catalog import events_sql
from secureml.lake.table import Lake

# Its warnings are notes the user must see (a key created, a checkpoint not written): with no
# logging configured, Python's last-resort handler still prints them on stderr.
log = logging.getLogger(__name__)

INTERVAL_ENV = ENV_PREFIX + "CHECKPOINT_INTERVAL"
DEFAULT_INTERVAL = 60.0
LOCK_FILE = ".lock"
CLOSED = "audit_closed"
# How long publishing one checkpoint to its topic may wait for the broker.
_PUBLISH_TIMEOUT = 30.0


def checkpoint_topic(topic: str) -> str:
    """The Kafka topic the checkpoints of an event topic are published to."""
    return f"{topic}-checkpoints"


class KafkaPublisher:
    """Publishes each checkpoint's signed JSON to ``<topic>-checkpoints`` (one partition, keyed by topic)."""

    def __init__(self, config: AuditConfig) -> None:
        from secureml.audit.transports.kafka import ConfirmedProducer, ensure_topic

        self.config = config
        self.topic = checkpoint_topic(config.topic)
        self._key = config.topic.encode()
        ensure_topic(config, self.topic, partitions=1)
        self._producer = ConfirmedProducer(config, self.topic)

    def publish(
        self, checkpoint: Checkpoint, note: SignedNote | None = None, consistency: tuple[int, list[bytes]] | None = None
    ) -> None:
        """Send one checkpoint and wait for it (bounded); CheckpointPublishError says why it was not
        published (a refusal names the principal and the ACL to grant); the lake keeps its copy.

        With its C2SP note and the consistency proof from the previous checkpoint's log tree
        (old size, nodes): what a witness reading the topic needs (``topicwitness``).
        """
        record = checkpoint.to_dict() | ({} if note is None else {"note": note.encode()}) | ({} if consistency is None
            else {"consistency": {"old_size": consistency[0],
                                  "proof": [base64.b64encode(n).decode() for n in consistency[1]]}})
        self._producer.send(canonical_json(record), self._key)
        confirmation = self._producer.confirm(_PUBLISH_TIMEOUT)
        if not confirmation.ok:
            why = confirmation.failures[0] if confirmation.failures else f"not confirmed within {_PUBLISH_TIMEOUT:.0f}s"
            raise CheckpointPublishError(
                f"checkpoint #{checkpoint.sequence} is stored in the lake but was not published to Kafka topic "
                f"{self.topic!r}: {why}. The next checkpoint covers its events; fix this and witnesses reading "
                "the topic catch up")

    def close(self) -> None:
        """Release the producer (its callbacks hold it in a cycle the collector frees only later)."""
        self._producer.close(5.0)


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
        publisher: KafkaPublisher | None = None, witnesses: WitnessClient | None = None,
    ) -> None:
        self.key_path = key_path
        self.create_key = create_key
        self.interval = interval
        self.publisher = publisher
        self.witnesses = witnesses
        self._last_run = time.monotonic()
        self._behind_noted = False
        self._chain: _Chain | None = None
        # The newest checkpoint this process wrote and the consistency proof (old size, nodes) from the
        # one before it: what a witness that cosigned the one before needs, without reading the lake.
        self._fresh: tuple[Checkpoint, tuple[int, list[bytes]]] | None = None

    def after_commit(self, lake: Lake) -> None:
        """Checkpoint if the interval has passed since the last one."""
        if time.monotonic() - self._last_run >= self.interval:
            self._checkpoint_reporting(lake)

    def finish(self, lake: Lake) -> None:
        """Checkpoint everything the lake holds at the end of a run, then let go of the publisher's connections."""
        self._checkpoint_reporting(lake)
        if self.publisher is not None:
            self.publisher.close()

    def _checkpoint_reporting(self, lake: Lake) -> None:
        # Ingestion must go on when a checkpoint fails: say why; the next one covers the rows.
        try:
            self.checkpoint(lake)
        except CheckpointPublishError as exc:
            log.warning("%s", exc)  # written and signed; only the topic's copy is missing
        except (IntegrityError, OSError, duckdb.Error) as exc:
            log.warning("checkpoint not written: %s", exc)
            return
        try:
            self._cosign_latest(lake)
        except (IntegrityError, OSError, duckdb.Error) as exc:
            log.warning("checkpoint not offered to the witnesses: %s", exc)

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
            extension = self._next(lake, previous, state, key_id(public),
                                   prove=self.publisher is not None or self.witnesses is not None)
            if extension is None:
                return None
            unsigned, step = extension
            checkpoint = replace(unsigned, signature=sign(key, unsigned.signed_bytes()))
            path = write_checkpoint(lake.root, checkpoint)
            assert checkpoint.log is not None
            note = sign_tree_head(checkpoint.log.head(), key)
            write_note(lake.root, checkpoint.sequence, note)
            write_lake_public_key(lake.root, public_pem(public))
            state.add(checkpoint)
            self._chain = _Chain(path.name, checkpoint, state)
        if self.publisher is not None or self.witnesses is not None:
            self._fresh = (checkpoint, step)
            if self.publisher is not None:
                self.publisher.publish(checkpoint, note, step)
        return checkpoint

    def _cosign_latest(self, lake: Lake) -> None:
        """Offer the newest checkpoint's note to every configured witness that has not cosigned it yet."""
        if self.witnesses is None:
            return
        files = checkpoint_files(lake.root)
        checkpoint = read_checkpoint(files[-1]).checkpoint if files else None
        if checkpoint is None or checkpoint.log is None:
            return
        note = read_note(lake.root, checkpoint.sequence)
        if note is None:
            raise CheckpointError(f"checkpoint #{checkpoint.sequence} has no note file to offer to witnesses")
        missing = [w for w in self.witnesses.witnesses if not note.by(w.key)]
        by_topic = [w for w in missing if w.url == KAFKA]
        if by_topic and self.publisher is not None:
            collect_cosignatures(self.publisher.config, lake.root, by_topic)
        missing = [w for w in missing if w.url != KAFKA]
        if not missing:
            return
        fresh = self._fresh[1] if self._fresh is not None and self._fresh[0].digest() == checkpoint.digest() else None
        size = checkpoint.log.tree_size
        rows: list[pa.Table] = []

        def proof(old: int) -> list[bytes]:
            if old == 0 or old == size:
                return []
            if fresh is not None and old == fresh[0]:
                return fresh[1]
            if not rows:  # a witness that missed checkpoints: prove from the lake's rows (read once)
                rows.append(logtree.lake_rows(lake))
            chain = [s.checkpoint for s in stored_checkpoints(lake.root)
                     if s.checkpoint is not None and s.checkpoint.sequence <= checkpoint.sequence]
            return logtree.consistency_proof(rows[0], chain, old, size)[2]

        cosignatures = self.witnesses.cosign(note, fresh[0] if fresh is not None else 0, proof, only=missing)
        if cosignatures:
            with file_lock(checkpoint_dir(lake.root) / LOCK_FILE):  # another process may add its own meanwhile
                current = read_note(lake.root, checkpoint.sequence) or note
                write_note(lake.root, checkpoint.sequence, current.with_signatures(cosignatures))

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

    def _next(
        self, lake: Lake, previous: Checkpoint | None, state: ChainState, signer: str, *, prove: bool
    ) -> tuple[Checkpoint, tuple[int, list[bytes]]] | None:
        """The unsigned checkpoint that extends the chain with the rows added since it, and (with ``prove``)
        the consistency proof (previous log size, nodes) from the previous checkpoint's log tree to its.

        The new rows are never held at once: DuckDB finds their chain heads and streams their
        leaves in log order, sorting out of core within ``rowstore.MEMORY_LIMIT``.
        """
        covered = {source: coverage for source, (_seq, coverage) in state.sources.items()}
        snapshot = lake.snapshot()
        behind = [s for s, c in covered.items() if (snapshot.position(s) or 0) <= c.last_offset]
        if behind:
            if not self._behind_noted:
                log.warning("no checkpoint for now: the lake holds less of %s than the checkpoints covered (a "
                            "replay is rebuilding it); one is written once it has caught up", behind[0])
                self._behind_noted = True
            return None
        with spilling_connection(lake.log_dir, "checkpoint") as con:
            events = events_sql(con, lake, snapshot)
            if events is None:
                return None
            con.register("coverage", pa.table({
                "source": pa.array(list(covered), pa.large_string()),
                "last_offset": pa.array([c.last_offset for c in covered.values()], pa.int64())}))
            con.execute(f"""
                CREATE TEMP VIEW new_rows AS
                SELECT e.operation_id, e.seq, e.event_type, e.hash, e.source, e.source_offset
                FROM ({events}) e LEFT JOIN coverage c ON e.source = c.source
                WHERE e.source_offset > coalesce(c.last_offset, -1)""")
            count = int(con.execute("SELECT count(*) FROM new_rows").fetchall()[0][0])
            if count == 0:
                return None
            origin, size, frontier = _log_start(lake, previous, signer)
            proved = prove and previous is not None and previous.log is not None
            tree = logtree.LogFold(new_ranges(size, size + count) if proved else (), size, list(frontier))
            sources = _extended(con.sql("SELECT source, source_offset, hash FROM new_rows "
                                        "ORDER BY source, source_offset").to_arrow_reader(BATCH_ROWS), covered, tree)
            heads = _heads(con)
        step = (size, consistency_proof_with(frontier, size, tree.size, tree.hashes)) if proved else (0, [])
        return Checkpoint.new(
            sequence=previous.sequence + 1 if previous else 0,
            created_at=micros_to_iso(now_micros()),
            key_id=signer,
            sources=sources,
            operations=heads,
            prev_checkpoint_hash=previous.digest() if previous else "",
            table_version=snapshot.version,
            log=LogTree(origin, tree.size, tree.root.hex(), tuple(n.hex() for n in tree.frontier)),
        ), step


def _log_start(lake: Lake, previous: Checkpoint | None, signer: str) -> tuple[str, int, list[bytes]]:
    """Origin, size and frontier of the log tree the new leaves extend (rebuilt from the lake when the chain
    began before log trees)."""
    if previous is None:
        origin, size, frontier = logtree.default_origin(signer), 0, []
    elif previous.log is not None:
        origin, size = previous.log.origin, previous.log.tree_size
        frontier = [bytes.fromhex(n) for n in previous.log.frontier]
    else:
        chain = [s.checkpoint for s in stored_checkpoints(lake.root) if s.checkpoint is not None]
        tree = logtree.grown(logtree.lake_rows(lake), chain)
        origin, size, frontier = logtree.default_origin(signer), tree.size, tree.frontier
        log.warning("the lake's checkpoints now also sign a log tree (%s, %d events so far) for witnesses",
                    origin, size)
    if not valid_name(origin):
        raise CheckpointError(f"{logtree.ORIGIN_ENV}={origin!r}: a log origin must be non-empty, without spaces or "
                              "'+' (it names the log's note key), e.g. example.com/audit/prod")
    return origin, size, frontier


def _extended(
    batches: Iterable[pa.RecordBatch], covered: dict[str, SourceCoverage], tree: logtree.LogFold
) -> dict[str, SourceCoverage]:
    """New coverage of every source with rows past its old coverage; their leaves go onto ``tree``.

    ``batches`` hold (source, source_offset, hash) ordered by source, then offset: log-tree order.
    """
    extended: dict[str, SourceCoverage] = {}
    source, size, frontier, last = "", 0, list[bytes](), -1

    def close() -> None:
        if source:
            extended[source] = SourceCoverage(size, last, root_of_frontier(frontier).hex(),
                                              tuple(n.hex() for n in frontier))

    for batch in batches:
        runs = pc.run_end_encode(batch.column(0))
        start = 0
        for name, end in zip(runs.values.to_pylist(), runs.run_ends.to_pylist()):
            if name != source:
                close()
                old = covered.get(name)
                source, size = name, old.tree_size if old else 0
                frontier = [bytes.fromhex(n) for n in old.frontier] if old else []
            leaves = leaf_block(batch.column(2).slice(start, end - start))
            frontier = extend_frontier(frontier, size, leaves)
            size += len(leaves) // LEAF_SIZE
            last = int(batch.column(1)[end - 1].as_py())
            tree.extend(leaves)
            start = end
    close()
    return extended


def _heads(con: duckdb.DuckDBPyConnection) -> dict[str, OperationHead]:
    """The last event of every operation among the new rows (``new_rows``)."""
    return {
        operation_id: OperationHead(seq, digest, event_type == CLOSED)
        for operation_id, seq, digest, event_type in con.execute(
            "SELECT operation_id, max(seq), arg_max(hash, seq), arg_max(event_type, seq) FROM new_rows "
            "GROUP BY operation_id").fetchall()
    }


def checkpointer_for(config: AuditConfig, witnesses: Sequence[str] | None = None, *, interval: float | None = None
                     ) -> LakeCheckpointer | None:
    """The checkpointer of a materializer configuration (None in Kafka mode without a signing key).

    ``interval``: seconds between checkpoints after commits, unless ``$SECUREML_AUDIT_CHECKPOINT_INTERVAL`` says
    (default DEFAULT_INTERVAL).

    ``witnesses`` are ``URL VKEY`` pairs (default: ``$SECUREML_AUDIT_WITNESSES``) to submit each
    checkpoint to. Embedded mode creates the key on first use. Kafka mode needs one made beforehand with
    ``secureml-audit keygen``: a key created inside a throwaway container would sign
    checkpoints nobody can verify later.
    """
    key_path = default_key_path()
    # Resolved first: "log_dir/../log_dir/key.pem" or a symlinked folder must not slip past the rule.
    if key_path.resolve().is_relative_to(config.log_dir.resolve()):
        raise SigningKeyError(
            f"the signing key {key_path} is inside the audit log directory {config.log_dir}: whoever can "
            "rewrite the lake could re-sign it. Move the key elsewhere and set SECUREML_AUDIT_SIGNING_KEY"
        )
    interval = float(os.environ.get(INTERVAL_ENV) or interval or DEFAULT_INTERVAL)
    endpoints = witnesses_from_env() if witnesses is None else parse_witnesses(witnesses)
    client = WitnessClient(endpoints) if endpoints else None
    if config.transport == "embedded" and any(w.url == KAFKA for w in endpoints):
        raise WitnessConfigError("--witness kafka: a witness reading the checkpoints topic needs Kafka mode "
                           "(--bootstrap-servers); give an embedded lake's witnesses as http(s) URLs")
    if config.transport == "embedded":
        return LakeCheckpointer(key_path, create_key=True, interval=interval, witnesses=client)
    if not key_path.exists():
        log.warning("no signing key at %s: the lake gets no signed checkpoints. Create one with "
                    "`secureml-audit keygen` (or set SECUREML_AUDIT_SIGNING_KEY) and restart the materializer",
                    key_path)
        return None
    return LakeCheckpointer(key_path, create_key=False, interval=interval, publisher=KafkaPublisher(config),
                            witnesses=client)
