"""The log tree: one append-only RFC 6962 Merkle tree over every row the checkpoint chain covers.

Its leaves are the rows' leaf hashes (as in ``merkle``) in the order the chain covered them:
checkpoint by checkpoint, within one checkpoint source by source (sorted by name), within a
source by offset. Each checkpoint so adds exactly the rows it newly covers, the tree only
grows, and any two checkpoints are linked by an RFC 6962 consistency proof. Compaction and
replays rebuild the same rows, so the same tree. This is the tree whose C2SP checkpoint note
witnesses cosign.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from secureml.audit.config import ENV_PREFIX
from secureml.integrity.checkpoints import Checkpoint
from secureml.integrity.exceptions import ProofError
from secureml.integrity.lakerows import Leaves, leaves_of, snapshot_rows
from secureml.integrity.merkle import LEAF_SIZE, consistency_ranges, extend_frontier, root_of_frontier
from secureml.lake.table import Lake
from secureml.retention.positions import with_removed_leaves

ORIGIN_ENV = ENV_PREFIX + "LOG_ORIGIN"


def default_origin(signer_key_id: str) -> str:
    """The origin of a new log tree: ``$SECUREML_AUDIT_LOG_ORIGIN``, else one named after the signing key."""
    return os.environ.get(ORIGIN_ENV) or f"secureml-audit.invalid/{signer_key_id[:16]}"


def segments(checkpoints: Iterable[Checkpoint]) -> Iterator[tuple[Checkpoint, str, int, int]]:
    """(checkpoint, source, after offset, last offset) of every run of rows the chain adds, in log order."""
    covered: dict[str, int] = {}
    for checkpoint in checkpoints:
        for source in sorted(checkpoint.sources):
            last = checkpoint.sources[source].last_offset
            yield checkpoint, source, covered.get(source, -1), last
            covered[source] = last


@dataclass
class LogFold:
    """The log tree grown chunk by chunk, picking up the hashes of chosen disjoint leaf ranges on the way."""

    ranges: Sequence[tuple[int, int]] = ()
    size: int = 0
    frontier: list[bytes] = field(default_factory=list)
    hashes: dict[tuple[int, int], bytes] = field(default_factory=dict)
    _partial: dict[tuple[int, int], tuple[int, list[bytes]]] = field(default_factory=dict)

    def extend(self, leaves: bytes) -> None:
        """Append a leaf block."""
        end = self.size + len(leaves) // LEAF_SIZE
        for start, stop in self.ranges:
            if start < end and stop > self.size and (start, stop) not in self.hashes:
                done, nodes = self._partial.get((start, stop), (0, []))
                first, last = max(start, self.size) - self.size, min(stop, end) - self.size
                part = leaves[first * LEAF_SIZE : last * LEAF_SIZE]
                nodes = extend_frontier(nodes, done, part)
                done += len(part) // LEAF_SIZE
                if done == stop - start:
                    self.hashes[(start, stop)] = root_of_frontier(nodes)
                    self._partial.pop((start, stop), None)
                else:
                    self._partial[(start, stop)] = (done, nodes)
        self.frontier = extend_frontier(self.frontier, self.size, leaves)
        self.size = end

    @property
    def root(self) -> bytes:
        """Root of the tree so far."""
        return root_of_frontier(self.frontier)


def fold(rows: pa.Table | Leaves, checkpoints: Iterable[Checkpoint], ranges: Sequence[tuple[int, int]] = ()
         ) -> Iterator[tuple[Checkpoint, LogFold]]:
    """The log tree after each checkpoint, grown from the rows (``source``, ``source_offset``, ``hash``)."""
    leaves = leaves_of(rows)
    tree = LogFold(ranges)
    last: Checkpoint | None = None
    for checkpoint, source, after, up_to in segments(checkpoints):
        if last is not None and checkpoint is not last:
            yield last, tree
        last = checkpoint
        for chunk in leaves.between(source, after, up_to):
            tree.extend(chunk)
    if last is not None:
        yield last, tree


def grown(rows: pa.Table, checkpoints: Iterable[Checkpoint]) -> LogFold:
    """The log tree after the last of the checkpoints."""
    folds = [tree for _checkpoint, tree in fold(rows, checkpoints)]
    return folds[-1] if folds else LogFold()


def lake_rows(lake: Lake) -> pa.Table:
    """The columns the log tree needs, of every row of the lake's newest version (and of rows retention removed)."""
    return with_removed_leaves(lake, snapshot_rows(lake, ("source", "source_offset", "hash"))[1])


def consistency_proof(rows: pa.Table, checkpoints: list[Checkpoint], old_size: int, new_size: int
                      ) -> tuple[bytes, bytes, list[bytes]]:
    """Roots at both sizes and the consistency proof between them, computed from the lake's rows.

    ``checkpoints`` is the chain up to one whose log tree has ``new_size`` leaves; ProofError
    when the rows do not rebuild it (the lake was changed) or no checkpoint has ``old_size``.
    """
    ranges = consistency_ranges(old_size, new_size)
    old_root = root_of_frontier([]) if old_size == 0 else None
    for checkpoint, tree in fold(rows, checkpoints, ranges):
        if tree.size == old_size and old_root is None:
            old_root = tree.root
        if tree.size >= new_size:
            if tree.size != new_size or checkpoint.log is None or tree.root.hex() != checkpoint.log.root:
                raise ProofError(f"the lake's rows no longer rebuild the log tree of checkpoint "
                                 f"#{checkpoint.sequence}: no honest consistency proof can be made. Run "
                                 "`secureml-audit verify`")
            if old_root is None:
                raise ProofError(f"no checkpoint of the chain has a log tree of {old_size} leaves")
            return old_root, tree.root, [tree.hashes[r] for r in ranges]
    raise ProofError(f"no checkpoint of the chain has a log tree of {new_size} leaves")
