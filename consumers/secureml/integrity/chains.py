"""Hash chains, operation by operation: contiguous seqs, matching hashes, links, and a close.

One vectorised pass over the rows, sorted by (operation, seq), finds the operations whose
chain is not perfect; only those are examined in Python, to name what happened and where.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
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
