"""Which data files of the lake hold an operation: a reader's in-memory index, for operation_id lookups.

An operation_id is a random uuid4, so a file's min/max statistics rule nothing out, and the
bloom filters of every row group of every file must be read to find one operation (30 files,
600 row groups for 10M events). This index keeps, per data file, the sorted 64-bit hashes of
the operation ids it holds (Python's ``hash``: the index never leaves the process): a lookup
reads only the files whose hashes include the id's (a hash collision only adds a file; the
query's own filter decides which rows match).

It lives in the reader's process and never in the lake: DuckDB, Polars or Spark reading the
table see a plain Delta table, and no writer (materializer, compaction, retention, erasure)
has anything to maintain. A data file of a Delta table is never changed in place (a new
version writes new files), so an entry is keyed by the file's path, size and mtime, and is
built once, the first time a lookup meets the file: after a commit only the new files are
read. Entries of files no longer in the table are dropped.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable

import duckdb
import numpy as np
import pyarrow.compute as pc

from secureml.lake.catalog import quoted_list

# (path, size, mtime_ns): a file rewritten in place (never by delta-rs; by hand, or a test
# tampering with it) gets a new entry.
_Key = tuple[str, int, int]
# Entries kept beyond the files of the newest lookup, for readers of older versions (as_of).
_SPARE_ENTRIES = 256


class OperationIndex:
    """Per data file, the sorted hashes of the operation ids it holds."""

    def __init__(self) -> None:
        self._hashes: dict[_Key, np.ndarray] = {}
        self._lock = threading.Lock()

    def files_holding(self, con: duckdb.DuckDBPyConnection, paths: Iterable[str], operation_id: str) -> list[str]:
        """Those of ``paths`` (local data files) that may hold ``operation_id``, in their order.

        A file that cannot be read stays in the list, so the query names it (a missing file is
        reported as lake damage).
        """
        keys: dict[str, _Key | None] = {}
        for path in paths:
            try:
                stat = os.stat(path)
            except OSError:
                keys[path] = None
                continue
            keys[path] = (path, stat.st_size, stat.st_mtime_ns)
        target = hash(operation_id)
        with self._lock:
            new = [key for key in keys.values() if key is not None and key not in self._hashes]
            if new:
                self._index(con, new)
            held: list[str] = []
            for path, key in keys.items():
                hashes = None if key is None else self._hashes.get(key)
                if hashes is None:
                    held.append(path)
                    continue
                place = int(np.searchsorted(hashes, target))
                if place < len(hashes) and hashes[place] == target:
                    held.append(path)
            if len(self._hashes) > len(keys) + _SPARE_ENTRIES:
                current = set(keys.values())
                self._hashes = {key: value for key, value in self._hashes.items() if key in current}
        return held

    def _index(self, con: duckdb.DuckDBPyConnection, keys: list[_Key]) -> None:
        """Read the operation_id column of new files (one scan of all of them) into entries."""
        by_path = {key[0]: key for key in keys}
        try:
            found = con.sql(
                f"SELECT DISTINCT filename, operation_id FROM read_parquet({quoted_list(list(by_path))}, "
                "filename = true, union_by_name = true) ORDER BY filename"
            ).to_arrow_table()
        except duckdb.Error:
            return  # unreadable: no entries, so every file is kept and the query itself reports the damage
        if found.num_rows:
            # Rows come grouped by file: split the hashes where the file changes.
            files = pc.dictionary_encode(found["filename"]).combine_chunks()
            codes = files.indices.to_numpy()
            bounds = np.flatnonzero(np.diff(codes)) + 1
            names = files.dictionary.to_pylist()
            hashes = np.fromiter(map(hash, found["operation_id"].to_pylist()), np.int64, found.num_rows)
            for code, part in zip(codes[np.concatenate(([0], bounds))], np.split(hashes, bounds)):
                if (key := by_path.get(names[code])) is not None:
                    self._hashes[key] = np.sort(part)
        for key in keys:
            self._hashes.setdefault(key, np.empty(0, np.int64))  # a file without rows holds no operation
