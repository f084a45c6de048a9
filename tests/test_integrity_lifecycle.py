"""No false alarms through a lake's life (compaction, replay, restarts, checkpoints mid-run), and what warnings mean."""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path

import pytest
from confluent_kafka import Consumer
from support.integrity import (  # noqa: F401 - signing_key_fixture is autouse
    Keys,
    LakeRows,
    checkpoint_json,
    log_function_calls,
    log_operations,
    materialize,
    signing_key_fixture,
)

from conftest import Harness
from secureml.audit import AuditTrail
from secureml.integrity import VerificationResult, checkpointer_for, verify
from secureml.integrity.checkpointer import INTERVAL_ENV, checkpoint_topic
from secureml.integrity.keys import SIGNING_KEY_ENV, key_id, load_public_key
from secureml.integrity.merkle import consistency_holds
from secureml.integrity.result import (
    CHAIN_BROKEN,
    CHECKPOINT_UNREADABLE,
    NO_CHECKPOINT,
    NOT_CLOSED,
    NOT_COVERED,
    SIGNATURE_INVALID,
    UNTRUSTED_KEY,
)
from secureml.lake.table import Lake
from secureml.materializer.runner import Materializer
from secureml.stream.sources import EmbeddedSource


def intact(result: VerificationResult) -> bool:
    """Verified with nothing wrong and nothing unproven."""
    return result.ok and not result.all_findings() and all(op.status == "intact" for op in result.operations)


def grow(harness: Harness, rng: random.Random, rounds: int = 2, **options: object) -> None:
    """Log a few operations and materialise them, ``rounds`` times (each run is a restart)."""
    for _ in range(rounds):
        log_operations(harness, rng, 4, rng.randint(3, 12))
        log_function_calls(harness, 1)
        materialize(harness, **options)


def test_untouched_lake_verifies_on_both_transports(harness: Harness, signing_key: Keys) -> None:
    """A lake built through the transport verifies intact: every operation, every checkpoint."""
    grow(harness, random.Random(1), rounds=3)
    result = verify(harness.log_dir, public_key=signing_key.public)
    assert intact(result), [f.message for f in result.all_findings()]
    assert result.events == sum(op.events for op in result.operations) > 0
    assert [c.sequence for c in result.checkpoints] == [0, 1, 2]
    assert all(c.signature_valid and c.chain_intact and c.roots_match for c in result.checkpoints)
    assert result.summary()["status"] == "intact" and result.summary()["operations"] == 15


def test_compaction_keeps_verification_true(harness: Harness, signing_key: Keys) -> None:
    """Compaction re-sorts rows into one file; the trees and chains are rebuilt identically."""
    rng = random.Random(2)
    grow(harness, rng, rounds=2)
    lake = Lake(harness.log_dir)
    assert len(lake.snapshot().files) > 1
    while lake.compact(today="9999-12-31"):  # every partition counts as closed: merge it all
        pass
    assert len(lake.snapshot().files) == 1
    assert intact(verify(harness.log_dir, public_key=signing_key.public))
    grow(harness, rng, rounds=1)  # the next checkpoint extends the chain over the compacted lake
    result = verify(harness.log_dir, public_key=signing_key.public)
    assert intact(result) and len(result.checkpoints) == 3


def test_replay_from_offset_zero_keeps_verification_true(harness: Harness, signing_key: Keys) -> None:
    """A lake rebuilt by replay matches the checkpoints signed before, and the chain goes on after it."""
    rng = random.Random(3)
    grow(harness, rng, rounds=2)
    materialize(harness, replay=True)
    result = verify(harness.log_dir, public_key=signing_key.public)
    assert intact(result) and len(result.checkpoints) == 2  # nothing new to sign
    log_operations(harness, rng, 3, 5)
    materialize(harness, replay=True)
    result = verify(harness.log_dir, public_key=signing_key.public)
    assert intact(result) and len(result.checkpoints) == 3


def test_checkpoints_after_every_commit_keep_verification_true(
    harness: Harness, signing_key: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no interval, commits are checkpointed mid-run; the chain stays linear and true.

    Embedded, every commit is checkpointed on the run's thread. From Kafka, checkpoints run beside the commits and
    stop once the run is caught up (test_materializer_positions shows that part alone): how many are signed mid-run
    depends on the run's pace, so only each run's closing one is certain."""
    monkeypatch.setenv(INTERVAL_ENV, "0")
    grow(harness, random.Random(4), rounds=2, batch_events=7)
    result = verify(harness.log_dir, public_key=signing_key.public)
    assert intact(result)
    assert len(result.checkpoints) > (4 if harness.kind == "embedded" else 1)
    assert [c.sequence for c in result.checkpoints] == list(range(len(result.checkpoints)))


def test_a_never_closed_operation_is_a_warning_until_it_closes(embedded: Harness, signing_key: Keys) -> None:
    """An open operation warns without failing; once closed and checkpointed it is intact."""
    trail = AuditTrail("long_job", **embedded.options())
    trail.log_event("step", {"n": 1})
    trail.flush()
    materialize(embedded)
    result = verify(embedded.log_dir, public_key=signing_key.public)
    assert result.ok and [f.kind for f in result.warnings] == [NOT_CLOSED]
    assert result.operation(trail.operation_id).status == "warning"  # type: ignore[union-attr]
    trail.close()
    materialize(embedded)
    assert intact(verify(embedded.log_dir, public_key=signing_key.public))


def test_events_newer_than_the_last_checkpoint_are_a_warning(embedded: Harness, signing_key: Keys) -> None:
    """Events materialised after the last checkpoint are counted as not yet signed, without failing."""
    rng = random.Random(5)
    grow(embedded, rng, rounds=1)
    log_operations(embedded, rng, 2, 6)
    Materializer(Lake(embedded.log_dir), EmbeddedSource(embedded.log_dir), checkpointer=None).run(once=True)
    result = verify(embedded.log_dir, public_key=signing_key.public)
    assert result.ok and result.events_not_covered == 12
    assert [f.kind for f in result.warnings] == [NOT_COVERED]
    materialize(embedded)
    assert intact(verify(embedded.log_dir, public_key=signing_key.public))


def test_one_operation_can_be_verified_alone(embedded: Harness, signing_key: Keys) -> None:
    """verify(operation_id=...) checks that operation's chain and signed head, and ignores the others."""
    ids = log_operations(embedded, random.Random(6), 3, 6)
    materialize(embedded)
    rows = LakeRows.load(embedded.log_dir)
    for _path, row in rows.all():
        if row["operation_id"] == ids[1] and row["seq"] == 2:
            row["user"] = "mallory"
    rows.save()
    alone = verify(embedded.log_dir, public_key=signing_key.public, operation_id=ids[0])
    assert intact(alone) and [op.operation_id for op in alone.operations] == [ids[0]]
    assert all(c.roots_match is None for c in alone.checkpoints)
    tampered = verify(embedded.log_dir, public_key=signing_key.public, operation_id=ids[1])
    assert not tampered.ok and {f.seqs for f in tampered.errors} == {(2,)}


def test_the_lakes_own_key_verifies_with_a_warning_and_proves_nothing(
    embedded: Harness, signing_key: Keys, tmp_path: Path
) -> None:
    """Without --public-key the lake's copy is used, with a warning: a re-signed lake then passes, so give the key."""
    from test_integrity_campaign import rewrite_chain

    grow(embedded, random.Random(7), rounds=1)
    result = verify(embedded.log_dir)
    assert result.ok and [f.kind for f in result.warnings] == [UNTRUSTED_KEY]
    assert result.public_key.startswith("lake copy (untrusted)")
    rewrite_chain(LakeRows.load(embedded.log_dir), random.Random(0), tmp_path / "attacker.pem")
    assert verify(embedded.log_dir).ok  # the attacker's key now sits in the lake
    forged = verify(embedded.log_dir, public_key=signing_key.public)
    assert not forged.ok and {f.kind for f in forged.errors} == {SIGNATURE_INVALID}


def test_damage_to_the_checkpoint_chain_is_named(embedded: Harness, signing_key: Keys) -> None:
    """A removed, altered or unreadable checkpoint fails verification at that checkpoint."""
    grow(embedded, random.Random(8), rounds=4)
    directory = embedded.log_dir / "lake" / "_checkpoints"
    files = sorted(directory.glob("0*.json"))
    files[1].unlink()
    record = json.loads(files[0].read_text())
    files[0].write_text(json.dumps({**record, "created_at": "2020-01-01T00:00:00+00:00"}))
    record = json.loads(files[2].read_text())
    record["operations"][next(iter(record["operations"]))]["last_seq"] += 1
    files[2].write_text(json.dumps(record))
    files[3].write_text("{")
    result = verify(embedded.log_dir, public_key=signing_key.public)
    found = {(f.kind, f.checkpoint) for c in result.checkpoints for f in c.findings}
    assert (SIGNATURE_INVALID, 0) in found and (CHAIN_BROKEN, 2) in found and (SIGNATURE_INVALID, 2) in found
    assert (CHECKPOINT_UNREADABLE, None) in found
    assert not result.ok


def test_a_lake_without_checkpoints_fails_only_when_a_key_is_given(embedded: Harness, signing_key: Keys) -> None:
    """No checkpoint: a warning on its own, an error when the caller expected signatures."""
    log_operations(embedded, random.Random(9), 2, 4)
    Materializer(Lake(embedded.log_dir), EmbeddedSource(embedded.log_dir), checkpointer=None).run(once=True)
    unsigned = verify(embedded.log_dir)
    assert unsigned.ok and {f.kind for f in unsigned.warnings} == {NO_CHECKPOINT, NOT_COVERED}
    assert [f.kind for f in verify(embedded.log_dir, public_key=signing_key.public).errors] == [NO_CHECKPOINT]


def test_embedded_mode_creates_a_key_on_first_use_and_says_where(
    embedded: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Embedded mode's first checkpoint creates an owner-only key and names it once; the lake stays owner-only."""
    key = tmp_path / "fresh" / "signing_key.pem"
    monkeypatch.setenv(SIGNING_KEY_ENV, str(key))
    grow(embedded, random.Random(10), rounds=2)
    assert key.stat().st_mode & 0o077 == 0
    assert all(p.stat().st_mode & 0o077 == 0 for p in (embedded.log_dir / "lake" / "_checkpoints").rglob("*"))
    assert caplog.text.count(f"created a signing key for audit checkpoints at {key}") == 1
    assert intact(verify(embedded.log_dir, public_key=key.with_name("signing_key.pub.pem")))


def test_kafka_without_a_signing_key_runs_without_checkpoints(
    kafka: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Kafka mode never makes a key on its own: the materializer says so and the lake stays unsigned."""
    monkeypatch.setenv(SIGNING_KEY_ENV, str(tmp_path / "none" / "signing_key.pem"))
    log_operations(kafka, random.Random(11), 2, 4)
    materialize(kafka)
    assert "secureml-audit keygen" in caplog.text
    assert not (tmp_path / "none").exists() and not checkpoint_json(kafka.log_dir)
    assert [f.kind for f in verify(kafka.log_dir).warnings] == [NO_CHECKPOINT, NOT_COVERED]


def test_kafka_checkpoints_are_published_to_the_checkpoints_topic(kafka: Harness, signing_key: Keys) -> None:
    """Every checkpoint is also on <topic>-checkpoints: the same record, its C2SP note, a proof from the one before."""
    grow(kafka, random.Random(12), rounds=2)
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": f"check-{kafka.topic}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([checkpoint_topic(kafka.topic)])
    published = []
    try:
        for _ in range(100):
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                published.append(json.loads(message.value() or b"null"))
            if len(published) == 2:
                break
    finally:
        consumer.close()
    notes = [record.pop("note") for record in published]
    steps = [record.pop("consistency") for record in published]
    assert published == checkpoint_json(kafka.log_dir)
    stored = sorted((kafka.log_dir / "lake" / "_checkpoints").glob("*.note"))
    assert notes == [path.read_text() for path in stored]
    first, second = (record["log"] for record in published)
    assert steps[0] == {"old_size": 0, "proof": []} and steps[1]["old_size"] == first["tree_size"]
    assert consistency_holds(first["tree_size"], second["tree_size"], bytes.fromhex(first["root"]),
                             bytes.fromhex(second["root"]), [base64.b64decode(n) for n in steps[1]["proof"]])
    assert published[0]["key_id"] == key_id(load_public_key(signing_key.public))


def test_checkpointer_is_off_only_in_kafka_mode_without_a_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Embedded mode always gets a checkpointer (it makes its key); Kafka mode needs an existing key."""
    from secureml.audit.config import resolve_config

    monkeypatch.setenv(SIGNING_KEY_ENV, str(tmp_path / "absent.pem"))
    assert checkpointer_for(resolve_config(log_dir=tmp_path / "logs", bootstrap_servers="")) is not None
    assert not (tmp_path / "absent.pem").exists()  # made on the first checkpoint, not before
