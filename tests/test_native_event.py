"""The accelerator's EventChain (issue 11 item 2): a trail's events, and log_model_inference in one native call, are
byte for byte what the pure-Python path writes (random trails of every event type, policy off and on, tricky values,
the clock stepping back, level filtering, closing), and whatever the native path does not take (bad values, rare
types, an oversized event, a closed trail) gives the pure-Python path's exact error, with nothing recorded.

CI installs the accelerator (`pip install ./native`): these tests fail, never skip, when it is missing."""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import secureml_audit_native

from secureml.audit import AuditTrail, AuditValidationError, get_audit_logs
from secureml.audit import trail as trail_module
from secureml.audit.accelerator import NATIVE_ENV
from secureml.audit.exceptions import AuditClosedError, AuditError
from secureml.audit.privacy import PrivacyPolicy
from secureml.audit.testing import capture_events

OPERATION_ID = "00000000-0000-4000-8000-000000000000"
TEXTS = ["a", "plain text", 'say "hi"', "back\\slash", "ctrl\x01\x1f\x7f", "é ß 日本語", "emoji 😀👍🏽", " x ",
         "x\u2028\u2029", "x" * 70, "y" * 9000, "enc:v1:looks sealed"]
OUTPUTS: list[Any] = [*TEXTS, "", 0, -1, 2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 10**30, True, False, None,
                      0.0, -0.0, 1e-300, 5e-324, 1e16, 1e22, 0.1, 123.0, -2.5e-7, float("nan"), float("inf"),
                      float("-inf"), [1, "two"], {"b": 1, "a": {"é": "\n"}}, (1, 2), {"score": 0.7}]
CONFIDENCES: list[Any] = [None, 0, 1, 0.0, -0.0, 1.0, 0.87, 1e-300, 5e-324]
LEVELS: list[Any] = [None, 0, 10, 20, 25, 40, 2**31 - 1, "INFO", "warning", "DEBUG"]


class StrSubclass(str):
    """A str subclass: valid text, which the native path leaves to the Python rules."""


def random_trail(rng: random.Random, policy: Any, log_dir: Path, transport: Any) -> None:
    """A trail logging 400 random events of every type (inferences most), with the clock stepping back now and then."""
    trail = AuditTrail("native_event_op", log_dir=log_dir, transport=transport, privacy=policy,
                       log_level=rng.choice([0, 20, 30]), user=rng.choice([None, "analyst_1", "é😀"]),
                       context={"run": rng.randint(0, 9)}, regulations=["GDPR"])
    for i in range(400):
        kind = rng.random()
        user = rng.choice([None, None, "analyst_1", "bob", StrSubclass("carol")])
        level = rng.choice(LEVELS)
        if kind < 0.75:
            trail.log_model_inference(rng.choice(TEXTS) + str(i), rng.choice(TEXTS + [StrSubclass("sub")]),
                                      rng.choice(OUTPUTS), rng.choice(CONFIDENCES), user=user, level=level,
                                      subject=rng.choice([None, "customer_1", "customer_2"]))
        elif kind < 0.8:
            trail.log_data_access(rng.choice(TEXTS), ["a", "é"], rng.choice([0, 2**63 - 1]), rng.choice([None, "p"]),
                                  user, level=level)
        elif kind < 0.85:
            trail.log_error(rng.choice(TEXTS) + "Error", rng.choice(TEXTS), {"k": rng.choice(TEXTS)}, level=level)
        elif kind < 0.9:
            trail.log_compliance_check("c", "GDPR", rng.random() < 0.5, None, user=user)
        elif kind < 0.95:
            trail.log_user_request("access", f"customer_{rng.randint(1, 3)}", {"email": "a@b.example"}, "pending")
        else:
            trail.log_event("custom.kind", {"n": i}, user=user, level=level)
    trail.close("completed" if rng.random() < 0.5 else "failed", {"why": rng.choice(TEXTS)})


def clock_with_steps_back(rng: random.Random) -> Any:
    """now_micros for a test: mostly forward, sometimes back by up to a second."""
    now = [1_765_000_000_000_000]

    def now_micros() -> int:
        now[0] += rng.choice([0, 1, 7, 1000, -5, -1_000_000])
        return now[0]

    return now_micros


def logged(monkeypatch: pytest.MonkeyPatch, native: bool, seed: int, policy: Any, log_dir: Path) -> list[bytes]:
    """The messages of a seeded random trail, with the native EventChain or the pure-Python one."""
    monkeypatch.setattr(trail_module, "_native_events", secureml_audit_native.EventChain if native else None)
    monkeypatch.setattr(trail_module, "_uuid4", lambda: OPERATION_ID)
    monkeypatch.setattr(trail_module, "now_micros", clock_with_steps_back(random.Random(seed)))
    with capture_events() as captured:
        random_trail(random.Random(seed), policy, log_dir, captured.transport)
        return [value for _key, value in captured.transport.emitted]


# Pseudonyms are keyed, so deterministic: a policy without encryption gives byte-identical messages too.
PSEUDONYMS_ONLY = PrivacyPolicy(encrypt_fields=(), encrypt_keys=())


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("policy", ["off", PSEUDONYMS_ONLY], ids=["off", "pseudonyms"])
def test_random_trails_are_byte_identical_natively_and_in_python(
        seed: int, policy: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Random trails of every event type, tricky texts, floats, ints at the 2^63 limits, level filtering, the clock
    stepping back and the closing event give the same messages, hash chain included, on both paths."""
    native = logged(monkeypatch, True, seed, policy, tmp_path / "logs")
    python = logged(monkeypatch, False, seed, policy, tmp_path / "logs")
    assert len(native) > 100 and native == python


def test_the_default_policy_encrypts_and_pseudonymises_as_the_python_path(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With the default policy (user pseudonymised, input_data encrypted) both paths store pseudonyms and
    ciphertext, never the clear text, and the reader with the key store sees the same events as logged."""
    log_dir = tmp_path / "logs"
    runs = []
    for native in (True, False):
        monkeypatch.setattr(trail_module, "_native_events", secureml_audit_native.EventChain if native else None)
        with AuditTrail("native_event_op", log_dir=log_dir, user="analyst_1", bootstrap_servers="") as trail:
            assert (trail._inference is not None) is native
            for i, text in enumerate(TEXTS):
                trail.log_model_inference("m", f"{text} {i}", "low", 0.5, subject=f"customer_{i % 3}")
                trail.log_model_inference("m", text, OUTPUTS[i], None, subject="analyst_1")
                trail.log_model_inference("m", "enc:v1:already sealed", "low", None)
        logs = get_audit_logs(log_dir=log_dir, operation_id=trail.operation_id, event_type="model_inference")
        runs.append([{k: v for k, v in log.items() if k not in ("event_id", "operation_id", "operation_start",
                                                                  "timestamp", "hash", "prev_hash")} for log in logs])
        stored = b"".join(p.read_bytes() for p in sorted(log_dir.rglob("*")) if p.is_file())
        assert b"analyst_1" not in stored and b"customer_1" not in stored and b"plain text 1" not in stored
        assert b"enc:v1:already sealed" in stored  # a value that looks sealed is not sealed again
    assert len(runs[0]) == 3 * len(TEXTS) and runs[0] == runs[1]


def test_a_policy_that_redacts_inference_fields_keeps_the_python_path(tmp_path: Path) -> None:
    """A policy that redacts model_id or output (the native path does not redact) leaves inferences to the
    generated Python step; one that only pseudonymises and encrypts takes the native path."""
    redacting = PrivacyPolicy(redact_fields=("output",))
    with AuditTrail("native_event_op", log_dir=tmp_path, privacy=redacting, bootstrap_servers="") as trail:
        assert trail._inference is None
        trail.log_model_inference("m", "x", "mail bob@example.com", 0.5)
    with AuditTrail("native_event_op", log_dir=tmp_path, privacy="off", bootstrap_servers="") as off:
        assert off._inference is not None
    logs = get_audit_logs(log_dir=tmp_path, operation_id=trail.operation_id, event_type="model_inference")
    assert logs[0]["output"] == "mail <email>"


BAD_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("model_id", {"model_id": ""}), ("model_id", {"model_id": "   "}), ("model_id", {"model_id": "\u2028\x1c"}),
    ("model_id", {"model_id": 5}),
    ("model_id", {"model_id": "\ud800"}), ("input_data", {"input_data": None}),
    ("input_data", {"input_data": "bad \udfff"}), ("output", {"output": "lone \ud800"}),
    ("output", {"output": object()}), ("output", {"output": {(1, 2): "x"}}),
    ("confidence", {"confidence": 1.5}), ("confidence", {"confidence": -0.1}),
    ("confidence", {"confidence": float("nan")}), ("confidence", {"confidence": True}),
    ("confidence", {"confidence": "high"}), ("confidence", {"confidence": 2}),
    ("user", {"user": ""}), ("user", {"user": 7}), ("user", {"user": "\ud800"}),
    ("level", {"level": -1}), ("level", {"level": 2**31}), ("level", {"level": "LOUD"}), ("level", {"level": 1.5}),
    ("subject", {"subject": ""}), ("subject", {"subject": 3}),
]


def refusal(monkeypatch: pytest.MonkeyPatch, native: bool, arguments: dict[str, Any], policy: Any) -> tuple[str, int]:
    """The error text of a bad log_model_inference call, and the events recorded after it."""
    monkeypatch.setattr(trail_module, "_native_events", secureml_audit_native.EventChain if native else None)
    with capture_events() as captured:
        trail = AuditTrail("native_event_op", transport=captured.transport, privacy=policy, user="analyst_1")
        call = {"model_id": "m", "input_data": "x", "output": "o", "confidence": 0.5, **arguments}
        with pytest.raises(AuditValidationError) as raised:
            trail.log_model_inference(**call)
        return str(raised.value), len(captured.transport.emitted)


@pytest.mark.parametrize(("field", "arguments"), BAD_CALLS, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD_CALLS)])
@pytest.mark.parametrize("policy", ["off", None], ids=["off", "default"])
def test_bad_values_raise_the_python_paths_exact_error(
        field: str, arguments: dict[str, Any], policy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A value the rules refuse raises the same AuditValidationError, naming the call and the field, on both paths,
    and records nothing."""
    native, python = (refusal(monkeypatch, native, arguments, policy) for native in (True, False))
    assert native == python
    assert native[0].startswith("log_model_inference") and field in native[0] and native[1] == 1


def test_an_oversized_inference_raises_the_python_paths_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """An inference over MAX_EVENT_BYTES is refused with the error naming its largest value on both paths; the
    trail goes on with the next seq."""
    texts = []
    for native in (True, False):
        monkeypatch.setattr(trail_module, "_native_events", secureml_audit_native.EventChain if native else None)
        with capture_events() as captured:
            trail = AuditTrail("native_event_op", transport=captured.transport, privacy="off")
            with pytest.raises(AuditValidationError) as raised:
                trail.log_model_inference("m", "x" * 950_000, "o", 0.5)
            assert trail.log_model_inference("m", "x", "o", 0.5) == f"{trail.operation_id}:1"
            texts.append(str(raised.value).replace(trail.operation_id, "-"))
    assert texts[0] == texts[1] and "input_data" in texts[0]


def test_a_closed_trail_and_a_failing_transport_behave_as_in_python(tmp_path: Path) -> None:
    """After close() an inference raises AuditClosedError; a transport that raises leaves the chain where it was
    (the next event takes the seq and previous hash the failed one would have)."""
    with capture_events() as captured:
        trail = AuditTrail("native_event_op", transport=captured.transport, privacy="off")
        assert trail._inference is not None
        trail.close()
        with pytest.raises(AuditClosedError, match="is closed"):
            trail.log_model_inference("m", "x", "o", 0.5)
        assert trail.log_model_inference("m", "x", "o", 0.5, level=0) is None  # filtered, as in Python
    with capture_events() as captured:
        trail = AuditTrail("native_event_op", transport=captured.transport, privacy="off")
        emit = captured.transport.emit
        calls = itertools.count()

        def flaky(key: bytes, value: bytes, tracker: Any) -> None:
            if next(calls) == 0:
                raise AuditError("transport down")
            emit(key, value, tracker)

        trail._chain = secureml_audit_native.EventChain(*chain_arguments(trail, flaky))
        trail._inference = trail._chain.model_inference
        with pytest.raises(AuditError, match="transport down"):
            trail.log_model_inference("m", "x", "o", 0.5)
        assert trail.event_count == 0
        assert trail.log_model_inference("m", "x", "o", 0.5) == f"{trail.operation_id}:0"


def chain_arguments(trail: AuditTrail, emit: Any) -> tuple[Any, ...]:
    """The arguments of a native EventChain for a trail (policy off), with another emit."""
    from secureml.audit import events as ev
    from secureml.audit.codec import encode_long, encode_string

    plan = ev.PLANS["model_inference"]
    return (encode_long(1), f"{trail.operation_id}:", encode_string(trail.operation_id) + encode_string("x")
            + encode_long(0), b"\x00" + encode_string("{}"), 0, ev.MAX_EVENT_BYTES, trail_module, emit, trail._key,
            trail._tracker, trail.log_level, None, encode_string("model_inference"), plan.layout,
            plan.trailing_nulls, None)


SUBPROCESS_SCRIPT = """
import os, sys, random
os.getpid = lambda: 4242  # the events carry the producer's pid: the same in both processes
from secureml.audit import trail as trail_module
from test_native_event import random_trail, clock_with_steps_back, OPERATION_ID
from secureml.audit.testing import capture_events
assert (trail_module._native_events is None) == (sys.argv[2] == "0")
trail_module._uuid4 = lambda: OPERATION_ID
trail_module.now_micros = clock_with_steps_back(random.Random(5))
with capture_events() as captured:
    random_trail(random.Random(5), "off", sys.argv[1], captured.transport)
    print(",".join(value.hex() for _key, value in captured.transport.emitted))
"""


def test_a_process_without_the_accelerator_writes_the_same_bytes(tmp_path: Path) -> None:
    """With SECUREML_AUDIT_NATIVE=0 a process logs a random trail byte for byte as a process with the accelerator."""
    outputs = []
    for switch in ("1", "0"):
        env = {**os.environ, NATIVE_ENV: switch, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent),
                                                                               *sys.path])}
        done = subprocess.run([sys.executable, "-c", SUBPROCESS_SCRIPT, str(tmp_path / switch), switch], env=env,
                              capture_output=True, text=True, check=True, timeout=120)
        outputs.append(done.stdout.strip())
    assert outputs[0].count(",") > 100 and outputs[0] == outputs[1]


def test_outputs_read_back_as_logged(tmp_path: Path) -> None:
    """Every output the native path encodes itself (texts, ints, floats) reads back equal, as JSON text would."""
    outputs = [o for o in OUTPUTS if not str(o).startswith("enc:v1:")]  # the reader takes that for a sealed value
    with AuditTrail("native_event_op", log_dir=tmp_path, privacy="off", bootstrap_servers="") as trail:
        for output in outputs:
            trail.log_model_inference("m", "x", output, 0.5)
    logs = get_audit_logs(log_dir=tmp_path, event_type="model_inference")
    for output, log in zip(outputs, logs, strict=True):
        if isinstance(output, float) and math.isnan(output):
            assert math.isnan(log["output"])
        else:
            assert log["output"] == json.loads(json.dumps(output)), output


def test_the_level_and_user_a_trail_was_made_with_are_fixed() -> None:
    """log_level and user are read-only: the native path holds them, so a later assignment cannot make the two
    paths filter or attribute differently."""
    with capture_events() as captured:
        trail = AuditTrail("native_event_op", transport=captured.transport, privacy="off", log_level="WARNING",
                           user="analyst_1")
        assert (trail.log_level, trail.user) == (30, "analyst_1")
        with pytest.raises(AttributeError):
            trail.log_level = 0  # type: ignore[misc]
        with pytest.raises(AttributeError):
            trail.user = "bob"  # type: ignore[misc]
        assert trail.log_model_inference("m", "x", "o", 0.5) is None
        assert trail.log_model_inference("m", "x", "o", 0.5, level="ERROR") == f"{trail.operation_id}:1"


def test_the_count_and_state_are_readable_while_an_event_is_emitted() -> None:
    """A transport (or another thread) may read the trail's event_count, closed and repr while an event is being
    emitted: the native chain publishes them apart from the state the emitting call holds."""
    with capture_events() as captured:
        seen: list[tuple[int, bool]] = []
        trail: AuditTrail | None = None
        emit = captured.transport.emit

        def observing(key: bytes, value: bytes, tracker: Any) -> None:
            if trail is not None:
                seen.append((trail.event_count, trail.closed))
                assert "events=" in repr(trail)
            emit(key, value, tracker)

        captured.transport.emit = observing  # type: ignore[method-assign]
        trail = AuditTrail("native_event_op", transport=captured.transport, privacy="off")
        trail.log_model_inference("m", "x", "o", 0.5)
        trail.log_error("E", "message")
        trail.close()
    assert seen == [(1, False), (2, False), (3, False)]
