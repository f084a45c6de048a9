"""The native accelerator (issues 9, 11): its sealer writes what the pure-Python sealer writes, opens with the reader
and is erased like it; its hash chain gives byte for byte the pure-Python messages; without it (or switched off) the
pure-Python paths write readable events.

CI installs the accelerator (`pip install ./native`): these tests fail, never skip, when it is missing."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import random
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import secureml_audit_native
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from secureml.audit import AuditTrail, accelerator, erase_subject, get_audit_logs
from secureml.audit import trail as trail_module
from secureml.audit.accelerator import NATIVE_ENV
from secureml.audit.codec import encode_long
from secureml.audit.privacy import protect
from secureml.audit.privacy.keys import SubjectKey, pseudonym
from secureml.audit.privacy.protect import ENCRYPTED_PREFIX, sealer
from secureml.audit.privacy.reveal import ERASED
from secureml.audit.testing import capture_events

NAME = pseudonym(b"k" * 32, "alice")
TRICKY_STRINGS = [
    "", "plain", 'say "hi"', "back\\slash \\\" both", "".join(chr(c) for c in range(32)), "\x7f\x80\u2028\u2029",
    "é ß 日本語", "emoji 😀👍🏽", "</script>&<'>", "x" * 10_000, "line\nbreak\ttab\rreturn\b\f",
]
OTHER_VALUES: list[Any] = [0, -7, 0.87, 1e300, True, None, [1, "two", None], {"b": 1, "a": {"é": "\n"}},
                           {"score": 0.7, "list": [0.1, "😀"]}]


def opened(key: SubjectKey, text: str) -> tuple[bytes, bytes]:
    """(nonce, plaintext) of a sealed text, opened with `cryptography` directly (not through the project's reader)."""
    head = f"{ENCRYPTED_PREFIX}{NAME}:"
    assert text.startswith(head)
    raw = base64.b64decode(text[len(head):], validate=True)
    return raw[:12], AESGCM(key.key).decrypt(raw[:12], raw[12:], NAME.encode())


def python_sealer(key: SubjectKey, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The pure-Python path's sealer for NAME, built with the accelerator switched off."""
    with monkeypatch.context() as patch:
        patch.setattr(protect, "native", None)
        return sealer(key, NAME)


def test_the_accelerator_is_in_use() -> None:
    """With the accelerator installed and not switched off, sealer() returns its sealer and trails chain with it."""
    assert protect.native is secureml_audit_native
    assert trail_module._native_events is secureml_audit_native.EventChain
    seal = sealer(SubjectKey(os.urandom(32), "alice"), NAME)
    assert isinstance(seal.__self__, secureml_audit_native.Sealer)  # type: ignore[attr-defined]


def test_an_installed_build_of_another_interface_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """A native build left installed from another version (its INTERFACE differs) is skipped with a warning
    saying how to reinstall it, so the trail runs on the pure-Python path rather than calling what it lacks."""
    assert secureml_audit_native.INTERFACE == accelerator.INTERFACE
    outdated = types.ModuleType("secureml_audit_native")
    outdated.INTERFACE = accelerator.INTERFACE - 1  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "secureml_audit_native", outdated)
    with pytest.warns(RuntimeWarning, match=r"pip install \./native"):
        assert accelerator._load() is None
    monkeypatch.setitem(sys.modules, "secureml_audit_native", secureml_audit_native)
    assert accelerator._load() is secureml_audit_native


@pytest.mark.parametrize("value", TRICKY_STRINGS + OTHER_VALUES)
def test_native_seals_the_same_plaintext_as_python(value: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """For quotes, backslashes, control characters, non-ASCII, emoji, empty text and non-str values the native
    sealer encrypts byte for byte the JSON text the pure-Python sealer does; both open with cryptography."""
    key = SubjectKey(os.urandom(32), "alice")
    native_nonce, native_plain = opened(key, sealer(key, NAME)(value))
    python_nonce, python_plain = opened(key, python_sealer(key, monkeypatch)(value))
    assert native_plain == python_plain
    assert json.loads(native_plain) == value
    assert native_nonce != python_nonce


def test_a_lone_surrogate_is_refused_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    """A str that is not valid Unicode (a lone surrogate) raises UnicodeEncodeError on both paths, sealing nothing."""
    key = SubjectKey(os.urandom(32), "alice")
    for seal_value in (sealer(key, NAME), python_sealer(key, monkeypatch)):
        with pytest.raises(UnicodeEncodeError):
            seal_value("half \ud800 a pair")


def test_seal_field_seals_a_str_in_place_once_and_leaves_anything_else() -> None:
    """Sealer.seal_field (the step's one call per encrypted field) seals a str value in place under the subject's key,
    leaves an already sealed text, a non-str value and a missing field as they are, and uses the same prefix."""
    assert secureml_audit_native.ENCRYPTED_PREFIX == ENCRYPTED_PREFIX
    key = SubjectKey(os.urandom(32), "alice")
    seal_field = sealer(key, NAME).__self__.seal_field  # type: ignore[attr-defined]
    values: dict[str, Any] = {"input_data": TRICKY_STRINGS[7], "confidence": 0.87, "output": ["low"]}
    seal_field(values, "input_data")
    sealed = values["input_data"]
    assert json.loads(opened(key, sealed)[1]) == TRICKY_STRINGS[7]
    for field in ("input_data", "confidence", "output", "missing"):
        seal_field(values, field)
    assert values == {"input_data": sealed, "confidence": 0.87, "output": ["low"]}


def test_native_nonces_never_repeat_and_each_sealer_draws_its_own_random_part() -> None:
    """Over many values one sealer's nonces are distinct, counting up under one random 64-bit part; another sealer
    of the same key draws another random part."""
    key = SubjectKey(os.urandom(32), "alice")
    seal = sealer(key, NAME)
    nonces = [opened(key, seal("v"))[0] for _ in range(20_000)]
    assert len(set(nonces)) == len(nonces)
    assert {n[:8] for n in nonces} == {nonces[0][:8]}
    assert [int.from_bytes(n[8:], "big") for n in nonces] == list(range(len(nonces)))
    assert opened(key, sealer(key, NAME)("v"))[0][:8] != nonces[0][:8]


def test_native_sealer_refuses_a_key_that_is_not_256_bits() -> None:
    """A key of another length is refused when the sealer is made, naming the call and the rule."""
    with pytest.raises(ValueError, match="Sealer: key must be 32 bytes"):
        secureml_audit_native.Sealer(b"short", "enc:v1:x:", b"x", json.dumps)


def log_subject(log_dir: Path, value: str) -> str:
    """A trail logging one inference on subject customer_7 with the given input; its operation id."""
    with AuditTrail("native_op", log_dir=log_dir, user="analyst_1") as trail:
        trail.log_model_inference("credit_model_v1", value, {"score": 0.7}, 0.9, subject="customer_7")
        return trail.operation_id


def test_natively_sealed_events_read_back_and_erase(tmp_path: Path) -> None:
    """Events sealed natively read as logged through get_audit_logs with the key store; erasing the subject makes
    them unreadable."""
    log_dir = tmp_path / "logs"
    values = TRICKY_STRINGS[2:9]
    for value in values:
        log_subject(log_dir, value)
    stored = b"".join(p.read_bytes() for p in (log_dir / "log").rglob("*") if p.is_file())
    assert b"emoji" not in stored and b"back\\" not in stored
    read = [log["input_data"] for log in get_audit_logs(log_dir=log_dir, event_type="model_inference")]
    assert read == values
    erase_subject("customer_7", log_dir)
    erased = [log["input_data"] for log in get_audit_logs(log_dir=log_dir, event_type="model_inference")]
    assert erased == [ERASED] * len(values)


def test_switched_off_the_pure_python_path_seals_readable_events(tmp_path: Path) -> None:
    """With SECUREML_AUDIT_NATIVE=0 a process seals and chains in pure Python; what it wrote reads back as logged."""
    log_dir = tmp_path / "logs"
    script = (
        "import sys; from secureml.audit.privacy import protect; assert protect.native is None, protect.native; "
        "from secureml.audit import AuditTrail, trail; assert trail._native_events is None\n"
        "with AuditTrail('native_op', log_dir=sys.argv[1], user='analyst_1') as trail:\n"
        "    trail.log_model_inference('m', sys.argv[2], 'low', 0.9, subject='customer_7')\n"
    )
    value = TRICKY_STRINGS[3] + TRICKY_STRINGS[7]
    subprocess.run([sys.executable, "-c", script, str(log_dir), value], env={**os.environ, NATIVE_ENV: "0"},
                   check=True, timeout=120)
    logs = get_audit_logs(log_dir=log_dir, event_type="model_inference")
    assert [log["input_data"] for log in logs] == [value]


FORK_SCRIPT = """
import base64, os, sys
from secureml.audit import AuditTrail
with AuditTrail("native_op", log_dir=sys.argv[1], user="analyst_1") as trail:
    trail.log_model_inference("m", "before the fork", "low", 0.9, subject="customer_7")
    def nonce_base():
        sealed = trail._privacy.protect("model_inference", {"input_data": "v"}, None, "customer_7")[0]["input_data"]
        return base64.b64decode(sealed.rpartition(":")[2])[:8]
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        os.write(write, nonce_base())
        os._exit(0)
    os.close(write)
    assert os.waitpid(child, 0)[1] == 0
    print(os.read(read, 8).hex(), nonce_base().hex())
"""


@pytest.mark.parametrize("native", ["1", "0"])
def test_a_forked_child_seals_with_fresh_nonces(native: str, tmp_path: Path) -> None:
    """A child forked after events were sealed reloads its subjects' keys: its nonces do not continue the parent's
    (with either sealer). In a fresh process: forking pytest's, with other tests' library threads, is not safe."""
    done = subprocess.run([sys.executable, "-c", FORK_SCRIPT, str(tmp_path / "logs")], capture_output=True,
                          text=True, env={**os.environ, NATIVE_ENV: native}, check=True, timeout=120)
    in_child, in_parent = done.stdout.split()
    assert len(in_child) == 16 and in_child != in_parent


def log_random_events(seed: int) -> list[tuple[bytes, bytes]]:
    """The (key, message) pairs of a trail logging 300 random events (seeded), under a fixed id and clock."""
    rng = random.Random(seed)
    texts = ["a", "é😀", "x" * 70, "q\"\\\n", "日本語" * 30]
    with capture_events() as captured:
        trail = AuditTrail("chain_op", transport=captured.transport, privacy="off", user=rng.choice(texts))
        for i in range(300):
            if rng.random() < 0.7:
                trail.log_model_inference(rng.choice(texts) + str(i), rng.choice(texts), {"score": rng.random()},
                                          rng.random(), user=rng.choice([None, *texts]))
            else:
                trail.log_error(rng.choice(texts) + "Error", rng.choice(texts) * rng.randint(1, 40))
        trail.close()
        return list(captured.transport.emitted)


def test_trail_messages_are_byte_identical_with_and_without_the_native_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    """Random events (seq past the one-byte varints, long and non-ASCII texts) give the same messages, hash chain
    included, with the native chain and with the pure-Python one."""
    monkeypatch.setattr(trail_module, "_uuid4", lambda: "00000000-0000-4000-8000-000000000000")
    runs = []
    for chain in (secureml_audit_native.EventChain, None):
        clock = itertools.count(1_765_000_000_000_000, 7)
        monkeypatch.setattr(trail_module, "now_micros", lambda clock=clock: next(clock))
        monkeypatch.setattr(trail_module, "_native_events", chain)
        runs.append(log_random_events(seed=11))
    native, python = runs
    assert len(native) == 302 and native == python
    previous = encode_long(0)  # the first event's previous hash is the empty string
    for _, message in native:
        prefix = message[:-66]
        assert prefix.endswith(previous) and message[-64:] == hashlib.sha256(prefix).hexdigest().encode()
        previous = message[-66:]


def test_arrow_arrays_cross_the_c_data_interface_both_ways_without_copies() -> None:
    """arrow_ffi: what the column steps build on. Values, nulls, offsets of a slice and nested types survive
    a native import and export, and the exported array shares the imported one's data buffer."""
    import pyarrow as pa

    batch = pa.record_batch({
        "id": pa.array([1, None, 3, 2**62], pa.int64()),
        "name": pa.array(["a", None, "ü" * 40, ""]),
        "ts": pa.array([0, 1, None, 1_700_000_000_000_000], pa.timestamp("us", tz="UTC")),
        "tags": pa.array([["x"], [], None, ["y", "z"]], pa.list_(pa.string())),
    })
    back = pa.RecordBatch.from_struct_array(secureml_audit_native.arrow_roundtrip(batch))
    assert back.equals(batch)
    sliced = batch.column("name").slice(1, 3)
    copied = secureml_audit_native.arrow_roundtrip(sliced)
    assert copied.equals(sliced) and copied.to_pylist() == [None, "ü" * 40, ""]
    assert copied.buffers()[2].address == sliced.buffers()[2].address
    with pytest.raises(AttributeError):
        secureml_audit_native.arrow_roundtrip(object())
