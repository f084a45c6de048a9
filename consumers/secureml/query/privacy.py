"""The privacy step of every reader: filter values turned into pseudonyms, stored values revealed.

get_audit_logs, connect, the query CLI and whatever reads through them (exports, the web UI)
show values as logged while their subject's key exists, ``<erased>`` after the erasure, and
stored values as they are when no key store is configured.
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from secureml.audit import accelerator
from secureml.audit.exceptions import AuditValidationError
from secureml.audit.privacy import reader_keystore
from secureml.audit.privacy.keys import pseudonym
from secureml.audit.privacy.protect import ENCRYPTED_PREFIX
from secureml.audit.privacy.reveal import MARKS, REVEALABLE_FIELDS, RevealedEvent, Revealer, reveal_log
from secureml.audit.privacy.reveal import reveal_logs as reveal_events
from secureml.audit.schema import JSON_FIELDS

IDENTIFIER_COLUMNS = ("user", "user_id")
# The accelerator's scan for the columns to reveal (native/src/reveal.rs), or None: the columns are the same.
_native_marked = None if accelerator.native is None else accelerator.native.marked_columns


def revealer_for(log_dir: Path | None) -> Revealer | None:
    """A revealer over the key store readers use, or None when there is none."""
    store = reader_keystore(log_dir)
    return None if store is None else Revealer(store)


def stored_forms(value: object, field: str, log_dir: Path | None, where: str) -> list[str] | None:
    """The forms an identifier filter may be stored in: as typed, and as its pseudonym."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise AuditValidationError(field, f"must be a string, got {type(value).__name__}", where=where)
    store = reader_keystore(log_dir)
    if store is None or value.startswith("ps_"):
        return [value]
    return [value, pseudonym(store.pseudonym_key(), value)]


def reveal_array(values: pa.Array | pa.ChunkedArray, reveal: Callable[[list[Any]], list[Any]]
                 ) -> pa.Array | pa.ChunkedArray:
    """Values revealed (``reveal`` takes and gives a list), each distinct value once (ids repeat: a column
    of a million rows holds a few hundred users); unchanged, without a copy, when none holds a pseudonym
    or a ciphertext."""
    marked = pc.or_(pc.starts_with(values, "ps_"), pc.match_substring(values, ENCRYPTED_PREFIX))
    if not pc.any(marked).as_py():
        return values
    distinct = pc.unique(values)
    revealed = pa.array(reveal(distinct.to_pylist()), values.type)
    return pc.take(revealed, pc.index_in(values, distinct))


def _each(reveal: Callable[[Any], Any]) -> Callable[[list[Any]], list[Any]]:
    """A reveal of one value applied to a list (ids and JSON texts have no batch step: each is cheap or rare)."""
    return lambda values: [reveal(v) for v in values]


def _reveal_of(revealer: Revealer, name: str) -> Callable[[list[Any]], list[Any]]:
    """How to reveal a stored column's values, a list at a time (ciphertexts are opened together)."""
    if name in IDENTIFIER_COLUMNS:
        return _each(revealer.identifier)
    if name in JSON_FIELDS:
        return _each(revealer.json_text)
    return revealer.text_list


def _marked(name: str, column: pa.ChunkedArray) -> bool:
    """Whether a stored text column holds something to reveal: an identifier a pseudonym, a JSON text a ciphertext
    or a pseudonym anywhere, any other text a ciphertext."""
    if name in IDENTIFIER_COLUMNS:
        return bool(pc.any(pc.starts_with(column, "ps_")).as_py())
    if name in JSON_FIELDS:
        return bool(pc.any(_json_marks(column)).as_py())
    return bool(pc.any(pc.starts_with(column, ENCRYPTED_PREFIX)).as_py())


def _json_marks(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Per value of a stored JSON column, whether it holds something to reveal: a ciphertext or a pseudonym anywhere."""
    return pc.or_(pc.match_substring(column, ENCRYPTED_PREFIX), pc.match_substring(column, '"ps_'))


def personal_columns(table: pa.Table, revealer: Revealer | None) -> dict[str, Callable[[list[Any]], list[Any]]]:
    """The text columns of an events table that hold pseudonyms or ciphertexts, with how to reveal each: of those a
    policy may seal (``REVEALABLE_FIELDS``). The accelerator finds them in one pass that stops at the first marked
    value (``marked_columns``), the same columns Arrow's kernels find here otherwise."""
    if revealer is None or table.num_rows == 0:
        return {}
    if _native_marked is not None:
        candidates = table.select([name for name in table.column_names if name in REVEALABLE_FIELDS])
        names = _native_marked(candidates.to_batches(), IDENTIFIER_COLUMNS, tuple(JSON_FIELDS))
        return {name: _reveal_of(revealer, name) for name in names}
    found = {}
    for field in table.schema:
        if field.name not in REVEALABLE_FIELDS:
            continue
        column = table.column(field.name)
        # A column of nulls (another event type's payload) holds nothing to reveal: no Arrow scan for it.
        text = pa.types.is_string(field.type) or pa.types.is_large_string(field.type)
        if text and column.null_count < len(column) and _marked(field.name, column):
            found[field.name] = _reveal_of(revealer, field.name)
    return found


def reveal_table(table: pa.Table, revealer: Revealer | None) -> pa.Table:
    """An Arrow table of events with pseudonyms and ciphertexts revealed (columns holding neither are kept)."""
    for name, reveal in personal_columns(table, revealer).items():
        index = table.schema.get_field_index(name)
        field = table.schema.field(index)
        table = table.set_column(index, field, reveal_array(table.column(index), reveal))
    return table


def reveal_logs(logs: list[dict[str, Any]], revealer: Revealer | None, columns: tuple[str, ...]
                ) -> list[dict[str, Any]]:
    """Event dicts as logged (each keeps its sealed values for integrity checks); only ``columns``, those of the
    result that hold pseudonyms or ciphertexts (``personal_columns``), are looked at, so other queries pay nothing."""
    if not columns or revealer is None:
        return logs
    return reveal_events(revealer, logs, columns)


class RevealedRows:
    """One query's revealed events, the rows the native pass reveals (``_to_logs``): the stored texts of the revealed
    ``columns`` of the query's table (``hold``), kept as the table's columns until an event's ``sealed`` is first read.

    The events are of ``event_class``, a subclass of ``RevealedEvent`` made for this query, and find their
    ``sealed`` here by their ``event_id`` (an event whose ``event_id`` was changed since finds nothing, or another
    event's forms, and is then checked as changed): the fields its event type carries (``keys_of``) whose stored
    text is a pseudonym or a ciphertext. The first read reveals the stored texts again with the query's
    ``revealer``, whose keys are those the query was shown with, and each event's ``sealed`` is then made once.

    The stored texts and event ids stay in memory as long as one of the events does. A class is always in a
    reference cycle (its ``__mro__`` holds it), so only the cyclic collector frees it: the next query's
    ``release_unused`` drops the values of those whose events are all gone.
    """

    def __init__(self, revealer: Revealer, keys_of: Callable[[str | None], tuple[str, ...]]) -> None:
        self.columns: tuple[str, ...] = ()
        self._revealer: Revealer | None = revealer
        self._keys_of = keys_of
        self._event_ids: pa.ChunkedArray | None = None
        self._stored_columns: dict[str, pa.ChunkedArray] = {}
        self._stored: dict[str, list[Any]] = {}
        self._carried: dict[str | None, tuple[str, ...]] = {}
        self._shown: dict[str, Any] = {}
        self._places: dict[Any, int] | None = None
        self._made: dict[int, dict[str, tuple[Any, Any]]] = {}
        self._lock = threading.Lock()

        class QueryEvent(RevealedEvent):
            __slots__ = ()
            _rows = self

            @property
            def sealed(self) -> dict[str, tuple[Any, Any]]:
                return type(self)._rows.sealed_of(self)

        QueryEvent.__name__ = QueryEvent.__qualname__ = "RevealedEvent"
        QueryEvent.__module__ = RevealedEvent.__module__
        self.event_class: type[RevealedEvent] = QueryEvent
        del QueryEvent
        # The class's references while it has no instance (each event holds one), counted as `unused` counts them.
        self._own_references = sys.getrefcount(self.event_class)

    def hold(self, table: pa.Table, columns: tuple[str, ...]) -> None:
        """The query's rows, once the native pass has made its events: ``columns``, those it revealed."""
        self.columns = columns
        self._event_ids = table.column("event_id")
        self._stored_columns = {name: table.column(name) for name in (*columns, "event_type")}

    def _read(self) -> dict[Any, int]:
        """Each event id's row, the stored texts as lists and their shown forms, made on the first read."""
        with self._lock:  # once, whichever thread reads first
            if self._places is None:
                ids = [] if self._event_ids is None else self._event_ids.to_pylist()
                self._stored = {name: column.to_pylist() for name, column in self._stored_columns.items()}
                marked = {value for name in self.columns for value in self._stored[name]
                          if isinstance(value, str) and value.startswith(MARKS)}
                self._shown = {} if self._revealer is None else self._revealer.texts(marked)
                self._places = dict(zip(ids, range(len(ids))))
                self._event_ids, self._stored_columns, self._revealer = None, {}, None
            return self._places

    def sealed_of(self, event: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
        """``event``'s sealed forms: (shown, stored) of each of its revealed fields, in the columns' order."""
        place = (self._places if self._places is not None else self._read()).get(event.get("event_id"))
        if place is None:
            return {}
        made = self._made.get(place)
        if made is None:
            event_type = self._stored["event_type"][place]
            names = self._carried.get(event_type)
            if names is None:
                keys = self._keys_of(event_type)
                names = self._carried[event_type] = tuple(name for name in self.columns if name in keys)
            stored = [(name, self._stored[name][place]) for name in names]
            made = self._made.setdefault(place, {name: (self._shown[value], value) for name, value in stored
                                                 if value in self._shown})  # the marked texts, revealed
        return made

    def registered(self) -> None:
        """Made known to later queries' ``release_unused`` (once the native pass has made the events)."""
        _QUERIES.append(weakref.ref(self))

    def holding(self) -> bool:
        """Whether the stored texts are still held (until ``release``)."""
        return bool(self._stored or self._stored_columns)

    def unused(self) -> bool:
        """Whether none of the events is left, nor the class held anywhere else."""
        return sys.getrefcount(self.event_class) <= self._own_references

    def release(self) -> None:
        """Drop the values (no event is left to read them)."""
        self._stored, self._shown, self._made, self._places = {}, {}, {}, {}
        self._event_ids, self._stored_columns, self._revealer = None, {}, None


# The queries whose revealed events may still be alive (weakly: each goes with its class, at a collection).
_QUERIES: list[weakref.ref[RevealedRows]] = []


def release_unused() -> None:
    """Drop the values of earlier queries none of whose revealed events is left (``RevealedRows``)."""
    kept = []
    for ref in _QUERIES:
        rows = ref()
        if rows is None:
            continue
        if rows.unused():
            rows.release()
        else:
            kept.append(ref)
    _QUERIES[:] = kept


def reveal_parsed_rows(logs: list[dict[str, Any]], table: pa.Table, order: np.ndarray | None, revealer: Revealer,
                       columns: tuple[str, ...]) -> None:
    """The dicts of ``table``'s rows (in ``order``, as ``_to_logs`` makes them; text ``columns`` revealed already)
    whose JSON ``columns`` hold a pseudonym or a ciphertext, replaced in place by what ``reveal_logs`` makes of
    them: such rows are few (a subject request's e-mail, a dict's personal keys), and the rest keep their
    dicts. A row found by its text but holding nothing to reveal once parsed comes out as ``reveal_logs``
    leaves it."""
    found = None
    for name in columns:
        if name in JSON_FIELDS:
            marked = _json_marks(table.column(name))
            found = marked if found is None else pc.or_(found, marked)
    if found is None:
        return
    rows = pc.indices_nonzero(found.fill_null(False)).to_numpy()
    places = rows if order is None else np.flatnonzero(np.isin(order, rows))
    for place in places.tolist():
        log = logs[place]
        stored = log.as_sealed() if isinstance(log, RevealedEvent) else log  # its text columns as stored
        logs[place] = reveal_log(revealer, stored, columns)


def revealed_view_sql(con: Any, revealer: Revealer | None, source_sql: str, columns: list[str]) -> str:
    """SQL over ``source_sql`` with its personal columns revealed by UDFs registered on ``con``."""
    if revealer is None:
        return source_sql
    import duckdb

    def udf(reveal: Callable[[list[Any]], list[Any]]) -> Callable[[pa.Array], pa.Array]:
        return lambda values: reveal_array(values, reveal)

    kinds = {"secureml_reveal_id": _each(revealer.identifier), "secureml_reveal_text": revealer.text_list,
             "secureml_reveal_json": _each(revealer.json_text)}
    for name, reveal in kinds.items():
        con.create_function(name, udf(reveal), [duckdb.sqltype("VARCHAR")], duckdb.sqltype("VARCHAR"),
                            type="arrow", side_effects=False)
    replaced = []
    for name in columns:
        function = ("secureml_reveal_id" if name in IDENTIFIER_COLUMNS else
                    "secureml_reveal_json" if name in JSON_FIELDS else "secureml_reveal_text")
        replaced.append(f'{function}("{name}") AS "{name}"')
    return f"SELECT * REPLACE ({', '.join(replaced)}) FROM ({source_sql})"
