"""Tamper evidence for the lake, verifiable offline with nothing but its files and a public key.

Three layers, each catching what the one before cannot:

1. **Hash chains** (written by the producer). ``hash`` = SHA-256 of the event's canonical
   bytes (the Avro encoding of every other field, recomputable from the Parquet row) and
   ``prev_hash`` = the hash of the previous event of the operation (``""`` at seq 0);
   ``audit_closed`` counts the events. A changed field, a gap, a reordering or an inserted
   event shows in the chain alone (``chains``; hashes recomputed column-wise: ``canonical``).
2. **Signed checkpoints** (written by the materializer through its checkpointer hook, both
   transports: ``checkpointer``). For every source (Kafka partition ``<topic>/<n>`` or embedded
   segment ``log/<file>``) the lake's rows are leaves in ``source_offset`` order, and a checkpoint
   signs, with Ed25519, the RFC 6962 Merkle root (leaf = SHA-256(0x00 || hash as 64 ASCII hex
   digits), node = SHA-256(0x01 || left || right)) over every row up to an offset, plus the
   chain head (last seq, its hash, closed?) of every operation that moved, plus the previous
   checkpoint's hash. Compaction keeps ``source``/``source_offset`` and replays rebuild the same
   rows, so the trees are rebuilt identically; dead letters leave no rows, so leaves are rows,
   not offset arithmetic. A whole deleted operation, a cut tail, and a lake rewritten with
   consistently recomputed hashes all fail here: the signature cannot be forged. Format:
   ``checkpoints``; stored as one owner-only JSON file per checkpoint in
   ``lake/_checkpoints/`` (with a copy of the public key, for convenience only) and, in Kafka
   mode, also published to ``<topic>-checkpoints``. A checkpoint is written at most every
   ``SECUREML_AUDIT_CHECKPOINT_INTERVAL`` seconds (60) after commits and at the end of every run,
   and covers only what the lake's manifest held at that moment.
3. **Inclusion proofs** (``proofs``): one event, its audit path and the signed checkpoint;
   checked with the public key alone.
4. **Witnesses** (trust beyond the host that signs). Every checkpoint also signs one
   append-only *log tree* over all rows (``logtree``) and stores its C2SP tlog-checkpoint note
   (``treehead``, ``notes``) as ``<sequence>.note``. The materializer submits it to the
   configured witnesses (``cosigning``) with an RFC 6962 consistency proof (``merkle``); a
   witness (``witness``, ``secureml-audit witness``) run by another party cosigns only a tree
   that extends what it cosigned before, so an operator who rewrites and re-signs the lake, or
   forks it, gets no cosignature. ``verify --witness-key`` (``witnessed``) demands N valid
   cosignatures on the latest checkpoint; ``verify --witness`` also asks the witness for the
   latest checkpoint it cosigned, which catches the newest checkpoints removed.
   ``prove --consistency`` proves one checkpoint's log tree extends another's. In Kafka mode a
   witness may read the checkpoints topic instead of HTTP (``topicwitness``).

Keys (``keys``): ``secureml-audit keygen`` writes the private key (owner-only, outside the lake)
to ``$SECUREML_AUDIT_SIGNING_KEY`` or ``~/.config/secureml-audit/keys/signing_key.pem`` and the
public key beside it. Embedded mode creates one on first use, with a note on stderr; Kafka
mode needs one made beforehand (else it runs without checkpoints, and says so).

``verify`` (``verifier``) reports per operation (intact, modified seq, missing seqs,
reordered, foreign events, truncated, deleted, never closed: a warning) and per checkpoint
(signature, chain, Merkle roots, log tree), and names what no checkpoint covers yet (a warning).
Limits: the newest checkpoints can be withheld without trace in the lake alone (ask a witness,
or compare with the Kafka topic or a checkpoint saved earlier), and events newer than the last
checkpoint are only chain-checked.
"""

from __future__ import annotations

from secureml.integrity.checkpointer import LakeCheckpointer, checkpointer_for
from secureml.integrity.exceptions import CheckpointError, IntegrityError, ProofError, SigningKeyError
from secureml.integrity.proofs import prove, verify_proof
from secureml.integrity.result import CheckpointReport, Finding, OperationReport, VerificationResult
from secureml.integrity.verifier import verify

__all__ = [
    "CheckpointError",
    "CheckpointReport",
    "Finding",
    "IntegrityError",
    "LakeCheckpointer",
    "OperationReport",
    "ProofError",
    "SigningKeyError",
    "VerificationResult",
    "checkpointer_for",
    "prove",
    "verify",
    "verify_proof",
]
