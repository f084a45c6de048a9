"""Hash chains, operation by operation: contiguous seqs, matching hashes, links, and a close.

One vectorised pass over the rows, sorted by (operation, seq), finds the operations whose
chain is not perfect; only those are examined in Python, to name what happened and where.
``ChainStream`` spares that sort for the operations whose rows arrive as a perfect chain.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from secureml.integrity.lakerows import grouped
from secureml.integrity.result import (
    FOREIGN,
    MISSING,
    MODIFIED,
    NOT_CLOSED,
    REORDERED,
    Finding,
    OperationReport,
)

CLOSED = "audit_closed"
MAX_SEQS_NAMED = 1000  # a finding lists at most this many seqs; its message names the runs
CHUNK_ROWS = 1 << 15  # rows checked at a time when they stream in operation order


@dataclass(frozen=True)
class Row:
    """The fields of one lake row the chain checks read."""

    seq: int
    event_type: str
    event_count: int | None
    prev_hash: str
    hash: str
    intact: bool
    file: str


def _spans(seqs: list[int]) -> list[tuple[int, int]]:
    """Sorted seqs as (first, last) runs."""
    spans: list[list[int]] = []
    for s in sorted(seqs):
        if spans and s == spans[-1][1] + 1:
            spans[-1][1] = s
        else:
            spans.append([s, s])
    return [(a, b) for a, b in spans]


def _spans_text(spans: list[tuple[int, int]]) -> str:
    """'3', '3, 5' or '3-7, 9' for messages."""
    shown = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans[:20])
    return shown + (" ..." if len(spans) > 20 else "")


def _gaps(present: list[int]) -> list[tuple[int, int]]:
    """Runs of seqs missing between 0 and the highest seq present."""
    gaps, expected = [], 0
    for first, last in _spans([s for s in present if s >= 0]):
        if first > expected:
            gaps.append((expected, first - 1))
        expected = last + 1
    return gaps


def check_chains(rows: pa.Table, files: list[str]) -> dict[str, OperationReport]:
    """A report per operation in the rows, with what is wrong with its chain."""
    if rows.num_rows == 0:
        return {}
    operations = grouped(rows, "operation_id", "seq")
    order, operation, first, last = operations.order, operations.group, operations.first, operations.last
    seq = rows.column("seq").to_numpy()[order]
    take = pa.array(order)
    prev_hash, digest = rows.column("prev_hash").take(take), rows.column("hash").take(take)
    closing = pc.equal(rows.column("event_type"), CLOSED).take(take).to_numpy()
    # Each row must continue the row before it in its operation, or start the chain.
    follows = np.append(False, (seq[1:] == seq[:-1] + 1) & pc.equal(prev_hash[1:], digest[:-1]).to_numpy())
    starts = (seq == 0) & pc.equal(prev_hash, "").to_numpy()
    sound = np.where(first, starts, follows) & rows.column("intact").take(take).to_numpy()
    count = len(operations.names)
    events = np.bincount(operation, minlength=count)
    closes = np.bincount(operation, weights=closing, minlength=count).astype(np.int64)
    counted = rows.column("event_count").take(take).fill_null(-1).to_numpy()[last]
    perfect = (np.bincount(operation, weights=~sound, minlength=count) == 0) & (closes == 1) & closing[last] & (
        counted == events
    )
    ids = operations.names
    names = rows.column("operation_name").take(pa.array(order[first])).to_pylist()
    reports = {
        ids[i]: OperationReport(ids[i], names[i], int(events[i]), int(seq[last[i]]), bool(closes[i]))
        for i in range(count)
    }
    flawed = np.flatnonzero(~perfect)
    if len(flawed):
        detail = rows.take(pa.array(np.sort(order[np.isin(operation, flawed)])))
        detail = detail.sort_by([("operation_id", "ascending"), ("seq", "ascending"), ("source", "ascending"),
                                 ("source_offset", "ascending")])
        by_operation: dict[str, list[Row]] = defaultdict(list)
        for r in detail.select(["operation_id", "seq", "event_type", "event_count", "prev_hash", "hash", "intact",
                                "file"]).to_pylist():
            by_operation[r["operation_id"]].append(Row(r["seq"], r["event_type"], r["event_count"], r["prev_hash"],
                                                       r["hash"], r["intact"], files[r["file"]]))
        for op, op_rows in by_operation.items():
            reports[op].findings.extend(chain_findings(op, op_rows))
    return reports


def check_chains_in_order(batches: Iterable[pa.RecordBatch], files: list[str]) -> dict[str, OperationReport]:
    """``check_chains`` over rows streamed in (operation, seq) order, a chunk of whole operations at a time.

    Memory holds about CHUNK_ROWS rows, or one operation's rows when it has more.
    """
    reports: dict[str, OperationReport] = {}
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        held += batch.num_rows
        if held < CHUNK_ROWS:
            continue
        rows = pa.Table.from_batches(pending)
        # The last operation may go on in the next batch: keep it for the next chunk.
        ids = rows.column("operation_id")
        tail = np.flatnonzero(pc.equal(ids, ids[-1]).to_numpy(zero_copy_only=False))[0]
        if tail == 0:
            continue  # one operation so far: read on
        reports.update(check_chains(rows.slice(0, tail), files))
        pending, held = rows.slice(tail).to_batches(), rows.num_rows - tail
    if pending:
        reports.update(check_chains(pa.Table.from_batches(pending), files))
    return reports


class ChainStream:
    """Chains checked as rows go by in scan order, with no sort: the operations that arrive as perfect chains.

    The materializer stores each operation's events in the order they were logged, so an
    operation's rows usually arrive seq 0, 1, 2, ..., each linked to the one before: its state
    here is its last seq and hash. An operation whose rows do not arrive so (a gap, a broken
    link, a modified event, no single close at its end, or rows merely stored out of order, as
    after compaction) is *suspect*: ``check_chains`` judges it on its rows sorted by
    (operation, seq), which names what happened. An operation that arrives perfect would be
    perfect sorted too (its seqs are distinct and already in order), so its report is the same.
    """

    def __init__(self) -> None:
        # operation -> [name, events, last seq, last hash, closes, last row closes, last row's event_count]
        self._open: dict[str, list] = {}
        self.suspect: set[str] = set()

    def passing(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """The batches, unchanged, each checked on its way."""
        for batch in batches:
            self.add(batch)
            yield batch

    def add(self, batch: pa.RecordBatch) -> None:
        """The next skeleton rows (``scan.SKELETON``) in scan order."""
        rows = batch.num_rows
        if rows == 0:
            return
        encoded = pc.dictionary_encode(batch.column("operation_id"))
        group = encoded.indices.to_numpy(zero_copy_only=False)
        order = np.argsort(group, kind="stable")  # each operation's rows together, in arrival order
        group = group[order]
        take = pa.array(order)
        seq = batch.column("seq").to_numpy(zero_copy_only=False)[order]
        prev_hash, digest = batch.column("prev_hash").take(take), batch.column("hash").take(take)
        closing = pc.equal(batch.column("event_type"), CLOSED).to_numpy(zero_copy_only=False)[order]
        first = np.ones(rows, dtype=bool)
        first[1:] = group[1:] != group[:-1]
        follows = np.append(False, (seq[1:] == seq[:-1] + 1) & pc.equal(prev_hash[1:], digest[:-1]).to_numpy(
            zero_copy_only=False))
        sound = (first | follows) & batch.column("intact").to_numpy(zero_copy_only=False)[order]
        count = len(encoded.dictionary)
        unsound = np.bincount(group, weights=~sound, minlength=count).tolist()
        events = np.bincount(group, minlength=count).tolist()
        closes = np.bincount(group, weights=closing, minlength=count).astype(np.int64).tolist()
        starts = np.flatnonzero(first)
        ends = np.append(starts[1:], rows) - 1
        names = batch.column("operation_name").take(pa.array(order[starts])).to_pylist()
        counted = batch.column("event_count").fill_null(-1).to_numpy(zero_copy_only=False)[order][ends].tolist()
        opening = zip(seq[starts].tolist(), prev_hash.take(pa.array(starts)).to_pylist())
        closing_rows = zip(seq[ends].tolist(), digest.take(pa.array(ends)).to_pylist(), closing[ends].tolist(), counted)
        for index, (operation, (first_seq, first_prev), (last_seq, last_hash, last_closes, last_count)) in enumerate(
                zip(encoded.dictionary.to_pylist(), opening, closing_rows)):
            if operation in self.suspect:
                continue
            state = self._open.get(operation)
            expected = (0, "") if state is None else (state[2] + 1, state[3])
            if unsound[index] or (first_seq, first_prev) != expected:
                self.suspect.add(operation)
                self._open.pop(operation, None)
                continue
            if state is None:
                state = self._open[operation] = [names[index], 0, 0, "", 0, False, -1]
            state[1] += events[index]
            state[2:] = last_seq, last_hash, state[4] + closes[index], last_closes, last_count

    def perfect(self) -> dict[str, OperationReport]:
        """Reports of the operations whose chain arrived perfect; the others join ``suspect``."""
        reports = {}
        for operation, (name, events, last_seq, _hash, closes, last_closes, counted) in self._open.items():
            if closes == 1 and last_closes and counted == events:
                reports[operation] = OperationReport(operation, name, events, last_seq, True)
            else:
                self.suspect.add(operation)
        return reports


def chain_findings(operation_id: str, rows: list[Row]) -> list[Finding]:
    """What is wrong with one operation's chain (rows in seq order)."""
    if not rows:
        return []
    found: list[Finding] = []

    def error(kind: str, message: str, involved: list[Row], seqs: list[int] | None = None) -> None:
        named = sorted({r.seq for r in involved}) if seqs is None else seqs
        found.append(Finding(kind, "error", f"{operation_id}: {message}", operation_id, tuple(named),
                             files=tuple(sorted({r.file for r in involved}))))

    for row in rows:
        if not row.intact:
            error(MODIFIED, f"the event at seq {row.seq} does not match its hash: it was changed after it "
                  "was logged", [row])
    by_seq: dict[int, list[Row]] = defaultdict(list)
    for row in rows:
        by_seq[row.seq].append(row)
    linked_to = {row.prev_hash for row in rows}
    chain: dict[int, Row] = {}
    for seq, claimants in by_seq.items():
        # The genuine claimant is intact and linked to by the next event; the others were inserted.
        ranked = sorted(claimants, key=lambda r: (not r.intact, r.hash not in linked_to))
        chain[seq] = ranked[0]
        if len(claimants) > 1:
            error(FOREIGN, f"{len(claimants)} events claim seq {seq}: all but one were inserted", claimants)
    gaps = _gaps(list(chain))
    if gaps:
        missing = islice((s for first, last in gaps for s in range(first, last + 1)), MAX_SEQS_NAMED)
        neighbours = [chain[s] for first, last in gaps for s in (first - 1, last + 1) if s in chain]
        error(MISSING, f"seq {_spans_text(gaps)} missing from the chain: events were deleted", neighbours,
              list(missing))
    for kind, message, involved in _broken_links(chain):
        error(kind, message, involved)
    closes = sorted(s for s, r in chain.items() if r.event_type == CLOSED)
    if not closes:
        found.append(Finding(NOT_CLOSED, "warning", f"{operation_id}: never closed (no audit_closed event): "
                             "still running, crashed, or its tail was cut", operation_id, (max(chain),)))
        return found
    close = chain[closes[0]]
    after = [chain[s] for s in chain if s > close.seq]
    if after:
        where = _spans_text(_spans([r.seq for r in after]))
        error(FOREIGN, f"events after audit_closed (seq {close.seq}) at seq {where}: a closed chain takes no more "
              "events", after)
    if close.intact and close.event_count != close.seq + 1:
        error(FOREIGN, f"audit_closed at seq {close.seq} counts {close.event_count} events: a forged close", [close])
    return found


def _broken_links(chain: dict[int, Row]) -> list[tuple[str, str, list[Row]]]:
    """(kind, message, rows) for every event whose prev_hash is not the hash of the event before it."""
    by_hash = {row.hash: seq for seq, row in chain.items()}
    broken: list[tuple[str, str, list[Row]]] = []
    for seq in sorted(chain):
        row, before = chain[seq], chain.get(seq - 1)
        expected = "" if seq == 0 else before.hash if before else None
        if expected is None or row.prev_hash == expected:
            continue  # a gap is reported as missing
        if row.prev_hash in by_hash:
            linked = by_hash[row.prev_hash]
            should = "start the chain" if seq == 0 else f"follow seq {seq - 1}"
            broken.append((REORDERED, f"the event at seq {seq} follows seq {linked} in the chain but should "
                           f"{should}: events were reordered", [row, chain[linked]]))
        elif before is None:
            broken.append((MODIFIED, "the event at seq 0 links to an earlier event: the start of the chain "
                           "was replaced", [row]))
        else:
            broken.append((MODIFIED, f"seq {seq} does not link to the event at seq {seq - 1}: that event was "
                           f"replaced (its hash recomputed) or seq {seq} was forged", [before, row]))
    return broken
