"""verify's streaming parts on their own: incremental Merkle roots, the on-disk row store, chains checked in chunks."""

from __future__ import annotations

import hashlib
import random
import stat
from pathlib import Path

import pyarrow as pa
import pytest

from secureml.integrity import chains, rowstore
from secureml.integrity.chains import ChainStream, check_chains, check_chains_in_order
from secureml.integrity.checkpoints import Checkpoint, SourceCoverage
from secureml.integrity.lakerows import TableLeaves
from secureml.integrity.logtree import fold
from secureml.integrity.merkle import MerkleTree, extend_frontier, leaf_hashes, root_of_frontier
from secureml.integrity.rowstore import RowStore
from secureml.integrity.scan import SKELETON


def _digest(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _operation(op: str, events: int, source: str, offsets: list[int], closed: bool = True) -> list[dict]:
    """A sound chain of ``events`` skeleton rows at the given offsets of one source."""
    rows, prev = [], ""
    for seq in range(events):
        last = closed and seq == events - 1
        digest = _digest(op, seq)
        rows.append({"operation_id": op, "operation_name": f"name-{op}", "seq": seq,
                     "event_type": "audit_closed" if last else "model_inference",
                     "event_count": events if last else None, "prev_hash": prev, "hash": digest, "intact": True,
                     "source": source, "source_offset": offsets.pop(0), "file": 0})
        prev = digest
    return rows


def _skeleton_rows(rng: random.Random, shuffle: bool = True) -> list[dict]:
    """Operations of 1-40 events over three sources, several with a flawed chain, in a shuffled order (else each
    source's rows in offset order, the sources interleaved, as the materializer stores them)."""
    counters = {"log/a": iter(range(0, 10_000, 3)), "log/b": iter(range(10_000)), "p-0": iter(range(5, 10_000))}
    rows: list[dict] = []
    for index in range(40):
        source = rng.choice(sorted(counters))
        events = 40 if index % 9 == 0 else rng.randint(1, 12)
        op_rows = _operation(f"op-{index:02d}", events, source, [next(counters[source]) for _ in range(events)],
                             closed=index % 7 != 3)
        if index % 5 == 1 and events > 3:
            del op_rows[2]  # a gap
        if index % 5 == 2:
            op_rows[0]["intact"] = False  # modified
        if index % 5 == 4 and events > 1:  # an inserted event claiming an existing seq
            op_rows.append(op_rows[1] | {"hash": _digest("forged", index), "source_offset": next(counters[source])})
        rows += op_rows
    if shuffle:
        rng.shuffle(rows)
    return rows


def test_incremental_merkle_roots_equal_the_batch_roots_for_1_to_300_leaves() -> None:
    """Growing a frontier chunk by chunk (any chunk sizes) gives the batch tree's frontier and root at every size."""
    rng = random.Random(3)
    leaves = leaf_hashes(hashlib.sha256(str(i).encode()).hexdigest() for i in range(300))
    tree = MerkleTree(leaves)
    for size in range(1, 301):
        frontier, done = list[bytes](), 0
        while done < size:
            chunk = leaves[done : done + rng.randint(1, 70)][: size - done]
            frontier = extend_frontier(frontier, done, b"".join(chunk))
            done += len(chunk)
        assert frontier == tree.frontier(size)
        assert root_of_frontier(frontier) == tree.root(size)


@pytest.mark.parametrize(("sort_rows", "max_runs", "order"), [
    (7, 0, "shuffled"), (rowstore.SORT_ROWS, 0, "shuffled"), (7, rowstore.MAX_RUNS, "shuffled"),
    (7, rowstore.MAX_RUNS, "leaf order"), (7, rowstore.MAX_RUNS, "leaf order, then a late row")])
def test_the_row_store_serves_each_sources_leaves_in_offset_order_like_rows_in_memory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sort_rows: int, max_runs: int, order: str) -> None:
    """Any offset range of any source's leaves, read back from DuckDB (sorted whole or in pieces) or merged from the
    runs of rising offsets they came in (shuffled: hundreds of runs; in leaf order: one; then one more), match
    memory, in 1-row windows too."""
    monkeypatch.setattr(rowstore, "SORT_ROWS", sort_rows)
    monkeypatch.setattr(rowstore, "MAX_RUNS", max_runs)
    monkeypatch.setattr(rowstore, "LEAF_CHUNK", 1 + sort_rows % 5)
    rows = _skeleton_rows(random.Random(5), shuffle=order == "shuffled")
    if order == "leaf order, then a late row":
        rows.append(rows[0] | {"source": "log/a", "source_offset": 1, "hash": _digest("late")})
    table = pa.Table.from_pylist(rows, schema=SKELETON)
    memory = TableLeaves(table)
    rng = random.Random(6)
    with RowStore(tmp_path) as store:
        for batch in table.to_batches(max_chunksize=37):
            store.add(batch)
        assert store.count() == table.num_rows
        assert (store._spool is None) == (max_runs == 0)  # the path this case takes
        assert store.sources() == ["log/a", "log/b", "p-0"]
        for _ in range(60):
            source = rng.choice(["log/a", "log/b", "p-0", "absent"])
            after = rng.randint(-1, 400)
            up_to = after + rng.randint(0, 300)
            got = b"".join(store.between(source, after, up_to))
            assert got == b"".join(memory.between(source, after, up_to))
        checkpoints = [Checkpoint.new(0, "t", "k", {"log/a": SourceCoverage(0, 60, "", ()),
                                                    "p-0": SourceCoverage(0, 40, "", ())}, {}, ""),
                       Checkpoint.new(1, "t", "k", {"log/a": SourceCoverage(0, 900, "", ()),
                                                    "log/b": SourceCoverage(0, 200, "", ())}, {}, "")]
        on_disk = [(c.sequence, tree.size, tree.root) for c, tree in fold(store, checkpoints)]
        assert on_disk == [(c.sequence, tree.size, tree.root) for c, tree in fold(table, checkpoints)]
        assert on_disk[-1][1] > 0


def test_chains_checked_in_chunks_of_whole_operations_find_what_one_pass_finds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Gaps, modified, inserted and unclosed chains are reported alike when rows stream in small chunks."""
    table = pa.Table.from_pylist(_skeleton_rows(random.Random(7)), schema=SKELETON)
    files = ["part-0.parquet"]
    whole = check_chains(table, files)
    assert sum(1 for report in whole.values() if report.findings) >= 15
    monkeypatch.setattr(chains, "CHUNK_ROWS", 7)  # smaller than the 40-event operations
    monkeypatch.setattr(rowstore, "BATCH_ROWS", 5)
    monkeypatch.setattr(rowstore, "SORT_ROWS", 9)  # operations come in buckets, each sorted on its own
    with RowStore(tmp_path) as store:
        store.add(table)
        streamed = check_chains_in_order(store.by_operation(), files)
    assert streamed == whole


@pytest.mark.parametrize("shuffled", [False, True])
def test_chains_judged_as_rows_go_by_with_only_the_doubtful_sorted_find_what_one_pass_finds(
        tmp_path: Path, shuffled: bool) -> None:
    """ChainStream's perfect chains plus the sorted check of its suspects equal check_chains on all rows."""
    rows = _skeleton_rows(random.Random(9))
    if not shuffled:  # each operation's rows in logged order, operations interleaved, as the materializer stores them
        rows.sort(key=lambda r: (r["source_offset"], r["seq"]))
    table = pa.Table.from_pylist(rows, schema=SKELETON)
    files = ["part-0.parquet"]
    stream = ChainStream()
    with RowStore(tmp_path) as store:
        store.add(pa.RecordBatchReader.from_batches(SKELETON, stream.passing(table.to_batches(max_chunksize=11))))
        judged = stream.perfect()
        assert not set(judged) & stream.suspect
        judged.update(check_chains_in_order(store.by_operation(stream.suspect), files))
    assert judged == check_chains(table, files)
    if not shuffled:  # rows in order: no sound chain was sorted
        assert not {op for op, report in judged.items() if not report.findings} & stream.suspect


def test_the_work_directory_is_owner_only_inside_log_dir_and_gone_after_close(tmp_path: Path) -> None:
    """The row store writes only under the log directory, owner-only, and leaves nothing behind."""
    store = RowStore(tmp_path)
    try:
        store.add(pa.Table.from_pylist(_skeleton_rows(random.Random(8)), schema=SKELETON))
        assert store.directory.parent == tmp_path
        assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
        assert (store.directory / "rows.duckdb").is_file()
    finally:
        store.close()
    assert list(tmp_path.iterdir()) == []
