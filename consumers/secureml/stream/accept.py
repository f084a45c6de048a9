"""The one decision every reader of the stream makes per message: a sealed, decodable event, or why not.

A message is refused when its source marked it corrupt, when its schema version is unknown,
when its trailing SHA-256 does not match its bytes, or when it is sealed yet does not decode
(forged). What happens to a refused message is the reader's choice: the materializer hands it
to its source's dead-letter store, the alerter (which does not own that store) skips it and
says why. Both refuse for exactly the same reasons.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa

from secureml.audit.codec import is_sealed, known_versions_set, rejection
from secureml.lake.rows import events_table
from secureml.stream.decode import decode_one
from secureml.stream.sources import Batch, Item

Refuse = Callable[[Item, str], None]


def accepted_indexes(batch: Batch, refuse: Refuse, *, sealed_later: bool = False) -> list[int]:
    """Indexes of the batch's sealed events of a known schema; every other message goes to ``refuse``.

    ``sealed_later``: leave the seal to ``events_table(..., refuse)``, which checks it while it decodes
    (natively in the same pass over the bytes); only the schema version and the source's marks are checked here.
    """
    if not batch.broken:  # the usual case, in one pass without a call per message beyond the seal check
        known, sealed = known_versions_set(), is_sealed
        good = ([i for i, version in enumerate(batch.versions) if version in known] if sealed_later else
                [i for i, (version, value) in enumerate(zip(batch.versions, batch.values))
                 if version in known and value and sealed(value)])
        if len(good) == len(batch.values):
            return good
    kept = []
    for index, (version, value) in enumerate(zip(batch.versions, batch.values)):
        if index in batch.broken:
            reason: str | None = batch.broken[index][1]
        elif sealed_later and version in known_versions_set():
            reason = None
        else:
            reason = rejection(version, value)
        if reason is None:
            kept.append(index)
        else:
            refuse(batch.item(index), reason)
    return kept


def accepted_events(batches: Sequence[Batch], refuse: Refuse) -> pa.Table | None:
    """The accepted events of ``batches`` as one table of the lake's schema (None when there are none)."""
    items: list[tuple[Batch, int]] = []
    for batch in batches:
        accepted = accepted_indexes(batch, refuse, sealed_later=True)
        if len(batches) == 1 and accepted and len(accepted) == len(batch.positions):
            # (the materializer's case: one batch, every message accepted; its columns as they are)
            return events_table([batch.source] * len(accepted), batch.positions,
                                batch.versions,  # type: ignore[arg-type]  # accepted: known versions
                                batch.values, lambda at, reason, item=batch.item: refuse(item(at), reason))
        items += [(batch, index) for index in accepted]
    if not items:
        return None
    return events_table([batch.source for batch, _ in items], [batch.positions[i] for batch, i in items],
                        [batch.versions[i] for batch, i in items],  # type: ignore[misc]  # accepted: known versions
                        [batch.values[i] for batch, i in items],
                        lambda at, reason: refuse(items[at][0].item(items[at][1]), reason))


def decoded(item: Item, refuse: Refuse) -> dict[str, Any] | None:
    """The event an accepted item holds, or None once ``refuse`` has it (sealed, yet it does not decode)."""
    assert item.version is not None and item.value is not None, "decode only what accepted_indexes() let through"
    try:
        return decode_one(item.value, item.version)
    except Exception as exc:  # noqa: BLE001 - any failure of the decoder means the bytes are not an event
        refuse(item, f"Avro decoding failed: {exc}")
        return None
