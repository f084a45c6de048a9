"""Witnesses: a real `secureml-audit witness` process cosigns the materializer's checkpoints, and only those.

The attacker here holds the lake and the log's signing key; the witness is another party's
process, on a loopback port, with its own key and state directory.
"""

from __future__ import annotations

import base64
import json
import random
import shutil
import stat
import threading
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from support.integrity import (  # noqa: F401 - signing_key_fixture is autouse
    Keys,
    LakeRows,
    event_hash,
    log_operations,
    materialize,
    signing_key_fixture,
)
from support.witness import WitnessProcess

from conftest import Harness, run_cli
from secureml.audit.exceptions import AuditConfigError
from secureml.integrity import LakeCheckpointer, verify
from secureml.integrity.checkpoints import Checkpoint, note_path, read_note, stored_checkpoints
from secureml.integrity.cosigning import (
    SIZE_CONTENT_TYPE,
    WITNESSES_ENV,
    WitnessClient,
    http,
    parse_witnesses,
    request_body,
)
from secureml.integrity.keys import load_public_key, load_signing_key, sign
from secureml.integrity.logtree import ORIGIN_ENV
from secureml.integrity.merkle import MerkleTree, consistency_proof_from, leaf_hashes
from secureml.integrity.notes import parse_note, verified_by
from secureml.integrity.result import NOT_WITNESSED, NOTE_INVALID, ROLLED_BACK, VerificationResult
from secureml.integrity.treehead import TreeHead, log_key, sign_tree_head
from secureml.integrity.witness import Witness, WitnessState, parse_submission
from secureml.integrity.witnessed import WitnessPolicy
from secureml.lake.table import Lake

ORIGIN = "audit.test/lake"
SPEC_REQUEST = (
    "old 20852014\nPlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\njrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n"
    "5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=\n/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=\n\n"
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n"
    "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+"
    "zyWE+xeMcTOAYQ8=\n"
    "— example.com/behind-the-sofa opLqBQsREYCgu6xQkYQwJr9fo45a62DN9EdmHXnZdXNqlcVGlCum2Wks+49/V6267UEjw6QUXTS5"
    "Rovnzv++qbSzm9Q=\n"
)


@pytest.fixture
def witness(tmp_path: Path, signing_key: Keys, monkeypatch: pytest.MonkeyPatch) -> Iterator[WitnessProcess]:
    """A witness process that trusts this test's log key, for the origin the checkpointer uses."""
    monkeypatch.setenv(ORIGIN_ENV, ORIGIN)
    process = WitnessProcess(tmp_path / "witness", [log_key(ORIGIN, load_public_key(signing_key.public)).vkey()])
    yield process.start()
    process.stop()


def grow(harness: Harness, rng: random.Random, witnesses: list[str]) -> None:
    """Log a few operations and materialise them, submitting the checkpoint to ``witnesses`` (URL, VKEY pairs)."""
    log_operations(harness, rng, 3, 5)
    materialize(harness, witnesses=witnesses)


def checked(harness: Harness, keys: Keys, witness: WitnessProcess, *, online: bool = False) -> VerificationResult:
    """Verify with the operator's public key and the witness's key (and ask the witness, when online)."""
    policy = WitnessPolicy((witness.key,), 1, tuple(parse_witnesses(witness.pairs())) if online else ())
    return verify(harness.log_dir, keys.public, witnesses=policy)


def kinds(result: VerificationResult) -> set[str]:
    """The kinds of the errors found."""
    return {f.kind for f in result.errors}


def latest_note(harness: Harness) -> Path:
    """The note file of the newest checkpoint."""
    lake = Lake(harness.log_dir)
    last = stored_checkpoints(lake.root)[-1].checkpoint
    assert last is not None
    return note_path(lake.root, last.sequence)


def test_checkpoints_are_cosigned_and_verify_accepts_them_on_both_transports(
    harness: Harness, signing_key: Keys, witness: WitnessProcess
) -> None:
    """Every materialised checkpoint carries the witness's valid cosignature; verify --witness-key accepts the lake."""
    rng = random.Random(1)
    grow(harness, rng, witness.pairs())
    grow(harness, rng, witness.pairs())
    result = checked(harness, signing_key, witness, online=True)
    assert result.ok, [f.message for f in result.errors]
    assert "cosigned by 1 of 1" in result.witnessed and "is in the lake's chain" in result.witnessed
    note = read_note(Lake(harness.log_dir).root, 1)
    assert note is not None and verified_by(note, witness.key) is not None
    assert verified_by(note, log_key(ORIGIN, load_public_key(signing_key.public))) is not None
    state = next(witness.state.glob("*.json"))
    assert stat.S_IMODE(state.stat().st_mode) == 0o600 and stat.S_IMODE(witness.state.stat().st_mode) == 0o700
    cli = run_cli("verify", "--log-dir", str(harness.log_dir), "--public-key", str(signing_key.public),
                  "--witness-key", witness.vkey)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "witnesses: latest checkpoint #1 cosigned by 1 of 1" in cli.stdout
    other = WitnessProcess(witness.home.parent / "other", [], name="witness.test/other")
    refused = run_cli("verify", "--log-dir", str(harness.log_dir), "--public-key", str(signing_key.public),
                      "--witness-key", witness.vkey, "--witness-key", other.vkey, "--min-witnesses", "2")
    assert refused.returncode == 1 and NOT_WITNESSED in refused.stdout and "FAILED" in refused.stdout
    proof = witness.home.parent / "consistency.json"
    assert run_cli("prove", "--log-dir", str(harness.log_dir), "--consistency", "0", "latest",
                   "--output", str(proof)).returncode == 0
    cosigned = run_cli("verify-proof", str(proof), "--public-key", str(signing_key.public),
                       "--witness-key", witness.vkey)
    assert cosigned.returncode == 0 and "NEW cosigned by witness.test/w1" in cosigned.stdout, cosigned.stdout
    uncosigned = run_cli("verify-proof", str(proof), "--public-key", str(signing_key.public), "--witness-key",
                         other.vkey)
    assert uncosigned.returncode == 1 and "0 valid cosignature(s) of the 1 required" in uncosigned.stdout


def test_without_witness_options_nothing_is_claimed_about_witnesses(embedded: Harness, signing_key: Keys) -> None:
    """A lake verified without --witness-key says its cosignatures were not checked."""
    grow(embedded, random.Random(2), [])
    result = verify(embedded.log_dir, signing_key.public)
    assert result.ok and result.witnessed.startswith("not checked")


def test_an_attacker_with_the_signing_key_rewrites_and_resigns_and_verify_with_witnesses_fails(
    embedded: Harness, signing_key: Keys, witness: WitnessProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """A rewritten, re-signed lake passes the signature check, but the witness refuses it: no cosignature."""
    rng = random.Random(3)
    grow(embedded, rng, witness.pairs())
    grow(embedded, rng, witness.pairs())
    genuine_note = latest_note(embedded).read_text()
    rows = LakeRows.load(embedded.log_dir)
    _op, op_rows = next(iter(rows.operations().items()))
    op_rows[1][1]["user"] = "mallory"
    for i in range(1, len(op_rows)):
        row = op_rows[i][1]
        if i > 1:
            row["prev_hash"] = op_rows[i - 1][1]["hash"]
        row["hash"] = event_hash(row)
    rows.save()
    shutil.rmtree(rows.lake.root / "_checkpoints")
    attacker = LakeCheckpointer(signing_key.private, create_key=False,
                                witnesses=WitnessClient(parse_witnesses(witness.pairs())))
    attacker.finish(rows.lake)
    assert "refused the checkpoint (HTTP 409)" in caplog.text
    assert verify(embedded.log_dir, signing_key.public).ok  # what the signing key alone allows
    result = checked(embedded, signing_key, witness)
    assert not result.ok and NOT_WITNESSED in kinds(result)
    assert list((witness.state / "evidence").iterdir()), "the witness keeps the refused checkpoint as evidence"
    latest_note(embedded).write_text(genuine_note)  # the old cosigned note, put back beside the forgery
    assert NOTE_INVALID in kinds(checked(embedded, signing_key, witness))


def test_removing_the_newest_checkpoints_is_caught_by_the_witness(
    embedded: Harness, signing_key: Keys, witness: WitnessProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """A rolled-back lake: the witness knows a larger tree, and refuses to cosign the lake's new history."""
    rng = random.Random(4)
    grow(embedded, rng, witness.pairs())
    grow(embedded, rng, witness.pairs())
    lake = Lake(embedded.log_dir)
    first = stored_checkpoints(lake.root)[0].checkpoint
    assert first is not None
    for path in lake.root.glob("_checkpoints/000000000001.*"):
        path.unlink()
    rows = LakeRows.load(embedded.log_dir)
    covered = {source: coverage.last_offset for source, coverage in first.sources.items()}
    rows.remove(lambda r: r["source_offset"] > covered.get(r["source"], -1))
    rows.save()
    offline = checked(embedded, signing_key, witness)
    assert offline.ok, "the lake alone cannot show what was removed with its checkpoints"
    online = checked(embedded, signing_key, witness, online=True)
    assert ROLLED_BACK in kinds(online)
    assert any("newest checkpoints were removed" in f.message for f in online.errors)
    grow(embedded, rng, witness.pairs())  # new history written over the removed one
    assert "not cosigned by witness.test/w1" in caplog.text
    result = checked(embedded, signing_key, witness)
    assert not result.ok and NOT_WITNESSED in kinds(result)


def _post(witness: WitnessProcess, old: int, proof: list[bytes], note_text: str) -> tuple[int, str, str]:
    return http("POST", f"{witness.url}/add-checkpoint", request_body(old, proof, parse_note(note_text)))


def test_the_witness_refuses_forks_rollbacks_and_untrusted_checkpoints_and_survives_a_restart(
    signing_key: Keys, witness: WitnessProcess
) -> None:
    """Each answer of tlog-witness: 200, 409 with its size, 409 fork, 422, 400, 403, 404; state kept on restart."""
    key = load_signing_key(signing_key.private)
    leaves = leaf_hashes([f"{i:064x}" for i in range(9)])
    forked = leaf_hashes([f"{i + 100:064x}" for i in range(9)])
    tree, fork = MerkleTree(leaves), MerkleTree(forked)

    def note(t: MerkleTree, size: int, signer: Ed25519PrivateKey = key, origin: str = ORIGIN) -> str:
        return sign_tree_head(TreeHead(origin, size, t.root(size)), signer).encode()

    status, _type, body = _post(witness, 0, [], note(tree, 5))
    assert status == 200
    cosigned = parse_note(note(tree, 5)).with_signatures(
        [s for s in parse_note(note(tree, 5) + body).signatures if s.name == witness.name])
    assert verified_by(cosigned, witness.key) is not None
    assert _post(witness, 5, [], note(fork, 5))[:1] == (409,)  # a fork: same size, another root
    assert _post(witness, 0, [], note(fork, 5)) == (409, SIZE_CONTENT_TYPE, "5\n")
    assert _post(witness, 5, consistency_proof_from(fork.frontier(5), 5, forked[5:8]), note(fork, 8))[0] == 422
    assert _post(witness, 5, consistency_proof_from(tree.frontier(5), 5, leaves[5:8]), note(tree, 8))[0] == 200
    assert _post(witness, 8, [], note(tree, 5))[0] == 400  # a rollback: old size above the checkpoint's
    assert _post(witness, 0, [], note(tree, 5)) == (409, SIZE_CONTENT_TYPE, "8\n")
    assert _post(witness, 8, [], note(tree, 8, Ed25519PrivateKey.generate()))[0] == 403
    assert _post(witness, 0, [], note(tree, 3, origin="another.test/log"))[0] == 404
    assert http("POST", f"{witness.url}/add-checkpoint", b"old 01\n\n" + note(tree, 8).encode())[0] == 400
    spec = parse_submission(SPEC_REQUEST.encode())
    assert (spec.old_size, len(spec.proof)) == (20852014, 4)
    assert http("POST", f"{witness.url}/add-checkpoint", SPEC_REQUEST.encode())[0] == 404  # a log it does not know
    assert len(list((witness.state / "evidence").iterdir())) >= 2

    witness.restart()
    assert _post(witness, 0, [], note(tree, 8)) == (409, SIZE_CONTENT_TYPE, "8\n")
    status, _type, latest = http("GET", f"{witness.url}/checkpoint?origin={urllib.parse.quote(ORIGIN, safe='')}")
    assert status == 200 and TreeHead.parse(parse_note(latest).text).size == 8
    assert verified_by(parse_note(latest), witness.key) is not None
    assert _post(witness, 8, consistency_proof_from(tree.frontier(8), 8, leaves[8:9]), note(tree, 9))[0] == 200
    record = json.loads(next(witness.state.glob("*.json")).read_text())
    assert (record["origin"], record["size"]) == (ORIGIN, 9)
    assert base64.b64decode(record["root"]) == tree.root(9)


def test_a_witness_that_is_down_does_not_stop_materialisation_and_is_asked_again(
    embedded: Harness, signing_key: Keys, witness: WitnessProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """With the witness down events are still stored and signed; once it is back the latest checkpoint is cosigned."""
    rng = random.Random(5)
    pairs = witness.pairs()
    witness.stop()
    grow(embedded, rng, pairs)
    assert "cannot be reached" in caplog.text
    assert verify(embedded.log_dir, signing_key.public).ok
    assert NOT_WITNESSED in kinds(checked(embedded, signing_key, witness))
    witness.start(int(pairs[0].rsplit(":", 1)[1]))
    again = run_cli("materialize", "--once", "--log-dir", str(embedded.log_dir), "--witness", *pairs)
    assert again.returncode == 0, again.stderr  # nothing new: the latest checkpoint is offered again
    result = checked(embedded, signing_key, witness)
    assert result.ok, [f.message for f in result.errors]


def test_a_witness_that_missed_checkpoints_gets_a_proof_from_the_size_it_holds(
    embedded: Harness, signing_key: Keys, witness: WitnessProcess
) -> None:
    """Checkpoints the witness never saw: it answers 409 with its size, and the proof is made from the lake."""
    rng = random.Random(6)
    grow(embedded, rng, [])
    grow(embedded, rng, witness.pairs())  # the witness starts from nothing: 409 "0", then old 0
    grow(embedded, rng, [])
    grow(embedded, rng, witness.pairs())  # it holds checkpoint #1, the log offers a proof from #2: 409, then #1
    result = checked(embedded, signing_key, witness, online=True)
    assert result.ok, [f.message for f in result.errors]
    assert read_note(Lake(embedded.log_dir).root, 3) is not None
    assert verified_by(read_note(Lake(embedded.log_dir).root, 3), witness.key) is not None  # type: ignore[arg-type]


def test_prove_consistency_and_verify_proof(embedded: Harness, signing_key: Keys, tmp_path: Path) -> None:
    """`prove --consistency OLD NEW` (numbers, 'latest' or a saved note) is VALID; an altered proof is INVALID."""
    rng = random.Random(7)
    for _ in range(3):
        grow(embedded, rng, [])
    saved = tmp_path / "seen.note"
    shutil.copy(Lake(embedded.log_dir).root / "_checkpoints" / "000000000000.note", saved)
    log_dir, public = str(embedded.log_dir), str(signing_key.public)
    for old, new in (("0", "latest"), ("1", "2"), (str(saved), "latest"), ("2", "2")):
        proof = tmp_path / f"proof-{old[-4:]}-{new}.json"
        made = run_cli("prove", "--log-dir", log_dir, "--consistency", old, new, "--output", str(proof))
        assert made.returncode == 0, made.stderr
        checked_proof = run_cli("verify-proof", str(proof), "--public-key", public)
        assert checked_proof.returncode == 0 and checked_proof.stdout.startswith("VALID: the log tree of"), \
            checked_proof.stdout
    raw = json.loads((tmp_path / "proof-0-latest.json").read_text())
    raw["proof"][0] = base64.b64encode(bytes(32)).decode()
    (tmp_path / "altered.json").write_text(json.dumps(raw))
    altered = run_cli("verify-proof", str(tmp_path / "altered.json"), "--public-key", public)
    assert altered.returncode == 1 and "does not extend" in altered.stdout
    backwards = run_cli("prove", "--log-dir", log_dir, "--consistency", "2", "0")
    assert backwards.returncode == 1 and "give the older checkpoint first" in backwards.stderr
    head = TreeHead.parse(parse_note(saved.read_text()).text)
    forked = tmp_path / "forked.note"
    forked.write_text(sign_tree_head(TreeHead(head.origin, head.size, bytes(32)),
                                     load_signing_key(signing_key.private)).encode())
    fork = run_cli("prove", "--log-dir", log_dir, "--consistency", str(forked), "latest")
    assert fork.returncode == 1 and "another root" in fork.stderr and "a fork" in fork.stderr
    ahead = tmp_path / "ahead.note"
    ahead.write_text(sign_tree_head(TreeHead(head.origin, 10_000, bytes(32)), load_signing_key(signing_key.private))
                     .encode())
    rolled_back = run_cli("prove", "--log-dir", log_dir, "--consistency", str(ahead), "latest")
    assert rolled_back.returncode == 1 and "no checkpoint of the lake has a log tree of 10000" in rolled_back.stderr


@pytest.mark.parametrize(("args", "named"), [
    (["verify", "--witness-key", "not-a-vkey"], "--witness-key"),
    (["verify", "--min-witnesses", "2"], "--min-witnesses"),
    (["verify", "--witness", "ftp://x", "x+00000000+AA=="], "--witness"),
    (["materialize", "--once", "--witness", "localhost:1", "x+00000000+AA=="], "--witness"),
    (["witness", "--name", "w.test/1", "--key", "{key}", "--state", "{state}", "--log", "bad"], "--log"),
])
def test_bad_witness_options_exit_2_with_one_line(
    args: list[str], named: str, tmp_path: Path, signing_key: Keys
) -> None:
    """Malformed vkeys, URLs and counts: exit 2, one line on stderr naming the option, no traceback."""
    args = [a.format(key=signing_key.private, state=tmp_path / "state") for a in args]
    result = run_cli(*args, "--log-dir", str(tmp_path / "logs")) if args[0] != "witness" else run_cli(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in result.stderr


def test_a_chain_begun_before_log_trees_gets_one_over_the_whole_lake(
    embedded: Harness, signing_key: Keys, witness: WitnessProcess
) -> None:
    """Checkpoints of the earlier format (no log tree, no note): the next one builds the tree from every row."""
    rng = random.Random(8)
    grow(embedded, rng, [])
    grow(embedded, rng, [])
    lake = Lake(embedded.log_dir)
    key = load_signing_key(signing_key.private)
    previous = ""
    for path in sorted((lake.root / "_checkpoints").glob("*.json")):
        raw = json.loads(path.read_text())
        raw.pop("log")
        raw["prev_checkpoint_hash"] = previous
        old = Checkpoint.from_dict(raw)
        old = replace(old, signature=sign(key, old.signed_bytes()))
        path.write_text(json.dumps(old.to_dict()))
        previous = old.digest()
    for path in (lake.root / "_checkpoints").glob("*.note"):
        path.unlink()
    events = verify(embedded.log_dir, signing_key.public).events
    grow(embedded, rng, witness.pairs())
    latest = stored_checkpoints(lake.root)[-1].checkpoint
    assert latest is not None and latest.sequence == 2 and latest.log is not None
    assert latest.log.tree_size == verify(embedded.log_dir, signing_key.public).events > events
    result = checked(embedded, signing_key, witness)
    assert result.ok, [f.message for f in result.errors]


def test_concurrent_submissions_cannot_roll_the_witness_back(tmp_path: Path) -> None:
    """Eight clients submit trees of sizes 1..8 from 'old 0' at once: one is cosigned, the rest get 409 and its size."""
    log_private = Ed25519PrivateKey.generate()
    origin_key = log_key(ORIGIN, log_private.public_key())
    state = WitnessState(tmp_path / "state")
    witness = Witness("witness.test/threads", Ed25519PrivateKey.generate(), [origin_key], state)
    tree = MerkleTree(leaf_hashes([f"{i:064x}" for i in range(8)]))
    bodies = [request_body(0, [], sign_tree_head(TreeHead(ORIGIN, n, tree.root(n)), log_private)) for n in range(1, 9)]
    start = threading.Barrier(len(bodies))

    def submit(body: bytes) -> tuple[int, str]:
        start.wait()
        answer = witness.add_checkpoint(body)
        return answer.status, answer.body

    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(submit, bodies))
    cosigned = [i + 1 for i, (status, _body) in enumerate(answers) if status == 200]
    assert len(cosigned) == 1
    assert {body for status, body in answers if status != 200} == {f"{cosigned[0]}\n"}
    assert state.latest(ORIGIN)["size"] == cosigned[0]  # type: ignore[index]


def test_a_witness_reading_the_checkpoints_topic_cosigns_and_the_materializer_collects_it(
    kafka: Harness, signing_key: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kafka mode, --witness kafka VKEY: the witness reads <topic>-checkpoints, its cosignatures reach the lake."""
    monkeypatch.setenv(ORIGIN_ENV, ORIGIN)
    process = WitnessProcess(tmp_path / "topic-witness", [log_key(ORIGIN, load_public_key(signing_key.public)).vkey()],
                             extra=["--bootstrap-servers", kafka.bootstrap, "--topic", kafka.topic]).start()
    try:
        pairs = ["kafka", process.vkey]
        rng = random.Random(9)
        lake = Lake(kafka.log_dir)
        for _round in range(2):
            grow(kafka, rng, pairs)
            latest = stored_checkpoints(lake.root)[-1].checkpoint
            assert latest is not None and latest.log is not None
            assert process.wait_cosigned(latest.log.tree_size) == latest.log.tree_size, process.stderr.read_text()
        materialize(kafka, witnesses=pairs)  # nothing new: collects the latest cosignature
        result = checked(kafka, signing_key, process)
        assert result.ok, [f.message for f in result.errors]
        first = read_note(lake.root, 0)
        assert first is not None and verified_by(first, process.key) is not None
    finally:
        process.stop()


def test_a_topic_witness_needs_kafka_and_bad_witness_variables_are_config_errors(
    embedded: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--witness kafka in embedded mode, or a malformed $SECUREML_AUDIT_WITNESSES: AuditConfigError naming it."""
    vkey = WitnessProcess(embedded.log_dir.parent / "w", []).vkey
    with pytest.raises(AuditConfigError, match="needs Kafka mode"):
        materialize(embedded, witnesses=["kafka", vkey])
    monkeypatch.setenv(WITNESSES_ENV, f"http://127.0.0.1:1 {vkey} http://127.0.0.1:2")
    with pytest.raises(AuditConfigError, match=f"{WITNESSES_ENV}: witnesses are given as URL VKEY pairs"):
        materialize(embedded)
