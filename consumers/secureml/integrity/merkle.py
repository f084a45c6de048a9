"""RFC 6962 Merkle trees over event hashes: roots of any prefix, frontiers, audit paths.

Leaf = SHA-256(0x00 || the event's ``hash`` as its 64 ASCII hex digits); node =
SHA-256(0x01 || left || right); the tree of n leaves splits at the largest power of two below
n (RFC 6962 section 2.1), which is the same as pairing nodes level by level and carrying an odd
last node up unchanged. The *frontier* of a tree is the list of its perfect subtrees' roots,
largest first: enough to append leaves and to compute the root, so a checkpoint stores it.

Leaves that stream (the checkpointer's, verify's) travel as *leaf blocks*: their 32-byte
hashes end to end in one ``bytes``, hashed and folded by the native accelerator off the GIL
when it is installed (a Python object per leaf and per node cost verify ~3 us an event and
held the GIL through a checkpoint), by the functions here otherwise, to the same bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

import pyarrow as pa

from secureml.audit.accelerator import native

EMPTY_ROOT = hashlib.sha256(b"").digest()
LEAF_SIZE = 32  # bytes of a leaf (or node) hash in a leaf block


def leaf_hashes(event_hashes: Iterable[str]) -> list[bytes]:
    """Leaf hash of every event hash."""
    sha256 = hashlib.sha256
    return [sha256(b"\x00" + h.encode()).digest() for h in event_hashes]


def leaf_block(event_hashes: pa.Array | pa.ChunkedArray) -> bytes:
    """Leaf hashes of a column of event hashes, as a leaf block."""
    chunks = event_hashes.chunks if isinstance(event_hashes, pa.ChunkedArray) else [event_hashes]
    if native is not None:
        return b"".join([native.leaf_hashes(chunk) for chunk in chunks])
    return b"".join(leaf_hashes(h for chunk in chunks for h in chunk.to_pylist()))


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash of an inner node."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_of_frontier(frontier: Sequence[bytes]) -> bytes:
    """Root of the tree whose perfect subtrees are ``frontier`` (largest first)."""
    if not frontier:
        return EMPTY_ROOT
    root = frontier[-1]
    for node in reversed(frontier[:-1]):
        root = node_hash(node, root)
    return root


def extend_frontier(frontier: Sequence[bytes], size: int, block: bytes) -> list[bytes]:
    """Frontier after appending a leaf block to a tree of ``size`` leaves with that frontier.

    The leaves go in as the largest perfect subtrees that fit the tree's alignment, each
    built level by level, then merged into the frontier like a binary carry.
    """
    if native is not None:
        return native.extend_frontier(list(frontier), size, block)
    leaves = [block[i : i + LEAF_SIZE] for i in range(0, len(block), LEAF_SIZE)]
    extended = list(frontier)
    start = 0
    while start < len(leaves):
        height = (len(leaves) - start).bit_length() - 1
        if size:
            height = min(height, (size & -size).bit_length() - 1)
        width = 1 << height
        node = MerkleTree(leaves[start : start + width]).levels[-1][0]
        carry = size >> height
        while carry & 1:
            node = node_hash(extended.pop(), node)
            carry >>= 1
        extended.append(node)
        size += width
        start += width
    return extended


class MerkleTree:
    """Every level of the tree over a list of leaves, for frontiers and audit paths of any prefix."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.levels = [leaves]
        level = leaves
        sha256 = hashlib.sha256
        while len(level) > 1:
            up = [sha256(b"\x01" + a + b).digest() for a, b in zip(level[0::2], level[1::2])]
            if len(level) % 2:
                up.append(level[-1])
            self.levels.append(up)
            level = up

    @property
    def size(self) -> int:
        """Number of leaves."""
        return len(self.levels[0])

    def frontier(self, size: int) -> list[bytes]:
        """Perfect subtree roots of the first ``size`` leaves, largest first."""
        nodes, start = [], 0
        for height in range(size.bit_length() - 1, -1, -1):
            if size >> height & 1:
                nodes.append(self.levels[height][start >> height])
                start += 1 << height
        return nodes

    def root(self, size: int) -> bytes:
        """Root of the tree of the first ``size`` leaves."""
        return root_of_frontier(self.frontier(size))

    def _subtree(self, start: int, end: int) -> bytes:
        width = end - start
        if width & (width - 1) == 0:  # a perfect subtree, aligned by construction
            return self.levels[width.bit_length() - 1][start // width]
        split = 1 << (width - 1).bit_length() - 1
        return node_hash(self._subtree(start, start + split), self._subtree(start + split, end))

    def audit_path(self, index: int, size: int) -> list[bytes]:
        """RFC 6962 audit path of leaf ``index`` in the tree of the first ``size`` leaves."""
        if not 0 <= index < size <= self.size:
            raise IndexError(f"leaf {index} is not in a tree of {size} leaves")
        path: list[bytes] = []
        start, end = 0, size
        while end - start > 1:
            split = 1 << (end - start - 1).bit_length() - 1
            if index < start + split:
                path.append(self._subtree(start + split, end))
                end = start + split
            else:
                path.append(self._subtree(start, start + split))
                start += split
        return path[::-1]


def root_from_audit_path(leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes | None:
    """Root implied by a leaf, its index, the tree size and its audit path (RFC 9162 2.1.3.2).

    None when the path cannot belong to a tree of that size.
    """
    if not 0 <= index < size:
        return None
    fn, sn, root = index, size - 1, leaf
    for node in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            root = node_hash(node, root)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            root = node_hash(root, node)
        fn >>= 1
        sn >>= 1
    return root if sn == 0 else None


def consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """Leaf ranges ``[start, end)`` whose subtree hashes, in order, are the consistency proof old -> new.

    RFC 6962 section 2.1.2 (SUBPROOF): empty when ``old_size`` is 0 or equals ``new_size``.
    """
    if not 0 <= old_size <= new_size:
        raise IndexError(f"no consistency proof from a tree of {old_size} leaves to one of {new_size}")
    ranges: list[tuple[int, int]] = []
    if old_size == 0 or old_size == new_size:
        return ranges

    def subproof(m: int, start: int, end: int, complete: bool) -> None:
        n = end - start
        if m == n:
            if not complete:
                ranges.append((start, end))
            return
        k = 1 << (n - 1).bit_length() - 1
        if m <= k:
            subproof(m, start, start + k, complete)
            ranges.append((start + k, end))
        else:
            subproof(m - k, start + k, end, False)
            ranges.append((start, start + k))

    subproof(old_size, 0, new_size, True)
    return ranges


def consistency_proof_from(frontier: Sequence[bytes], old_size: int, new_leaves: list[bytes]) -> list[bytes]:
    """The consistency proof from a tree (given by its frontier) to it with ``new_leaves`` appended."""
    new_nodes = {(begin, end): MerkleTree(new_leaves[begin - old_size : end - old_size]).root(end - begin)
                 for begin, end in new_ranges(old_size, old_size + len(new_leaves))}
    return consistency_proof_with(frontier, old_size, old_size + len(new_leaves), new_nodes)


def new_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """The ranges of the consistency proof old -> new that lie among the new leaves (hashed from those)."""
    return [(begin, end) for begin, end in consistency_ranges(old_size, new_size) if end > old_size]


def consistency_proof_with(frontier: Sequence[bytes], old_size: int, new_size: int,
                           new_nodes: Mapping[tuple[int, int], bytes]) -> list[bytes]:
    """The consistency proof old -> new from the old tree's frontier and the hashes of its ``new_ranges``.

    Every node of such a proof lies wholly among the old leaves, where it is a run of frontier
    nodes, or wholly among the new ones, where the caller hashed it (the new leaves can stream).
    """
    bounds: dict[int, int] = {}
    start = 0
    for index in range(old_size.bit_length() - 1, -1, -1):
        if old_size >> index & 1:
            bounds[start] = len(bounds)
            start += 1 << index
    proof = []
    for begin, end in consistency_ranges(old_size, new_size):
        if end <= old_size:
            proof.append(root_of_frontier(frontier[bounds[begin]:]) if end == old_size else frontier[bounds[begin]])
        else:
            proof.append(new_nodes[(begin, end)])
    return proof


def consistency_holds(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """True when ``proof`` shows the tree of ``new_size`` leaves extends the one of ``old_size`` (RFC 9162 2.1.4.2)."""
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for node in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(node, fr)
            sr = node_hash(node, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, node)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0
