"""The native reveal (issue 11 item 3): `native/src/reveal.rs` opens stored ciphertexts in one call and gives
exactly what the pure-Python reveal gives (values as logged, `<erased>`, the sealed forms, ids behind
pseudonyms, filters by clear ids) on a real lake with the privacy policy on, and on tampered or odd stored texts.

CI installs the accelerator (`pip install ./native`): these tests fail, never skip, when it is missing."""

from __future__ import annotations

import base64
import copy
import gc
import json
import os
import pickle
import random
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import secureml_audit_native
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from test_native_rows import (
    NON_ASCII,
    assert_same_dicts,
    both_paths,
    every_type_lake,
    exact,
    read_with_keys,
)

from secureml.audit import get_audit_logs
from secureml.audit.accelerator import NATIVE_ENV
from secureml.audit.privacy import reader_keystore
from secureml.audit.privacy import reveal as reveal_module
from secureml.audit.privacy.keys import PSEUDONYM
from secureml.audit.privacy.protect import ENCRYPTED_PREFIX
from secureml.audit.privacy.reveal import ERASED, RevealedEvent, Revealer
from secureml.audit.schema import JSON_FIELDS
from secureml.query import logs as logs_module
from secureml.query import privacy as privacy_module
from secureml.query.logs import connect, query_events
from secureml.query.privacy import personal_columns
from secureml.reporting.integrity import integrity_section


def both_reveals(monkeypatch: pytest.MonkeyPatch, call: Any) -> tuple[Any, Any]:
    """``call()`` with the native open, then with the pure-Python one."""
    assert reveal_module._native_open is secureml_audit_native.open_sealed
    native = call()
    with monkeypatch.context() as patch:
        patch.setattr(reveal_module, "_native_open", None)
        python = call()
    return native, python


@pytest.fixture(scope="module")
def lake_and_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return every_type_lake(tmp_path_factory, "reveal", 12)


@pytest.fixture
def lake(lake_and_keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    return read_with_keys(lake_and_keys, monkeypatch)


def stored_texts(lake: Path) -> list[str]:
    """Every stored ciphertext of the lake (as JSON texts hold them, the quotes removed)."""
    table = query_events(None, None, None, None, lake, reveal=False)
    found = []
    for name in table.column_names:
        for value in table.column(name).to_pylist():
            if isinstance(value, str) and ENCRYPTED_PREFIX in value:
                found.append(json.loads(value) if value.startswith('"') else value)
    return [value for value in found if isinstance(value, str) and value.startswith(ENCRYPTED_PREFIX)]


def test_a_real_lake_reads_alike(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every event: the same dicts and sealed forms; values revealed, non-ASCII ones too, the erased subject's
    values `<erased>`."""
    native, python = both_reveals(monkeypatch, lambda: get_audit_logs(log_dir=lake))
    assert_same_dicts(native, python)
    inferences = [log for log in native if log["event_type"] == "model_inference"]
    assert any(log["input_data"] == ERASED for log in inferences)
    assert any(log["input_data"].startswith("subject-2 features ") for log in inferences)
    assert any(any(text and text in log["input_data"] for text in NON_ASCII) for log in inferences)
    revealed = [log for log in native if isinstance(log, RevealedEvent)]
    assert revealed and all(stored.startswith(("ps_", ENCRYPTED_PREFIX)) for log in revealed
                            for shown, stored in log.sealed.values() if isinstance(stored, str))
    assert any(log.get("user_id") == "subject-2" for log in native)


def test_arrow_results_and_the_sql_view_read_alike(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Arrow output and connect()'s view (revealed column by column, each distinct text once) both ways."""
    native, python = both_reveals(monkeypatch, lambda: get_audit_logs(log_dir=lake, output="arrow"))
    assert native.equals(python)
    assert ERASED in native.column("input_data").to_pylist()
    sql = "SELECT event_id, user, user_id, input_data, details FROM events ORDER BY event_id"
    native_rows, python_rows = both_reveals(monkeypatch, lambda: connect(lake).sql(sql).fetchall())
    assert native_rows == python_rows
    assert any(row[3] and row[3].startswith("subject-2 features ") for row in native_rows)


@pytest.mark.parametrize("query", [
    {"event_type": "model_inference"}, {"subject": "subject-2"}, {"subject": "subject-1"}, {"user": "analyst"},
    {"limit": 9, "offset": 4}, {"event_type": "user_request"},
])
def test_filtered_results_read_alike(lake: Path, query: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Filters by clear ids (matched through pseudonyms), types and pages give the same events both ways."""
    native, python = both_reveals(monkeypatch, lambda: get_audit_logs(log_dir=lake, **query))
    assert native
    assert_same_dicts(native, python)


def test_the_native_open_is_used_and_opens_every_live_subject(lake: Path) -> None:
    """Stored ciphertexts of live subjects open natively (a str or a JSON text); the erased subject's give None."""
    texts = stored_texts(lake)
    revealer = Revealer(reader_keystore(lake))  # type: ignore[arg-type]
    opened = secureml_audit_native.open_sealed(texts, revealer.key_bytes)
    assert len(opened) == len(texts)
    for text, value in zip(texts, opened):
        python = revealer.value(text)
        if value is None:
            assert python == ERASED
        else:
            assert (value if isinstance(value, str) else json.loads(value)) == python
    assert sum(value is not None for value in opened) > len(texts) // 2


def odd_texts(lake: Path) -> list[Any]:
    """Stored texts tampered with or made by hand: flipped bytes, cut, lenient base64, other plaintexts."""
    texts = stored_texts(lake)
    revealer = Revealer(reader_keystore(lake))  # type: ignore[arg-type]
    live = next(t for t in texts if revealer.key_bytes(t[len(ENCRYPTED_PREFIX):].partition(":")[0]))
    name, _, payload = live[len(ENCRYPTED_PREFIX):].partition(":")
    key = AESGCM(revealer.key_bytes(name))  # type: ignore[arg-type]
    raw = base64.b64decode(payload)
    flipped = raw[:20] + bytes([raw[20] ^ 1]) + raw[21:]

    def sealed(plain: bytes, aad: bytes = name.encode()) -> str:
        nonce = os.urandom(12)
        return f"{ENCRYPTED_PREFIX}{name}:{base64.b64encode(nonce + key.encrypt(nonce, plain, aad)).decode()}"

    plains = [b'"plain"', b'"\\u00e9 \\"q\\""', '"日本 😀"'.encode(), b'{"a":[1,2.5,null]}', b'3', b'1e400', b'NaN',
              b'""', b'"\xff"', b'\xff', b'"a\tb"', b'"a"b"', b'', b' "x"', b'"\\ud800"', b'[]', b'"\x7f"']
    return [
        live, live,  # the same text twice
        f"{ENCRYPTED_PREFIX}{name}:{base64.b64encode(flipped).decode()}",  # tampered ciphertext
        f"{ENCRYPTED_PREFIX}{name}:{base64.b64encode(raw[:27]).decode()}",  # cut below nonce + tag
        f"{ENCRYPTED_PREFIX}{name}:{base64.b64encode(raw[:12]).decode()}",
        f"{ENCRYPTED_PREFIX}{name}:{payload[:-2]}",  # padding gone
        f"{ENCRYPTED_PREFIX}{name}:{payload[:10]}\n{payload[10:]}",  # lenient base64: a newline inside
        f"{ENCRYPTED_PREFIX}{name}:{payload}!",
        f"{ENCRYPTED_PREFIX}{name}:",
        f"{ENCRYPTED_PREFIX}{name}",
        ENCRYPTED_PREFIX,
        f"{ENCRYPTED_PREFIX}ps_{'a' * 24}:{payload}",  # a pseudonym without a key
        f"{ENCRYPTED_PREFIX}not-a-pseudonym:{payload}",
        f"{ENCRYPTED_PREFIX}{name.upper()}:{payload}",
        f"{ENCRYPTED_PREFIX}{name}\ud800:{payload}",  # a lone surrogate
        sealed(b'"x"', b"another name"),  # associated data of another field
        *[sealed(plain) for plain in plains],
        name, "ps_short", "plain text", "", "é",
    ]


def test_tampered_and_odd_stored_texts_read_alike(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What today's path makes of each odd text (mostly `<erased>`), the native one makes too, exactly."""
    texts = odd_texts(lake)
    assert PSEUDONYM.match(texts[0][len(ENCRYPTED_PREFIX):].partition(":")[0])

    def shown() -> list[Any]:
        revealer = Revealer(reader_keystore(lake))  # type: ignore[arg-type]
        found = revealer.texts(texts)
        return [exact(found[text]) for text in texts]

    native, python = both_reveals(monkeypatch, shown)
    assert native == python
    opened = secureml_audit_native.open_sealed(texts[:-5], Revealer(reader_keystore(lake)).key_bytes)  # type: ignore[arg-type]
    assert {type(value) for value in opened} == {str, bytes, type(None)}  # each of the three answers is tested
    assert python == [exact(Revealer(reader_keystore(lake)).text(text)) for text in texts]  # type: ignore[arg-type]
    assert python[2] == exact(ERASED)
    assert python.count(exact(ERASED)) < len(texts) - 5


def test_events_holding_odd_texts_reveal_alike(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Events whose fields hold the odd texts (and JSON values with nested ones): the same events and sealed forms."""
    texts = odd_texts(lake)
    logs = [{"event_type": "model_inference", "input_data": text, "user": texts[-1 - n % 5],
             "details": {"nested": [text, {"deep": text}]} if n % 2 else None} for n, text in enumerate(texts)]

    def revealed() -> list[dict[str, Any]]:
        return reveal_module.reveal_logs(Revealer(reader_keystore(lake)), logs,  # type: ignore[arg-type]
                                         ("input_data", "user", "details"))

    native, python = both_reveals(monkeypatch, revealed)
    assert_same_dicts(native, python)
    one = [reveal_module.reveal_log(Revealer(reader_keystore(lake)), log) for log in logs]  # type: ignore[arg-type]
    assert_same_dicts(one, python)
    nested = [log for log in native if isinstance(log, RevealedEvent) and "details" in log.sealed]
    assert nested and all(log.sealed["details"][0] == log["details"] and log.sealed["details"][0] is not log["details"]
                          for log in nested)  # the sealed copy is not the shown value (the caller may change it)


def revealing_in_the_native_pass(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Records, per native conversion, whether it made the revealed events itself (a reveal given and taken)."""
    made: list[bool] = []
    convert = logs_module._native_log_dicts

    def spy(*args: Any) -> Any:
        logs = convert(*args)
        made.append(args[-1] is not None and logs is not None)
        return logs

    monkeypatch.setattr(logs_module, "_native_log_dicts", spy)
    return made


def revealed_alike(monkeypatch: pytest.MonkeyPatch, table: pa.Table, order: np.ndarray | None,
                   revealer: Revealer) -> list[dict[str, Any]]:
    """``table``'s dicts as the native pass makes them with the reveal (checked: it made them), once checked equal to
    the pure-Python path's."""
    with monkeypatch.context() as patch:
        made = revealing_in_the_native_pass(patch)
        native = logs_module._to_logs(table, order, revealer)
    assert made == [True]
    with monkeypatch.context() as patch:
        patch.setattr(logs_module, "_native_log_dicts", None)
        python = logs_module._to_logs(table, order, revealer)
    assert_same_dicts(native, python)
    return native


def test_revealed_events_made_in_the_native_pass_read_alike(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where only text columns hold pseudonyms and ciphertexts (a real lake's users and inputs), the native dicts
    make each revealed event in their pass: the same events and sealed forms as the dicts revealed after."""
    revealer = Revealer(reader_keystore(lake))  # type: ignore[arg-type]
    for query in ({"event_type": "model_inference"}, {"event_type": ["model_inference", "data_access"]},
                  {"subject": "subject-2", "event_type": "model_inference"}, {"limit": 7, "offset": 3,
                                                                              "event_type": "model_inference"}):
        table = query_events(log_dir=lake, reveal=False, **query)  # type: ignore[arg-type]
        assert not any(name in JSON_FIELDS for name in personal_columns(table, revealer)), query
        native, python = both_paths(monkeypatch, lambda: get_audit_logs(log_dir=lake, **query))  # noqa: B023
        assert_same_dicts(native, python)
        assert any(isinstance(log, RevealedEvent) for log in native)
        with monkeypatch.context() as patch:
            made = revealing_in_the_native_pass(patch)
            assert_same_dicts(get_audit_logs(log_dir=lake, **query), python)
        assert made == [True]
    with monkeypatch.context() as patch:  # JSON values to reveal too: their few rows are revealed after, in Python
        made = revealing_in_the_native_pass(patch)
        everything = get_audit_logs(log_dir=lake)
    assert made == [True]
    _, python = both_paths(monkeypatch, lambda: get_audit_logs(log_dir=lake))
    assert_same_dicts(everything, python)
    assert any(isinstance(log, RevealedEvent) and "details" in log.sealed and "user_id" in log.sealed
               for log in everything)  # a text and a JSON column revealed in one event, in the Python path's order


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_stored_texts_revealed_in_the_native_pass_read_alike(lake: Path, seed: int,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Random users and inputs in every row (pseudonyms live, erased and unknown, tampered and odd ciphertexts,
    clear and non-ASCII text, empty, None, runs of one value and alternations, so rows copy revealed and plain
    rows alike), several batches, shuffled orders: the same events and sealed forms both ways."""
    rng = random.Random(seed)
    odd = [text for text in odd_texts(lake) if text == text.encode(errors="replace").decode()]  # Arrow: UTF-8 only
    table = query_events(log_dir=lake, reveal=False)
    revealer = Revealer(reader_keystore(lake))  # type: ignore[arg-type]
    for name in personal_columns(table, revealer):
        if name in JSON_FIELDS:  # left to the Python reveal (tested above): nulls here
            index = table.schema.get_field_index(name)
            table = table.set_column(index, table.schema.field(index), pa.nulls(table.num_rows, pa.string()))
    users = [*{v for v in table.column("user").to_pylist() if v}, "ps_short", "analyst", "é", "", None]
    inputs = [*odd, *NON_ASCII, None, "plain"]
    for _ in range(3):
        rows = table.num_rows
        pick_users, pick_inputs = [], []
        while len(pick_users) < rows:
            run = rng.choice([1, 1, 2, 5])
            pick_users += [rng.choice(users)] * run
            pick_inputs += [rng.choice(inputs)] * run if rng.random() < 0.5 else rng.choices(inputs, k=run)
        mixed = table.set_column(table.schema.get_field_index("user"), "user", pa.array(pick_users[:rows], pa.string()))
        mixed = mixed.set_column(mixed.schema.get_field_index("input_data"), "input_data",
                                 pa.array(pick_inputs[:rows], pa.string()))
        mixed = pa.Table.from_batches(mixed.to_batches(max_chunksize=rng.choice([7, 50, rows])))
        order = np.array(rng.sample(range(rows), rows)) if rng.random() < 0.7 else None
        columns = tuple(personal_columns(mixed, revealer))
        assert {"user", "input_data"} <= set(columns) and not any(name in JSON_FIELDS for name in columns)
        native = revealed_alike(monkeypatch, mixed, order, revealer)
        assert {exact(log)[0] for log in native} == {dict, RevealedEvent}
        assert any(log.sealed.get("input_data", ("", ""))[0] == ERASED for log in native
                   if isinstance(log, RevealedEvent))


@pytest.mark.parametrize("seed", [4, 5])
def test_random_json_values_to_reveal_read_alike(lake: Path, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """JSON columns holding ciphertexts and pseudonyms (nested, as a JSON string, inside longer text, erased and
    tampered) in random rows beside revealed text columns, several batches, shuffled orders: the rows revealed
    after the native pass are the Python path's, and every other row keeps its native dict."""
    rng = random.Random(seed)
    odd = [text for text in odd_texts(lake) if text == text.encode(errors="replace").decode()]
    table = query_events(log_dir=lake, reveal=False)
    revealer = Revealer(reader_keystore(lake))  # type: ignore[arg-type]
    users = [v for v in table.column("user").to_pylist() if v and v.startswith("ps_")]
    details = [None, '{"a":1}', '"plain"', json.dumps(f"x {odd[0]}"), json.dumps(users[0]),
               *[json.dumps({"email": text, "n": [1, {"deep": rng.choice(users)}]}) for text in odd[:12]],
               json.dumps([odd[0], {"name": odd[2]}], ensure_ascii=False)]
    for _ in range(3):
        rows = table.num_rows
        mixed = table.set_column(table.schema.get_field_index("details"), "details",
                                 pa.array(rng.choices(details, k=rows), pa.string()))
        mixed = pa.Table.from_batches(mixed.to_batches(max_chunksize=rng.choice([5, 40, rows])))
        order = np.array(rng.sample(range(rows), rows)) if rng.random() < 0.7 else None
        columns = tuple(personal_columns(mixed, revealer))
        assert "details" in columns and "user" in columns
        native = revealed_alike(monkeypatch, mixed, order, revealer)
        assert any(isinstance(log, RevealedEvent) and "details" in log.sealed for log in native)
        assert any(log.get("details") == {"a": 1} for log in native)


def test_switched_off_the_pure_python_path_gives_the_same_events(lake: Path) -> None:
    """A process with SECUREML_AUDIT_NATIVE=0 (no accelerator at all) reads the same events as this one."""
    script = ("import pickle, sys\n"
              "from secureml.audit.privacy import reveal\n"
              "from secureml.audit import get_audit_logs\n"
              "assert reveal._native_open is None\n"
              "sys.stdout.buffer.write(pickle.dumps(get_audit_logs(log_dir=sys.argv[1])))\n")
    done = subprocess.run([sys.executable, "-c", script, str(lake)], env={**os.environ, NATIVE_ENV: "0"},
                          capture_output=True, check=True)
    assert_same_dicts(get_audit_logs(log_dir=lake), pickle.loads(done.stdout))


def test_sealed_of_natively_revealed_events_behaves_as_a_dict(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``sealed``, which a natively revealed event finds among its query's stored values when first read, is one
    dict from then on (changes to it stay), and ``as_sealed()``, copies and pickles give what the Python path's
    events give."""
    query = {"event_type": "model_inference"}
    native, python = both_paths(monkeypatch, lambda: get_audit_logs(log_dir=lake, **query))
    pairs = [(ours, theirs) for ours, theirs in zip(native, python) if isinstance(ours, RevealedEvent)]
    assert pairs and not hasattr(pairs[0][0], "__dict__")
    for ours, theirs in pairs:
        assert exact(pickle.loads(pickle.dumps(ours)).sealed) == exact(theirs.sealed)
        assert exact(copy.copy(ours).sealed) == exact(theirs.sealed)
        assert exact(ours.as_sealed()) == exact(theirs.as_sealed())
        assert ours.sealed is ours.sealed
    ours, theirs = pairs[0]
    ours.sealed["input_data"] = theirs.sealed["input_data"] = ("changed", "stored")
    ours["input_data"] = theirs["input_data"] = "changed"
    assert ours.as_sealed()["input_data"] == theirs.as_sealed()["input_data"] == "stored"
    made = RevealedEvent({"a": 1})
    with pytest.raises(AttributeError):
        made.sealed  # noqa: B018 (never revealed: no sealed forms, as before)
    made.sealed = {"a": (1, "ps_x")}
    assert made.as_sealed() == {"a": "ps_x"}


def test_a_revealed_event_pickled_by_the_version_before_reads_its_sealed_forms() -> None:
    """The version before pickled a revealed event with its sealed forms as one flat tuple in its slot (field, shown,
    stored, ...): unpickled now, it is a revealed event with the same ``sealed`` and ``as_sealed()``."""

    class Before:  # unpickles as that version's RevealedEvent did: cls.__new__(cls), its slot, then its items
        def __reduce_ex__(self, protocol: object) -> tuple[Any, ...]:
            return (RevealedEvent.__new__, (RevealedEvent,), (None, {"_sealed": ("user", "alice", "ps_x")}), None,
                    iter({"user": "alice", "seq": 3}.items()))

    event = pickle.loads(pickle.dumps(Before(), protocol=4))
    assert isinstance(event, RevealedEvent) and event == {"user": "alice", "seq": 3}
    assert event.sealed == {"user": ("alice", "ps_x")} and event.as_sealed() == {"user": "ps_x", "seq": 3}


def test_a_querys_revealed_events_cost_a_dict_and_go_with_it(lake: Path) -> None:
    """Natively revealed events are of their query's own ``RevealedEvent`` subclass, which adds nothing to a dict:
    each keeps the row dicts' shared keys (the size of its type's plain dict), changes as a dict does, and the
    class, with the query's stored values, is freed with its events."""
    logs = get_audit_logs(log_dir=lake, event_type="model_inference")
    revealed = [log for log in logs if isinstance(log, RevealedEvent)]
    assert revealed and type(revealed[0]) is not RevealedEvent and type(revealed[0]).__name__ == "RevealedEvent"
    assert {type(log) for log in revealed} == {type(revealed[0])}
    assert all(sys.getsizeof(log) == sys.getsizeof(logs_module._template("model_inference").copy())
               for log in revealed)
    again = get_audit_logs(log_dir=lake, event_type="model_inference")
    assert type(next(log for log in again if isinstance(log, RevealedEvent))) is not type(revealed[0])
    event = revealed[0]
    items, sealed = dict(event), event.sealed
    event["added"] = 1
    assert list(event)[-1] == "added" and type(event.copy()) is dict and event.sealed is sealed
    del event["added"]
    assert event == items and json.loads(json.dumps(event)) == json.loads(json.dumps(items))
    freed = weakref.ref(type(event))
    del logs, revealed, event, again
    gc.collect()
    assert freed() is None


def test_the_next_query_drops_the_stored_values_of_one_whose_events_are_gone(lake: Path) -> None:
    """A query's stored values stay while one of its events does, and the next query drops them once none is left,
    without waiting for the collector to free the query's class."""
    logs = get_audit_logs(log_dir=lake, event_type="model_inference")
    held = next(log for log in logs if isinstance(log, RevealedEvent) and "input_data" in log.sealed)
    rows, sealed = type(held)._rows, dict(held.sealed)
    del logs
    get_audit_logs(log_dir=lake, event_type="model_inference")
    assert rows.holding() and held.sealed == sealed and not rows.unused()
    del held
    assert rows.unused() and rows.holding()
    get_audit_logs(log_dir=lake, event_type="model_inference")
    assert not rows.holding() and rows not in [ref() for ref in privacy_module._QUERIES]


def test_a_revealed_event_finds_its_sealed_forms_by_its_event_id(lake: Path) -> None:
    """A query's event finds its sealed forms by its ``event_id``: one whose id was changed finds another
    event's or none, and a report then finds it changed rather than calling it intact."""
    logs = get_audit_logs(log_dir=lake, event_type="model_inference")
    first, second = [log for log in logs if isinstance(log, RevealedEvent) and "input_data" in log.sealed][:2]
    assert integrity_section(False, None, [first])[1] == "verified"
    assert first.as_sealed()["input_data"].startswith(ENCRYPTED_PREFIX)
    first["event_id"] = second["event_id"]
    assert first.sealed is second.sealed
    assert integrity_section(False, None, [first])[1] == "FAILED"
    first["event_id"] = "elsewhere"
    assert first.sealed == {} and first.as_sealed() == dict(first)
    assert integrity_section(False, None, [first])[1] == "FAILED"


def test_the_native_pass_gives_a_reveal_class_only_a_dicts_layout(lake: Path) -> None:
    """log_dicts refuses, before making any dict, a reveal class that is not a dict subclass of a dict's layout (a
    slot, an instance ``__dict__``, not a dict); one of a dict's layout is given to the revealed rows."""
    table = query_events(log_dir=lake, reveal=False)
    revealer = Revealer(reader_keystore(lake))  # type: ignore[arg-type]
    columns = tuple(personal_columns(table, revealer))
    texts = tuple(name for name in columns if name not in JSON_FIELDS)

    class Slotted(RevealedEvent):
        __slots__ = ("extra",)

    class Open(dict):  # type: ignore[type-arg]
        pass

    class Fine(dict):  # type: ignore[type-arg]
        __slots__ = ()

    def call(event_class: type) -> Any:
        return secureml_audit_native.log_dicts(
            table.to_batches(), logs_module._template, logs_module.TIMESTAMP_FIELDS, tuple(JSON_FIELDS), json.loads,
            None, (texts, event_class, revealer.key_bytes, revealer.text))

    for wrong in (Slotted, Open, list, reveal_module.HeldEvent):
        with pytest.raises(ValueError, match="must be a subclass of dict with __slots__"):
            call(wrong)
    made = call(Fine)
    assert any(type(log) is Fine for log in made) and {type(log) for log in made} <= {dict, Fine}


def test_an_erased_subjects_ciphertexts_are_revealed_once_per_subject(lake: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows holding ciphertexts read as `<erased>` (an erased subject's, under a key made since or none, an unknown
    subject's) read as in the Python path, which the native pass asks once, not once per row."""
    revealer = Revealer(reader_keystore(lake))  # type: ignore[arg-type]
    table = query_events(log_dir=lake, reveal=False, event_type="model_inference")

    def name(text: str) -> str:
        return text[len(ENCRYPTED_PREFIX):].partition(":")[0]

    stored = [t for t in table.column("input_data").to_pylist() if t and t.startswith(ENCRYPTED_PREFIX)]
    erased = [t for t in stored if revealer.text(t) == ERASED]
    live = [t for t in stored if revealer.text(t) != ERASED]
    unknown = f"{ENCRYPTED_PREFIX}ps_{'a' * 24}:{live[0].rpartition(':')[2]}"
    assert erased and live
    assert all(revealer.key_bytes(name(t)) for t in erased)  # keys made since the erasure: tags that do not check
    assert revealer.key_bytes(name(unknown)) is None  # and a subject without a key
    rng = random.Random(6)
    inputs = rng.choices([*erased, unknown, live[0]], k=table.num_rows)
    mixed = table.set_column(table.schema.get_field_index("input_data"), "input_data", pa.array(inputs, pa.string()))
    asked: list[str] = []
    text = revealer.text
    monkeypatch.setattr(revealer, "text", lambda value: (asked.append(value), text(value))[1])
    native = logs_module._to_logs(mixed, None, revealer)
    asked_natively = [value for value in asked if value.startswith(ENCRYPTED_PREFIX)]
    with monkeypatch.context() as patch:
        patch.setattr(logs_module, "_native_log_dicts", None)
        python = logs_module._to_logs(mixed, None, revealer)
    assert_same_dicts(native, python)
    assert sum(log["input_data"] == ERASED for log in native) == sum(t != live[0] for t in inputs) > 2
    assert [text(value) for value in asked_natively].count(ERASED) == 1


def test_the_native_scan_finds_the_columns_arrow_finds(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``personal_columns`` through the native scan gives the columns Arrow's kernels give: on the real lake, on random
    values (marks at the start, inside, split across two values, in JSON, in the wrong kind of column), several and
    sliced batches, and with a null whose bytes hold a mark."""
    revealer = Revealer(reader_keystore(lake))  # type: ignore[arg-type]

    def both(table: pa.Table) -> tuple[list[str], list[str]]:
        native = list(personal_columns(table, revealer))
        with monkeypatch.context() as patch:
            patch.setattr(privacy_module, "_native_marked", None)
            return native, list(personal_columns(table, revealer))

    native, arrow = both(query_events(log_dir=lake, reveal=False))
    assert native == arrow and {"user", "input_data", "details"} <= set(native)
    rng = random.Random(8)
    values = [None, "", "e", "p", "enc", "enc:v", "1:x", "ps", "_q", "a\"", "ps_", '"ps_q"', "ps_abc", "xps_a",
              "enc:v1:ps_a:b", "x enc:v1:", '{"a":"enc:v1:x"}', "plain", "é"]
    names = ["user", "user_id", "details", "context", "input_data", "model_id", "event_type"]
    seen = set()
    for _ in range(60):
        columns = {name: rng.choices(values[:10] if rng.random() < 0.5 else values, k=rng.choice([1, 3, 40, 200]))
                   for name in names}
        rows = min(len(v) for v in columns.values())
        table = pa.table({name: pa.array(v[:rows], pa.string()) for name, v in columns.items()})
        table = pa.Table.from_batches(table.to_batches(max_chunksize=rng.choice([1, 2, 7])))
        if rows > 2 and rng.random() < 0.5:
            table = table.slice(1, rows - 2)
        if table.num_rows:
            native, arrow = both(table)
            assert native == arrow
            seen.update(native)
    # Each kind of column a policy may seal found marked in some table; the envelope's event_type, which no policy
    # seals, never (``REVEALABLE_FIELDS``), whatever it holds.
    assert seen == set(names) - {"event_type"}
    offsets = pa.array([0, 7, 10], pa.int32()).buffers()[1]
    hidden = pa.Array.from_buffers(pa.string(), 2, [pa.py_buffer(bytes([0b10])), offsets, pa.py_buffer(b"enc:v1:abc")])
    split = pa.array(["enc:v", "1:x", 'a"', "ps_"])
    for name in ("details", "input_data"):
        for column in (hidden, split):
            table = pa.table({name: column})
            assert both(table) == ([], [])
