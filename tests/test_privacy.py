"""Privacy by design (issue 9): the policy, pseudonyms, encryption before sealing, redaction, erasure, readers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from secureml.audit import AuditTrail, AuditValidationError, audit_function, connect, erase_subject, get_audit_logs
from secureml.audit.exceptions import AuditConfigError
from secureml.audit.privacy import PrivacyPolicy, resolve_policy
from secureml.audit.privacy.detectors import redact
from secureml.audit.privacy.keys import FileKeyStore, is_pseudonym
from secureml.audit.privacy.reveal import ERASED

SECRETS = ("user_12345", "bob@example.com", "customer_42 features", "analyst_123", "alice@example.com",
           "123-45-6789")


def raw_bytes(log_dir: Path) -> bytes:
    """Every byte of every file under a log directory."""
    return b"".join(p.read_bytes() for p in sorted(log_dir.rglob("*")) if p.is_file())


def log_one_subject(log_dir: Path, subject: str = "user_12345", email: str = "bob@example.com") -> str:
    """A trail with a user request of a subject, an inference for it, and an error quoting an e-mail; its id."""
    with AuditTrail("privacy_op", log_dir=log_dir, user="analyst_123") as trail:
        trail.log_user_request("access", subject, {"email": email, "channel": "web"}, "pending")
        trail.log_model_inference("credit_model_v1", f"{subject} features", {"score": 0.7}, 0.9, subject=subject)
        trail.log_error("ValueError", "bad email alice@example.com ssn 123-45-6789")
        return trail.operation_id


def test_default_policy_stores_pseudonyms_ciphertext_and_redacted_text(tmp_path: Path) -> None:
    """With the default policy no identifier, encrypted value or detected e-mail/SSN is stored in clear."""
    log_dir = tmp_path / "logs"
    log_one_subject(log_dir)
    stored = raw_bytes(log_dir)
    for secret in SECRETS:
        assert secret.encode() not in stored, secret
    sealed = connect(log_dir).sql("SELECT user, user_id, input_data, message FROM events_sealed "
                                  "WHERE event_type IN ('user_request', 'model_inference', 'error') "
                                  "ORDER BY seq").fetchall()
    assert is_pseudonym(sealed[0][0]) and is_pseudonym(sealed[0][1])
    assert sealed[1][2].startswith(f"enc:v1:{sealed[0][1]}:")
    assert sealed[2][3] == "bad email <email> ssn <ssn>"


def test_reader_with_the_key_store_sees_values_as_logged(tmp_path: Path) -> None:
    """get_audit_logs, Arrow output and SQL show ids and encrypted values as they were logged."""
    log_dir = tmp_path / "logs"
    op = log_one_subject(log_dir)
    logs = get_audit_logs(operation_id=op, log_dir=log_dir)
    request = next(log for log in logs if log["event_type"] == "user_request")
    inference = next(log for log in logs if log["event_type"] == "model_inference")
    assert request["user_id"] == "user_12345" and request["user"] == "analyst_123"
    assert request["details"] == {"email": "bob@example.com", "channel": "web"}
    assert inference["input_data"] == "user_12345 features"
    table = get_audit_logs(operation_id=op, log_dir=log_dir, output="arrow")
    assert "user_12345" in table.column("user_id").to_pylist()
    rows = connect(log_dir).sql("SELECT user_id FROM events WHERE event_type = 'user_request'").fetchall()
    assert rows == [("user_12345",)]


def test_filters_on_clear_ids_match_pseudonymised_events(tmp_path: Path) -> None:
    """user= and subject= take the id as logged and find the same events as before pseudonyms."""
    log_dir = tmp_path / "logs"
    op = log_one_subject(log_dir)
    log_one_subject(log_dir, subject="user_999", email="carol@example.com")
    by_user = get_audit_logs(log_dir=log_dir, user="analyst_123")
    assert len(by_user) == 10 and {log["user"] for log in by_user} == {"analyst_123"}
    by_subject = get_audit_logs(log_dir=log_dir, subject="user_12345")
    assert [(log["operation_id"], log["event_type"]) for log in by_subject] == [
        (op, "user_request"), (op, "model_inference")]
    assert get_audit_logs(log_dir=log_dir, user="nobody") == []


def test_erase_shreds_one_subject_and_keeps_the_others(tmp_path: Path) -> None:
    """After erase_subject the subject's values read <erased>, its id only as a pseudonym; others still decrypt."""
    log_dir = tmp_path / "logs"
    op = log_one_subject(log_dir)
    other = log_one_subject(log_dir, subject="user_999", email="carol@example.com")
    result = erase_subject("user_12345", log_dir, reason="asked by bob@example.com", legal_basis="GDPR Art. 17")
    assert result["key_destroyed"] and is_pseudonym(result["subject"])
    logs = get_audit_logs(operation_id=op, log_dir=log_dir)
    request = next(log for log in logs if log["event_type"] == "user_request")
    inference = next(log for log in logs if log["event_type"] == "model_inference")
    assert request["user_id"] == result["subject"] and request["details"] == {"email": ERASED, "channel": "web"}
    assert inference["input_data"] == ERASED
    assert request["user"] == "analyst_123"  # the analyst was not erased
    kept = get_audit_logs(operation_id=other, log_dir=log_dir, event_type="user_request")[0]
    assert kept["user_id"] == "user_999" and kept["details"]["email"] == "carol@example.com"
    erasure = get_audit_logs(log_dir=log_dir, event_type="subject_erased")
    assert len(erasure) == 1 and erasure[0]["details"] == {
        "subject": result["subject"], "reason": "asked by <email>", "legal_basis": "GDPR Art. 17",
        "key_destroyed": True}
    assert b"user_12345" not in raw_bytes(log_dir)


def test_erase_keeps_every_hash_and_verify_counts_erasures(tmp_path: Path) -> None:
    """Erasure changes no stored byte (the log only grows by the erasure event): verify passes, one subject erased."""
    from secureml.audit import verify
    from secureml.materializer import materialize

    log_dir = tmp_path / "logs"
    log_one_subject(log_dir)
    materialize(log_dir, once=True)
    before = {p: p.read_bytes() for p in (log_dir / "log").rglob("*") if p.is_file()}
    erase_subject("user_12345", log_dir)
    assert all(p.read_bytes().startswith(data) for p, data in before.items())
    materialize(log_dir, once=True)
    result = verify(log_dir)
    assert result.ok and result.subjects_erased == 1
    assert get_audit_logs(log_dir=log_dir, event_type="model_inference")[0]["input_data"] == ERASED


def test_a_subject_logged_again_after_erasure_gets_a_new_key(tmp_path: Path) -> None:
    """Events logged after the erasure decrypt under a new key; the old ones stay erased."""
    log_dir = tmp_path / "logs"
    log_one_subject(log_dir)
    erase_subject("user_12345", log_dir)
    op = log_one_subject(log_dir)
    values = [log["input_data"] for log in get_audit_logs(log_dir=log_dir, event_type="model_inference")]
    assert values == [ERASED, "user_12345 features"]
    assert get_audit_logs(operation_id=op, log_dir=log_dir, event_type="model_inference")[0]["input_data"] \
        == "user_12345 features"


def test_audited_function_exception_message_is_stored_redacted(tmp_path: Path) -> None:
    """An exception quoting an e-mail and an SSN in an audited function is stored as <email>/<ssn>."""
    log_dir = tmp_path / "logs"

    @audit_function(log_dir=log_dir)
    def score(x: int) -> int:
        raise ValueError("bad email alice@example.com ssn 123-45-6789")

    with pytest.raises(ValueError, match="alice@example.com"):  # the caller's exception is unchanged
        score(1)
    error = get_audit_logs(log_dir=log_dir, event_type="error")[0]
    assert error["message"] == "bad email <email> ssn <ssn>"
    assert b"alice@example.com" not in raw_bytes(log_dir) and b"123-45-6789" not in raw_bytes(log_dir)


def test_context_manager_exception_is_stored_redacted(tmp_path: Path) -> None:
    """The context manager's error event quotes the exception with its phone number and card redacted."""
    log_dir = tmp_path / "logs"
    with pytest.raises(RuntimeError), AuditTrail("cm", log_dir=log_dir):
        raise RuntimeError("call +1 415-555-2671 about card 4111 1111 1111 1111")
    assert get_audit_logs(log_dir=log_dir, event_type="error")[0]["message"] == "call <phone> about card <card>"


def test_redaction_opt_out_per_field_and_policy_off(tmp_path: Path) -> None:
    """A field left out of redact_fields keeps its text; privacy='off' stores everything as given."""
    log_dir = tmp_path / "logs"
    keep_messages = {"redact_fields": ["details"]}
    with AuditTrail("kept", log_dir=log_dir, privacy=keep_messages, user="u1") as trail:
        trail.log_error("E", "mail alice@example.com", {"note": "mail alice@example.com"})
    with AuditTrail("off", log_dir=log_dir, privacy="off", user="u1") as trail:
        trail.log_user_request("access", "user_12345", None, "done")
    error = get_audit_logs(log_dir=log_dir, event_type="error")[0]
    assert error["message"] == "mail alice@example.com" and error["details"] == {"note": "mail <email>"}
    sealed = connect(log_dir).sql("SELECT user, user_id FROM events_sealed WHERE operation_name = 'off' AND "
                                  "event_type = 'user_request'").fetchall()
    assert sealed == [("u1", "user_12345")]


def test_policy_from_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A YAML or JSON policy file, by path or SECUREML_AUDIT_PRIVACY_POLICY, sets the policy."""
    yaml_file = tmp_path / "policy.yaml"
    yaml_file.write_text("pseudonymise: [user_id]\nencrypt_keys: [diagnosis]\n", encoding="utf-8")
    json_file = tmp_path / "policy.json"
    json_file.write_text(json.dumps({"enabled": False}), encoding="utf-8")
    policy = resolve_policy(str(yaml_file))
    assert policy.pseudonymise == ("user_id",) and policy.encrypt_keys == ("diagnosis",)
    assert policy.encrypt_fields == PrivacyPolicy().encrypt_fields
    monkeypatch.setenv("SECUREML_AUDIT_PRIVACY_POLICY", str(json_file))
    assert resolve_policy(None).enabled is False
    monkeypatch.setenv("SECUREML_AUDIT_PRIVACY_POLICY", "off")
    assert resolve_policy(None) == PrivacyPolicy.off()
    log_dir = tmp_path / "logs"
    with AuditTrail("from_file", log_dir=log_dir, privacy=yaml_file, user="u1") as trail:
        trail.log_user_request("access", "s1", {"diagnosis": "asthma"}, "open")
    sealed = connect(log_dir).sql("SELECT user, user_id, details FROM events_sealed WHERE event_type = "
                                  "'user_request'").fetchall()[0]
    assert sealed[0] == "u1" and is_pseudonym(sealed[1]) and '"diagnosis":"enc:v1:' in sealed[2]


def test_any_payload_field_a_policy_encrypts_reads_as_logged_everywhere(tmp_path: Path) -> None:
    """A policy's `encrypt_fields` may name any payload field (`data_access.dataset_name`, `*.model_id`): stored as
    ciphertext, it reads as logged in the dicts, the Arrow output and the SQL view `events` alike."""
    log_dir = tmp_path / "logs"
    policy = {"encrypt_fields": ["data_access.dataset_name", "*.model_id"]}
    with AuditTrail("custom", log_dir=log_dir, privacy=policy, user="u1") as trail:
        trail.log_data_access("patients_2026", ["age"], 10, "research")
        trail.log_model_inference("model_v3", "plain input", "yes", 0.5)
    con = connect(log_dir)
    sealed = con.sql("SELECT dataset_name, model_id FROM events_sealed WHERE event_type IN ('data_access', "
                     "'model_inference') ORDER BY seq").fetchall()
    assert sealed[0][0].startswith("enc:v1:ps_") and sealed[1][1].startswith("enc:v1:ps_")
    shown = con.sql("SELECT dataset_name, model_id, input_data FROM events WHERE event_type IN ('data_access', "
                    "'model_inference') ORDER BY seq").fetchall()
    assert shown == [("patients_2026", None, None), (None, "model_v3", "plain input")]
    logs = get_audit_logs(log_dir=log_dir, event_type=["data_access", "model_inference"])
    assert [log.get("dataset_name") or log.get("model_id") for log in logs] == ["patients_2026", "model_v3"]
    table = get_audit_logs(log_dir=log_dir, event_type="data_access", output="arrow")
    assert table.column("dataset_name").to_pylist() == ["patients_2026"]


def test_envelope_texts_read_as_logged_even_when_they_look_sealed(tmp_path: Path) -> None:
    """No policy seals the envelope's ids and names, so an operation name that looks like a ciphertext or a pseudonym
    is stored and read as logged, in the dicts, the Arrow output and the SQL view alike, beside the values the
    policy did seal (only the columns a policy may seal are read for them: ``REVEALABLE_FIELDS``)."""
    log_dir = tmp_path / "logs"
    for name in ("enc:v1:ps_0123456789abcdef:AAAA", "ps_0123456789abcdef"):
        with AuditTrail(name, log_dir=log_dir, user="u1") as trail:
            trail.log_model_inference("model_v3", "plain input", "yes", 0.5)
    from secureml.materializer import materialize

    materialize(log_dir, once=True)  # read from the lake's Parquet
    names = ["enc:v1:ps_0123456789abcdef:AAAA", "ps_0123456789abcdef"]
    logs = get_audit_logs(log_dir=log_dir, event_type="model_inference")
    assert [(log["operation_name"], log["user"], log["input_data"]) for log in logs] == [
        (name, "u1", "plain input") for name in names]
    table = get_audit_logs(log_dir=log_dir, event_type="model_inference", output="arrow")
    assert table.column("operation_name").to_pylist() == names
    assert table.column("input_data").to_pylist() == ["plain input"] * 2
    con = connect(log_dir)
    assert con.sql("SELECT operation_name, input_data FROM events WHERE event_type = 'model_inference' "
                   "ORDER BY timestamp").fetchall() == [(name, "plain input") for name in names]
    assert con.sql("SELECT count(*) FROM events_sealed WHERE input_data LIKE 'enc:v1:ps_%'").fetchall() == [(2,)]
    from secureml.audit import verify

    assert verify(log_dir).ok


@pytest.mark.parametrize(("privacy", "field", "rule"), [
    ({"encrypt_key": ["x"]}, "privacy.encrypt_key", "is not a policy setting"),
    ({"encrypt_keys": "email"}, "privacy.encrypt_keys", "must be a list of names"),
    ({"encrypt_keys": [""]}, "privacy.encrypt_keys", "non-empty strings"),
    ({"pseudonymise": ["email"]}, "privacy.pseudonymise", "can hold only"),
    ({"encrypt_fields": ["input_data"]}, "privacy.encrypt_fields", "'event_type.field'"),
    ({"enabled": "yes"}, "privacy.enabled", "must be true or false"),
    (42, "privacy", "must be a PrivacyPolicy"),
])
def test_bad_policies_are_refused_naming_call_field_and_rule(tmp_path: Path, privacy: object, field: str,
                                                            rule: str) -> None:
    """A bad policy raises AuditValidationError naming AuditTrail, the setting and the rule; nothing is written."""
    with pytest.raises(AuditValidationError, match=rule) as caught:
        AuditTrail("bad", log_dir=tmp_path / "logs", privacy=privacy)
    assert caught.value.field == field and caught.value.where == "AuditTrail"
    assert not (tmp_path / "logs").exists()


def test_bad_policy_files_are_refused(tmp_path: Path) -> None:
    """A missing or malformed policy file is refused with its path and what is wrong."""
    broken = tmp_path / "broken.yaml"
    broken.write_text("encrypt_keys: [email\n", encoding="utf-8")
    with pytest.raises(AuditValidationError, match="not valid YAML"):
        resolve_policy(broken)
    with pytest.raises(AuditValidationError, match="cannot read the policy file"):
        resolve_policy(tmp_path / "absent.json")


def test_key_store_inside_log_dir_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key store inside log_dir (checked on resolved paths, through a link too) is refused before logging."""
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    (tmp_path / "link").symlink_to(log_dir)
    monkeypatch.setenv("SECUREML_AUDIT_KEYSTORE_DIR", str(tmp_path / "link" / "keys"))
    with pytest.raises(AuditConfigError, match="inside the log directory"):
        AuditTrail("op", log_dir=log_dir)
    assert list(log_dir.iterdir()) == []


def test_key_store_files_are_owner_only_and_wrapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The generated KEK and the wrapped keys are owner-only; a wrong KEK cannot open them."""
    keys = tmp_path / "keys"
    monkeypatch.setenv("SECUREML_AUDIT_KEYSTORE_DIR", str(keys))
    log_one_subject(tmp_path / "logs")
    files = [p for p in keys.rglob("*") if p.is_file()]
    assert files and all(p.stat().st_mode & 0o077 == 0 for p in files)
    assert all(b"user_12345" not in p.read_bytes() for p in files)
    monkeypatch.setenv("SECUREML_AUDIT_KEK", "00" * 32)
    with pytest.raises(AuditConfigError, match="does not open under this key-encryption key"):
        FileKeyStore(keys).pseudonym_key()


def test_erase_validates_its_input(tmp_path: Path) -> None:
    """erase_subject refuses a bad subject or reason with AuditValidationError naming call, field and rule."""
    with pytest.raises(AuditValidationError, match="erase_subject: invalid 'subject': must not be empty"):
        erase_subject(" ", tmp_path / "logs")
    with pytest.raises(AuditValidationError, match="erase_subject: invalid 'reason': must be a string"):
        erase_subject("s", tmp_path / "logs", reason=3)  # type: ignore[arg-type]


def test_erase_command_line(tmp_path: Path) -> None:
    """`secureml-audit erase` erases and says so; a bad subject is one line on stderr and exit 2."""
    log_dir = tmp_path / "logs"
    log_one_subject(log_dir)
    command = [sys.executable, "-m", "secureml.audit.cli", "erase", "--log-dir", str(log_dir)]
    done = subprocess.run([*command, "--subject", "user_12345", "--reason", "request 7"], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "erased subject ps_" in done.stdout and "user_12345" not in done.stdout
    bad = subprocess.run([*command, "--subject", ""], capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "invalid 'subject'" in bad.stderr
    assert get_audit_logs(log_dir=log_dir, event_type="model_inference")[0]["input_data"] == ERASED


def test_redact_detectors() -> None:
    """E-mail, SSN, valid cards and IBANs, and phone numbers are replaced; invalid checksums and plain numbers stay."""
    assert redact("mail alice@example.com now") == "mail <email> now"
    assert redact("ssn 123-45-6789.") == "ssn <ssn>."
    assert redact("card 4111-1111-1111-1111 end") == "card <card> end"
    assert redact("card 4111-1111-1111-1112 end") == "card 4111-1111-1111-1112 end"
    assert redact("iban DE89 3704 0044 0532 0130 00") == "iban <iban>"
    assert redact("call +44 20 7946 0958 today") == "call <phone> today"
    assert redact("epoch 3, loss 0.25, 1000 rows") == "epoch 3, loss 0.25, 1000 rows"


def test_query_command_filters_by_subject_and_shows_values_as_logged(tmp_path: Path) -> None:
    """`secureml-audit query --subject` finds a subject's events by its clear id and prints them as logged."""
    log_dir = tmp_path / "logs"
    log_one_subject(log_dir)
    log_one_subject(log_dir, subject="user_999", email="carol@example.com")
    done = subprocess.run([sys.executable, "-m", "secureml.audit.cli", "query", "--log-dir", str(log_dir),
                           "--subject", "user_12345", "--format", "json"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    logs = json.loads(done.stdout)
    assert [log["event_type"] for log in logs] == ["user_request", "model_inference"]
    assert logs[0]["user_id"] == "user_12345" and logs[1]["input_data"] == "user_12345 features"


def test_known_subjects_need_no_key_store_io(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a subject's key is cached, its events are encrypted without reading the key store again."""
    keys = tmp_path / "keys"
    monkeypatch.setenv("SECUREML_AUDIT_KEYSTORE_DIR", str(keys))
    log_dir = tmp_path / "logs"
    with AuditTrail("hot", log_dir=log_dir, user="svc") as trail:
        trail.log_model_inference("m", "first", 1, subject="customer_1")
        keys.rename(tmp_path / "keys-away")  # the store is gone: a lookup would fail or create a new one
        for i in range(100):
            trail.log_model_inference("m", f"input {i}", 1, subject="customer_1")
    assert not keys.exists()
    (tmp_path / "keys-away").rename(keys)
    values = [log["input_data"] for log in get_audit_logs(log_dir=log_dir, event_type="model_inference")]
    assert values == ["first", *(f"input {i}" for i in range(100))]


def test_dead_letter_copies_are_redacted(tmp_path: Path) -> None:
    """A corrupt record holding an e-mail in clear (policy off) is dead-lettered with the e-mail replaced."""
    import base64

    from secureml.audit.transports.embedded import list_segments
    from secureml.materializer import materialize
    from secureml.stream.sources import dead_letters

    log_dir = tmp_path / "logs"
    with AuditTrail("dlq", log_dir=log_dir, privacy="off") as trail:
        trail.log_error("E", "write to alice@example.com about 123-45-6789")
    segment = list_segments(log_dir)[0]
    data = bytearray(segment.read_bytes())
    data[data.index(b"alice@example.com") - 12] ^= 0xFF  # the record's bytes changed on disk
    segment.write_bytes(bytes(data))
    materialize(log_dir)
    letters = dead_letters(log_dir)
    assert len(letters) == 1
    copy = base64.b64decode(str(letters[0]["value_base64"]))
    assert b"<email>" in copy and b"<ssn>" in copy and b"alice@example.com" not in copy
    assert b"alice@example.com" not in (log_dir / "dlq" / "dead-letters.jsonl").read_bytes()


def test_a_user_is_stored_as_one_pseudonym_whether_or_not_it_is_the_subject(tmp_path: Path) -> None:
    """The step's shortcut for a user who is the event's subject stores the pseudonym and ciphertext the full look-up
    stores: one name per user, values sealed under the subject's own key."""
    log_dir = tmp_path / "logs"
    with AuditTrail("privacy_op", log_dir=log_dir, user="analyst_123") as trail:
        trail.log_model_inference("m", "own data", "low", 0.9)  # the user is the subject
        trail.log_model_inference("m", "their data", "low", 0.9, subject="user_12345")
        trail.log_model_inference("m", "own again", "low", 0.9, subject="analyst_123")
    sealed = connect(log_dir).sql("SELECT user, input_data FROM events_sealed WHERE event_type = 'model_inference' "
                                  "ORDER BY seq").fetchall()
    users = {user for user, _ in sealed}
    assert len(users) == 1 and is_pseudonym(next(iter(users)))
    name = sealed[0][0]
    assert [value.startswith(f"enc:v1:{name}:") for _, value in sealed] == [True, False, True]
    assert [log["input_data"] for log in get_audit_logs(log_dir=log_dir, event_type="model_inference")] == [
        "own data", "their data", "own again"]
