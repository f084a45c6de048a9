"""Retention with legal hold: expired events leave the lake, held ones stay, verify tells expiry from tampering."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from support.integrity import Keys, materialize, signing_key_fixture  # noqa: F401 - signing_key_fixture is autouse
from support.retention import Logged, days_ago, log_mixed

from conftest import Harness, run_cli
from secureml.audit import AuditTrail, connect, get_audit_logs
from secureml.audit.exceptions import AuditValidationError
from secureml.integrity import verify
from secureml.integrity.keys import SIGNING_KEY_ENV, generate_key, key_id, load_signing_key, sign
from secureml.integrity.merkle import MerkleTree, leaf_hashes
from secureml.integrity.result import LOG_DELETED, MISSING
from secureml.lake.table import Lake
from secureml.retention import add_hold, apply_retention, list_holds, load_policy, remove_hold, stored_subject
from secureml.retention.records import RetentionRecord, stored_records
from secureml.retention.verification import NOT_EXPIRED, RECORD_INVALID, RECORD_UNSIGNED

POLICY = {"event_types": {"model_inference": "6mo", "compliance_check": "7y"}, "default": "keep"}


@pytest.fixture
def mixed(embedded: Harness, monkeypatch: pytest.MonkeyPatch, signing_key: Keys) -> Logged:
    """A materialised, checkpointed embedded lake of year-old and fresh operations."""
    logged = log_mixed(embedded, monkeypatch)
    materialize(embedded)
    return logged


def rows_of(log_dir: Path, operation_id: str) -> list[tuple[int, str]]:
    """(seq, event_type) of an operation's events as readers see them."""
    return [(e["seq"], e["event_type"]) for e in get_audit_logs(operation_id=operation_id, log_dir=log_dir)]


def retention_root(log_dir: Path) -> Path:
    """The lake's retention folder."""
    return log_dir / "lake" / "_retention"


def test_expired_rows_are_gone_and_verify_passes_reporting_the_expiry(
    embedded: Harness, mixed: Logged, signing_key: Keys
) -> None:
    """Inference events past 6 months leave every reader; chains with an expired middle verify; expiry reported."""
    result = apply_retention(embedded.log_dir, POLICY)
    assert result.events == 5 and result.counts == {"model_inference": 5} and result.signed
    assert result.table_version_after == result.table_version_before + 1 and result.files_vacuumed >= 1
    assert rows_of(embedded.log_dir, mixed.old) == [(0, "audit_started"), (5, "compliance_check"), (6, "audit_closed")]
    assert [t for _s, t in rows_of(embedded.log_dir, mixed.fresh)] == ["audit_started", "model_inference",
                                                                       "audit_closed"]
    con = connect(embedded.log_dir)
    assert con.execute("SELECT count(*) FROM events WHERE event_type = 'model_inference'").fetchall() == [(1,)]
    verified = verify(embedded.log_dir, public_key=signing_key.public)
    assert verified.ok and verified.verdict == "intact", [f.message for f in verified.errors]
    assert verified.expired_events == 5 and verified.events == 9
    assert verified.retention and "5 events expired under retention record #0" in verified.retention[0]
    assert verified.operation(mixed.old).status == "intact"
    # Nothing is left on disk to read them from: the removed data files were vacuumed.
    for path in (embedded.log_dir / "lake" / "events").rglob("*.parquet"):
        assert "application-0" not in pq.read_table(path).column("input_data").to_pylist()


def test_the_record_built_two_rows_at_a_time_equals_the_whole_computation(
    embedded: Harness, mixed: Logged, signing_key: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Judged and ordered a batch at a time, the removed events and their Merkle root are those of the whole lake."""
    import secureml.retention.apply as apply_module

    monkeypatch.setattr(apply_module, "SCAN_BATCH_ROWS", 2)
    moment = dt.datetime.now(dt.UTC)
    policy = {"default": "1y"}
    con = duckdb.connect()
    con.register("events", DeltaTable(Lake(embedded.log_dir).uri).to_pyarrow_table())
    expected = con.sql(f"SELECT source, source_offset, hash FROM events WHERE "
                       f"{load_policy(policy).expired_sql(moment, 'duckdb')} ORDER BY source, source_offset").fetchall()
    result = apply_retention(embedded.log_dir, policy, now=moment)
    record = stored_records(retention_root(embedded.log_dir))[0].record
    removed = pq.read_table(retention_root(embedded.log_dir) / "records" / record.body["removed"]["file"])
    assert result.events == record.body["removed"]["rows"] == len(expected) == 11
    assert [tuple(r.values()) for r in removed.select(["source", "source_offset", "hash"]).to_pylist()] == expected
    hashes = [h for _s, _o, h in expected]
    assert record.body["removed"]["merkle_root"] == MerkleTree(leaf_hashes(hashes)).root(len(hashes)).hex()
    assert not (retention_root(embedded.log_dir) / apply_module.SPILL_DIR).exists()  # the unordered rows, gone
    verified = verify(embedded.log_dir, public_key=signing_key.public)
    assert verified.ok and verified.expired_events == 11, [f.message for f in verified.errors]


def test_legal_holds_keep_rows_by_operation_and_by_subject_and_later_records_chain(
    embedded: Harness, mixed: Logged, signing_key: Keys
) -> None:
    """Holds on an operation, a data subject (user_id) and a user keep their events; lifted, they expire."""
    everything_old = {"default": "1y"}
    add_hold(embedded.log_dir, "operation_id", mixed.old, "case 2026-17")
    add_hold(embedded.log_dir, "subject", "subject-7")
    first = apply_retention(embedded.log_dir, everything_old)
    assert len(rows_of(embedded.log_dir, mixed.old)) == 7  # held by operation
    assert rows_of(embedded.log_dir, mixed.old_subject) == [(2, "user_request")]  # held by its data subject
    assert len(rows_of(embedded.log_dir, mixed.fresh)) == 3 and first.events == 3
    assert remove_hold(embedded.log_dir, "operation_id", mixed.old)
    add_hold(embedded.log_dir, "subject", "svc")  # the user of every event of the old operation
    assert apply_retention(embedded.log_dir, everything_old).events == 0
    assert len(rows_of(embedded.log_dir, mixed.old)) == 7
    assert remove_hold(embedded.log_dir, "subject", "svc") and not remove_hold(embedded.log_dir, "subject", "svc")
    held = [(h.kind, h.value) for h in list_holds(embedded.log_dir)]
    assert held == [("subject", stored_subject("subject-7", embedded.log_dir))] and held[0][1].startswith("ps_")
    assert b"subject-7" not in (embedded.log_dir / "lake" / "_retention" / "holds.json").read_bytes()  # a pseudonym
    assert apply_retention(embedded.log_dir, everything_old).events == 7
    assert rows_of(embedded.log_dir, mixed.old) == []
    verified = verify(embedded.log_dir, public_key=signing_key.public)
    assert verified.ok and verified.expired_events == 10 and len(verified.retention) == 2, \
        [f.message for f in verified.errors]
    assert [r.record.sequence for r in stored_records(retention_root(embedded.log_dir)) if r.record] == [0, 1]


def test_deleting_a_row_that_is_not_expired_fails_verification_and_names_it(
    embedded: Harness, mixed: Logged, signing_key: Keys
) -> None:
    """A row removed with deltalake outside retention fails verify, located by operation and seq."""
    apply_retention(embedded.log_dir, POLICY)
    fresh_inference = get_audit_logs(operation_id=mixed.fresh, log_dir=embedded.log_dir)[1]
    old_check = get_audit_logs(operation_id=mixed.old, event_type="compliance_check", log_dir=embedded.log_dir)[0]
    DeltaTable(Lake(embedded.log_dir).uri).delete(
        f"event_id IN ('{fresh_inference['event_id']}', '{old_check['event_id']}')")
    verified = verify(embedded.log_dir, public_key=signing_key.public)
    assert not verified.ok
    missing = {(f.operation_id, f.seqs) for f in verified.errors if f.kind == MISSING}
    assert missing == {(mixed.fresh, (1,)), (mixed.old, (5,))}, [f.message for f in verified.errors]
    assert verified.expired_events == 5  # the genuine expiry is still told apart


def _edit_record(log_dir: Path) -> None:
    path = stored_records(retention_root(log_dir))[0].path
    raw = json.loads(path.read_text())
    raw["events"] = 1
    path.write_text(json.dumps(raw))


def _edit_removed(log_dir: Path) -> None:
    path = next(retention_root(log_dir).glob("records/*.removed.parquet"))
    table = pq.read_table(path)
    pq.write_table(table.slice(1), path)


def _resign_with_another_key(log_dir: Path) -> None:
    stored = stored_records(retention_root(log_dir))[0]
    other = generate_key(log_dir.parent / "other" / "key.pem")
    body = {**stored.record.body, "key_id": key_id(other.public_key())}
    forged = RetentionRecord(body, sign(other, RetentionRecord(body).signed_bytes()))
    stored.path.write_text(json.dumps(forged.to_dict()))


@pytest.mark.parametrize("forge", [_edit_record, _edit_removed, _resign_with_another_key],
                         ids=["edited-record", "edited-removed-events", "signed-by-another-key"])
def test_a_forged_or_edited_retention_record_fails_verification(
    embedded: Harness, mixed: Logged, signing_key: Keys, forge: object
) -> None:
    """An altered record (or events file, or foreign signature) vouches for nothing: its removals show as deletions."""
    apply_retention(embedded.log_dir, POLICY)
    forge(embedded.log_dir)  # type: ignore[operator]
    verified = verify(embedded.log_dir, public_key=signing_key.public)
    assert not verified.ok and verified.expired_events == 0
    assert any(f.kind == RECORD_INVALID for f in verified.errors)
    assert any(f.kind == MISSING and f.operation_id == mixed.old for f in verified.errors)


def test_a_signed_record_that_removed_unexpired_events_fails_verification(
    embedded: Harness, mixed: Logged, signing_key: Keys
) -> None:
    """A record whose own policy did not expire what it lists (signed, yet wrong) fails, located."""
    apply_retention(embedded.log_dir, POLICY)
    stored = stored_records(retention_root(embedded.log_dir))[0]
    key = load_signing_key(signing_key.private)
    policy = {**stored.record.body["policy"], "event_types": {"model_inference": "keep"}}
    body = {**stored.record.body, "policy": policy}
    stored.path.write_text(json.dumps(RetentionRecord(body, sign(key, RetentionRecord(body).signed_bytes())).to_dict()))
    verified = verify(embedded.log_dir, public_key=signing_key.public)
    assert not verified.ok
    assert {(f.operation_id, f.seqs) for f in verified.errors if f.kind == NOT_EXPIRED} >= {(mixed.old, (1,))}


def test_dry_run_changes_nothing(embedded: Harness, mixed: Logged) -> None:
    """--dry-run counts what would expire and writes nothing: same table version, no record, same rows."""
    lake = Lake(embedded.log_dir)
    version = lake.snapshot().version
    result = apply_retention(embedded.log_dir, POLICY, dry_run=True)
    assert result.dry_run and result.events == 5 and result.record is None
    assert Lake(embedded.log_dir).snapshot().version == version
    assert not list(retention_root(embedded.log_dir).glob("records/*"))
    assert len(rows_of(embedded.log_dir, mixed.old)) == 7


def test_eu_ai_act_events_are_kept_six_months_whatever_the_rules(
    embedded: Harness, monkeypatch: pytest.MonkeyPatch, signing_key: Keys
) -> None:
    """An inference under the EU AI Act outlives a 30-day rule until six months; a GDPR-only one does not."""
    with days_ago(monkeypatch, 100):
        for regulations in (["EU AI Act"], ["GDPR"]):
            trail = AuditTrail("scoring", regulations=regulations, **embedded.options())
            trail.log_model_inference("m", "x", "y", 0.5)
            trail.close()
    materialize(embedded)
    assert apply_retention(embedded.log_dir, {"event_types": {"model_inference": "30d"}}).events == 1
    left = get_audit_logs(event_type="model_inference", log_dir=embedded.log_dir)
    assert [e["regulations"] for e in left] == [["EU AI Act"]]
    assert verify(embedded.log_dir, public_key=signing_key.public).ok


@pytest.mark.parametrize(("policy", "field"), [
    ({"event_types": {"model_inference": "6 months"}}, "event_types.model_inference"),
    ({"retention": {"model_inference": "6mo"}}, "retention"),
    ({"regulations": {"EU AI Act": "90d"}}, "regulations.EU AI Act"),
    ({"default": "0d"}, "default"),
    ({"allow_below_legal_minimum": "yes"}, "allow_below_legal_minimum"),
    (["model_inference"], "policy"),
])
def test_bad_policies_are_refused_naming_the_field(policy: object, field: str) -> None:
    """A policy that breaks a rule raises AuditValidationError naming the field (an EU AI Act rule < 6 months too)."""
    with pytest.raises(AuditValidationError) as caught:
        load_policy(policy)  # type: ignore[arg-type]
    assert caught.value.field == field and f"'{field}'" in str(caught.value)


def test_below_the_legal_minimum_only_when_explicitly_allowed() -> None:
    """allow_below_legal_minimum: true accepts a shorter EU AI Act rule, and the record's policy says so."""
    policy = load_policy({"regulations": {"EU AI Act": "90d"}, "allow_below_legal_minimum": True})
    assert policy.to_dict()["allow_below_legal_minimum"] is True


@pytest.mark.parametrize(("args", "policy_text", "says"), [
    (["apply"], "event_types:\n  model_inference: soon\n", "event_types.model_inference"),
    (["apply"], "event_types: [unclosed\n", "not valid YAML"),
    (["apply", "--every", "every tuesday"], "default: keep\n", "--every"),
    (["hold", "add", "--subject", "a", "--operation-id", "b"], None, "give exactly one"),
    (["hold", "remove"], None, "give exactly one"),
])
def test_bad_cli_input_is_one_line_on_stderr_and_exit_2(
    embedded: Harness, mixed: Logged, tmp_path: Path, args: list[str], policy_text: str | None, says: str
) -> None:
    """Bad policies, schedules, hold selectors: one line on stderr naming it, exit 2, no traceback, no change."""
    extra = []
    if policy_text is not None:
        (tmp_path / "policy.yaml").write_text(policy_text)
        extra = ["--policy", str(tmp_path / "policy.yaml")]
    version = Lake(embedded.log_dir).snapshot().version
    done = run_cli("retention", *args, "--log-dir", str(embedded.log_dir), *extra)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in done.stderr
    assert Lake(embedded.log_dir).snapshot().version == version


def test_cli_holds_apply_and_verify_report_the_expiry(
    embedded: Harness, mixed: Logged, signing_key: Keys, tmp_path: Path
) -> None:
    """`retention hold add/list`, `retention apply --policy`, then `verify` says how many expired under which record."""
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY))
    log_dir = str(embedded.log_dir)
    assert run_cli("retention", "hold", "add", "--log-dir", log_dir, "--operation-id", mixed.old_subject,
                   "--reason", "case 9").returncode == 0
    listed = run_cli("retention", "hold", "list", "--log-dir", log_dir)
    assert listed.returncode == 0 and f"operation_id\t{mixed.old_subject}" in listed.stdout
    dry = run_cli("retention", "apply", "--log-dir", log_dir, "--policy", str(policy), "--dry-run")
    assert dry.returncode == 0 and "4 events would expire" in dry.stdout
    applied = run_cli("retention", "apply", "--log-dir", log_dir, "--policy", str(policy))
    assert applied.returncode == 0 and "expired 4 events" in applied.stdout and "(signed)" in applied.stdout
    checked = run_cli("verify", "--log-dir", log_dir, "--public-key", str(signing_key.public))
    assert checked.returncode == 0, checked.stdout
    assert "retention: 4 events expired under retention record #0" in checked.stdout
    for path in [retention_root(embedded.log_dir) / "holds.json", *retention_root(embedded.log_dir).glob("records/*")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(retention_root(embedded.log_dir).stat().st_mode) == 0o700


def test_scheduled_mode_applies_at_once_then_waits_and_stops_on_sigterm(embedded: Harness, mixed: Logged) -> None:
    """`retention apply --every 1d` applies on start, keeps running, and exits 0 on SIGTERM."""
    service = subprocess.Popen(
        [sys.executable, "-m", "secureml.audit.cli", "retention", "apply", "--log-dir", str(embedded.log_dir),
         "--every", "1d"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = service.stdout.readline()  # type: ignore[union-attr]
        assert "expired 5 events" in first
        assert service.poll() is None
    finally:
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=60) == 0


def test_without_a_signing_key_the_record_says_not_signed_and_proves_nothing(
    embedded: Harness, mixed: Logged, signing_key: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No key: the record is written unsigned and says so; in a lake with signed checkpoints verify fails on it."""
    monkeypatch.setenv(SIGNING_KEY_ENV, str(signing_key.private.parent / "absent.pem"))
    result = apply_retention(embedded.log_dir, POLICY)
    assert not result.signed and "NOT SIGNED" in result.summary()
    verified = verify(embedded.log_dir, public_key=signing_key.public)
    assert not verified.ok and any(f.kind == RECORD_INVALID and "not signed" in f.message for f in verified.errors)


def test_unsigned_record_in_an_unsigned_lake_is_a_warning(
    embedded: Harness, monkeypatch: pytest.MonkeyPatch, signing_key: Keys
) -> None:
    """With no signed checkpoint at all, an unsigned record is taken on trust with a warning, like the chains."""
    logged = log_mixed(embedded, monkeypatch)
    monkeypatch.setenv("SECUREML_AUDIT_BOOTSTRAP_SERVERS", "")
    from secureml.materializer.runner import Materializer
    from secureml.stream.sources import EmbeddedSource

    Materializer(Lake(embedded.log_dir), EmbeddedSource(embedded.log_dir), background_compaction=False).run(once=True)
    monkeypatch.setenv(SIGNING_KEY_ENV, str(signing_key.private.parent / "absent.pem"))
    assert apply_retention(embedded.log_dir, POLICY).events == 5
    verified = verify(embedded.log_dir)
    assert verified.ok and verified.verdict == "intact, not signed" and verified.expired_events == 5
    assert any(f.kind == RECORD_UNSIGNED for f in verified.warnings)
    assert len(rows_of(embedded.log_dir, logged.old)) == 3


def test_replay_does_not_resurrect_expired_rows_and_new_checkpoints_follow(
    embedded: Harness, mixed: Logged, signing_key: Keys
) -> None:
    """A replay from the start skips what retention removed; compaction and later checkpoints keep verify intact."""
    apply_retention(embedded.log_dir, POLICY)
    before = len(get_audit_logs(log_dir=embedded.log_dir))
    materialize(embedded, replay=True)
    assert len(get_audit_logs(log_dir=embedded.log_dir)) == before == 9
    trail = AuditTrail("later", **embedded.options())
    trail.log_model_inference("m", "x", "y", 0.5)
    trail.close()
    materialize(embedded)
    Lake(embedded.log_dir).compact_all(today="9999-12-31")
    verified = verify(embedded.log_dir, public_key=signing_key.public)
    assert verified.ok and not verified.errors and verified.expired_events == 5, [f.message for f in verified.errors]
    assert verified.events_not_covered == 0


def test_replay_from_kafka_offset_0_does_not_resurrect_expired_rows(
    kafka: Harness, monkeypatch: pytest.MonkeyPatch, signing_key: Keys
) -> None:
    """Kafka keeps every event; a lake rebuilt from offset 0 still lacks the expired ones and verifies."""
    logged = log_mixed(kafka, monkeypatch)
    materialize(kafka)
    assert apply_retention(kafka.log_dir, POLICY).events == 5
    materialize(kafka, replay=True)
    assert len(rows_of(kafka.log_dir, logged.old)) == 3
    verified = verify(kafka.log_dir, public_key=signing_key.public)
    assert verified.ok and verified.expired_events == 5, [f.message for f in verified.errors]


WRITER = textwrap.dedent("""
    import sys
    import secureml.audit.trail as trail
    real = trail.now_micros
    trail.now_micros = lambda: real() - 400 * 86_400 * 10**6
    from secureml.audit import AuditTrail
    t = AuditTrail("old_batch", log_dir=sys.argv[1], regulations=["GDPR"])
    for i in range(3):
        t.log_model_inference("m", f"x{i}", "y", 0.5)
    t.close()
""")


def test_fully_expired_segments_of_finished_writers_are_deleted_and_verify_accepts_it(
    embedded: Harness, mixed: Logged, signing_key: Keys
) -> None:
    """A segment whose writer exited and whose every event expired is deleted; verify does not call it tampering."""
    subprocess.run([sys.executable, "-c", WRITER, str(embedded.log_dir)], check=True, timeout=120)
    segments = set(os.listdir(embedded.log_dir / "log"))
    materialize(embedded)
    result = apply_retention(embedded.log_dir, {"default": "1y"})
    assert len(result.segments_removed) == 1 and result.segments_removed[0] in segments
    assert set(os.listdir(embedded.log_dir / "log")) == segments - set(result.segments_removed)
    verified = verify(embedded.log_dir, public_key=signing_key.public)
    assert verified.ok and not any(f.kind == LOG_DELETED for f in verified.all_findings()), \
        [f.message for f in verified.errors]
    (embedded.log_dir / "log" / sorted(segments - set(result.segments_removed))[0]).unlink()
    assert any(f.kind == LOG_DELETED for f in verify(embedded.log_dir, public_key=signing_key.public).errors)


def test_inclusion_and_consistency_proofs_still_hold_after_expiry(
    embedded: Harness, mixed: Logged, signing_key: Keys
) -> None:
    """A kept event whose source lost expired events still gets an inclusion proof; log-tree consistency too."""
    from secureml.integrity.keys import load_public_key
    from secureml.integrity.proofs import prove, prove_consistency, verify_consistency_proof, verify_proof

    trail = AuditTrail("later", **embedded.options())
    trail.close()
    materialize(embedded)  # a second checkpoint, so there is a consistency proof to make
    apply_retention(embedded.log_dir, POLICY)
    kept = get_audit_logs(operation_id=mixed.old, event_type="compliance_check", log_dir=embedded.log_dir)[0]
    public = load_public_key(signing_key.public)
    assert verify_proof(prove(embedded.log_dir, kept["event_id"]), public, event_id=kept["event_id"])
    old, new = verify_consistency_proof(prove_consistency(embedded.log_dir, "0", "latest"), public)
    assert old.size < new.size


def test_an_apply_interrupted_after_its_delete_is_completed_by_the_next(
    embedded: Harness, mixed: Logged, signing_key: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash between the delete commit and the record: verify fails and says so; the next apply signs the record."""
    import secureml.retention.apply as apply_module

    def crash(*_args: object) -> None:
        raise KeyboardInterrupt

    original = apply_module.write_record
    monkeypatch.setattr(apply_module, "write_record", crash)
    with pytest.raises(KeyboardInterrupt):
        apply_retention(embedded.log_dir, POLICY)
    assert len(rows_of(embedded.log_dir, mixed.old)) == 3  # the delete committed
    verified = verify(embedded.log_dir, public_key=signing_key.public)
    assert not verified.ok and any("interrupted" in f.message for f in verified.warnings)
    monkeypatch.setattr(apply_module, "write_record", original)
    assert apply_retention(embedded.log_dir, POLICY).events == 0
    [record] = stored_records(retention_root(embedded.log_dir))
    assert record.record.body["events"] == 5 and record.record.signature
    verified = verify(embedded.log_dir, public_key=signing_key.public)
    assert verified.ok and verified.expired_events == 5 and not verified.warnings, \
        [f.message for f in verified.all_findings()]


def test_retention_on_an_s3_lake_expires_vacuums_and_verifies(
    embedded: Harness, s3_lake: object, monkeypatch: pytest.MonkeyPatch, signing_key: Keys
) -> None:
    """On an S3 Delta table (local endpoint): expired rows are deleted and vacuumed, verify reports the expiry."""
    monkeypatch.setenv("SECUREML_AUDIT_LAKE_URI", s3_lake.uri)  # type: ignore[attr-defined]
    monkeypatch.setenv("SECUREML_AUDIT_LAKE_STORAGE_OPTIONS", json.dumps(s3_lake.storage_options))  # type: ignore[attr-defined]
    logged = log_mixed(embedded, monkeypatch)
    materialize(embedded)
    result = apply_retention(embedded.log_dir, POLICY)
    assert result.events == 5 and result.files_vacuumed >= 1
    assert len(rows_of(embedded.log_dir, logged.old)) == 3
    verified = verify(embedded.log_dir, public_key=signing_key.public)
    assert verified.ok and verified.expired_events == 5, [f.message for f in verified.errors]


def test_apply_waits_for_the_maintenance_lease_and_gives_up_saying_so(
    embedded: Harness, mixed: Logged, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a compaction holds the lake's maintenance lease, apply deletes nothing and says why; after, it runs."""
    import secureml.retention.apply as apply_module
    from secureml.retention.exceptions import RetentionError

    monkeypatch.setattr(apply_module, "LEASE_WAIT_SECONDS", 1.5)
    lake = Lake(embedded.log_dir)
    with lake.maintenance_lease() as held:
        assert held
        with pytest.raises(RetentionError, match="maintenance lease"):
            apply_retention(embedded.log_dir, POLICY)
        assert len(rows_of(embedded.log_dir, mixed.old)) == 7
    assert apply_retention(embedded.log_dir, POLICY).events == 5
