"""The hot path (issues 9, 11): nonces, per-subject sealers, the paused key-topic reader, batched delivery reports,
unrolled varints, the user encoded once per trail, the privacy step's per-type plan."""

from __future__ import annotations

import io
import itertools
import json
import os
import uuid

import fastavro

from secureml.audit import AuditTrail
from secureml.audit.codec import encode_long, encode_string
from secureml.audit.config import AuditConfig
from secureml.audit.privacy.keys import SubjectKey, pseudonym
from secureml.audit.privacy.protect import ENCRYPTED_PREFIX, encrypt, sealer
from secureml.audit.privacy.reveal import ERASED, Revealer
from secureml.audit.testing import capture_events
from secureml.audit.transports.kafka import KafkaTransport
from secureml.stream.decode import decode_one


class DictStore:
    """A key store in a dict (pure logic: the reader only asks it for keys by name)."""

    def __init__(self, keys: dict[str, SubjectKey]) -> None:
        self.keys = keys

    def get(self, name: str) -> SubjectKey | None:
        return self.keys.get(name)


def test_nonces_never_repeat_under_a_key_and_differ_between_loads() -> None:
    """A key's nonces are 12 bytes, distinct, counting up under one random part; a key loaded again draws another."""
    key = SubjectKey(os.urandom(32), "alice")
    nonces = [key.nonce() for _ in range(10_000)]
    assert all(len(n) == 12 for n in nonces)
    assert len(set(nonces)) == len(nonces)
    assert {n[:8] for n in nonces} == {nonces[0][:8]}
    assert [int.from_bytes(n[8:], "big") for n in nonces[:3]] == [0, 1, 2]
    again = SubjectKey(key.key, "alice")
    assert again.nonce()[:8] != nonces[0][:8]


def test_nonce_counter_about_to_wrap_draws_a_new_random_part() -> None:
    """Before the 32-bit counter wraps, the key draws a new random part: no nonce of the old one comes back."""
    key = SubjectKey(os.urandom(32), "alice")
    first = key.nonce()
    key._counter = itertools.count(0xFFFFFFFE)
    last_of_old = key.nonce()
    assert last_of_old == first[:8] + b"\xff\xff\xff\xfe"
    renewed = [key.nonce() for _ in range(3)]
    assert len({n[:8] for n in renewed}) == 1 and renewed[0][:8] != first[:8]
    assert first not in renewed and last_of_old not in renewed
    assert [int.from_bytes(n[8:], "big") for n in renewed] == [0, 1, 2]


def test_sealer_output_opens_with_the_reader_and_only_under_its_subject() -> None:
    """A per-subject sealer writes the reader's format (enc:v1:<pseudonym>:...); another subject's key opens nothing."""
    secret = os.urandom(32)
    alice, bob = pseudonym(secret, "alice"), pseudonym(secret, "bob")
    keys = {alice: SubjectKey(os.urandom(32), "alice"), bob: SubjectKey(os.urandom(32), "bob")}
    seal = sealer(keys[alice], alice)
    texts = [seal("application_1"), seal({"score": 0.7}), encrypt(keys[alice], alice, "application_1")]
    assert all(t.startswith(f"{ENCRYPTED_PREFIX}{alice}:") for t in texts)
    assert texts[0] != texts[2]  # fresh nonce per value
    reader = Revealer(DictStore(keys))  # type: ignore[arg-type]
    assert [reader.value(t) for t in texts] == ["application_1", {"score": 0.7}, "application_1"]
    forged = texts[0].replace(alice, bob, 1)  # the pseudonym is the associated data: bob's key must not open it
    assert reader.value(forged) == ERASED


def test_kafka_key_store_reads_on_after_pausing(kafka_bootstrap: str) -> None:
    """The key topic's reader is paused between reads, and a later read still sees a key another producer wrote."""
    from confluent_kafka import TopicPartition

    from secureml.audit.privacy.kafka_keys import KafkaKeyStore

    topic = f"hotpath-keys-{uuid.uuid4().hex[:8]}"
    first, second = KafkaKeyStore(kafka_bootstrap, topic), KafkaKeyStore(kafka_bootstrap, topic)
    secret = first.pseudonym_key()
    assert second.pseudonym_key() == secret
    alice, bob = pseudonym(secret, "alice"), pseudonym(secret, "bob")
    mine = first.get_or_create(alice, "alice")
    theirs = second.get_or_create(bob, "bob")
    assert first._consumer is not None
    partition = TopicPartition(topic, 0)
    first._consumer.resume([partition])  # resuming a paused partition is harmless; reading pauses it again
    seen = first.get(bob)
    assert seen is not None and seen.key == theirs.key and seen.subject == "bob"
    assert second.get(alice) is not None and second.get(alice).key == mine.key  # type: ignore[union-attr]
    assert first.get_or_create(alice, "alice").key == mine.key


def test_delivery_reports_of_interleaved_trails_settle_each_to_its_own_count(kafka_bootstrap: str,
                                                                               tmp_path: os.PathLike[str]) -> None:
    """Delivery reports counted per trail in batches: two interleaved trails on one producer each get exactly theirs."""
    config = AuditConfig(bootstrap_servers=kafka_bootstrap, topic=f"hotpath-{uuid.uuid4().hex[:8]}",
                         log_dir=tmp_path)
    transport = KafkaTransport(config)
    try:
        one = AuditTrail("one", transport=transport, privacy="off", log_dir=tmp_path)
        two = AuditTrail("two", transport=transport, privacy="off", log_dir=tmp_path)
        for i in range(700):  # several poll cadences, reports of both trails mixed in each
            one.log_model_inference("m", f"a{i}", "x", 0.5)
            if i % 3 == 0:
                two.log_model_inference("m", f"b{i}", "y", 0.5)
        report_two = two.close()
        report_one = one.close()
    finally:
        transport.close(30)
    assert (report_one.sent, report_one.delivered, report_one.failed) == (702, 702, 0)
    assert (report_two.sent, report_two.delivered, report_two.failed) == (236, 236, 0)


def fastavro_bytes(kind: str, value: object) -> bytes:
    """fastavro's encoding of one value (the reference for ours)."""
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, kind, value)
    return buf.getvalue()


def test_unrolled_varints_match_fastavro_at_every_boundary() -> None:
    """Longs and string lengths on both sides of the one-, two- and three-byte varint bounds encode as fastavro does."""
    longs = [n + d for n in (0, 63, 64, 1 << 13, 1 << 20, 1 << 48, 1 << 55, 1 << 62) for d in (-1, 0, 1)]
    for n in [*longs, *(-n for n in longs), 2**63 - 1, -(2**63)]:
        assert encode_long(n) == fastavro_bytes("long", n), n
    for size in (0, 63, 64, 95, 127, 128, 8191, 8192, 70_000):
        text = "é" * (size // 2) + "a" * (size % 2)  # multi-byte characters: the length counts bytes
        assert encode_string(text) == fastavro_bytes("string", text), size


def test_each_event_carries_its_own_user_when_users_alternate() -> None:
    """A trail encodes its user once, yet events logged for other users (or an equal string) carry their own."""
    alice_again = "".join(["ali", "ce"])  # equal to "alice", another object
    with capture_events() as captured:
        trail = AuditTrail("users", transport=captured.transport, user="svc", privacy="off", bootstrap_servers="")
        for user in (None, "alice", None, alice_again, "bob", None):
            trail.log_model_inference("m", "x", 1, user=user)
        trail.close()
    assert [decode_one(value)["user"] for _key, value in captured.transport.stored] == [
        "svc", "svc", "alice", "svc", "alice", "bob", "svc", "svc"]


def test_named_keys_inside_json_outputs_are_encrypted_and_other_outputs_kept() -> None:
    """With the policy on, an output object or list holding a named key gets that value encrypted; scalars stay."""
    with capture_events() as captured:
        trail = AuditTrail("outputs", transport=captured.transport, user="analyst_1", bootstrap_servers="")
        trail.log_model_inference("m", "x", {"email": "bob@example.com", "score": 1}, subject="customer_1")
        trail.log_model_inference("m", "x", [{"Name": "Bob"}], subject="customer_1")
        trail.log_model_inference("m", "x", "low_risk", subject="customer_1")
        trail.log_model_inference("m", "x", 0.25, subject="customer_1")
        trail.close()
    stored = [decode_one(value) for _key, value in captured.transport.stored][1:-1]
    first, second = (json.loads(event["output"]) for event in stored[:2])
    assert first["email"].startswith(ENCRYPTED_PREFIX) and first["score"] == 1
    assert second[0]["Name"].startswith(ENCRYPTED_PREFIX)
    assert [event["output"] for event in stored[2:]] == ['"low_risk"', "0.25"]
    assert all(event["input_data"].startswith(ENCRYPTED_PREFIX) for event in stored)
    assert b"bob@example.com" not in b"".join(value for _key, value in captured.transport.stored)
