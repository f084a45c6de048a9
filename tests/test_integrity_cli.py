"""The integrity subcommands through ``secureml-audit``: verify, keygen, prove, verify-proof."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from support.integrity import (  # noqa: F401 - signing_key_fixture is autouse
    Keys,
    LakeRows,
    log_operations,
    materialize,
    signing_key_fixture,
)

from conftest import Harness
from secureml.audit import cli


@pytest.fixture
def lake(embedded: Harness, signing_key: Keys) -> list[str]:
    """A materialised, checkpointed lake; its operation ids."""
    ids = log_operations(embedded, random.Random(31), 3, 6)
    materialize(embedded)
    return ids


def test_verify_exits_0_when_intact_and_1_with_the_finding_when_not(
    embedded: Harness, signing_key: Keys, lake: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The exit code is the verdict; the text names the operation and seq that were altered."""
    assert cli.main(["verify", "--log-dir", str(embedded.log_dir), "--public-key", str(signing_key.public)]) == 0
    assert capsys.readouterr().out.startswith("INTACT")
    rows = LakeRows.load(embedded.log_dir)
    next(row for _p, row in rows.all() if row["operation_id"] == lake[1] and row["seq"] == 3)["purpose"] = "x"
    rows.save()
    assert cli.main(["verify", "--log-dir", str(embedded.log_dir), "--public-key", str(signing_key.public)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAILED") and f"{lake[1]}: the event at seq 3 does not match its hash" in out


def test_verify_json_is_the_full_result(
    embedded: Harness, signing_key: Keys, lake: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """--format json prints every operation and checkpoint; without --public-key it warns about the lake's key."""
    assert cli.main(["verify", "--log-dir", str(embedded.log_dir), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["summary"]["operations"] == 3 and len(report["checkpoints"]) == 1
    assert [f["kind"] for f in report["findings"]] == ["untrusted_key"]
    assert {op["operation_id"] for op in report["operations"]} == set(lake)


def test_verify_without_a_lake_says_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Pointing verify at a directory without a lake fails with the command that makes one."""
    assert cli.main(["verify", "--log-dir", str(tmp_path)]) == 1
    assert "secureml-audit materialize --once" in capsys.readouterr().err


def test_keygen_writes_keys_and_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """keygen prints where both keys are; a second run refuses to replace the key."""
    key = tmp_path / "ops" / "signing_key.pem"
    assert cli.main(["keygen", "--key", str(key)]) == 0
    assert f"public key:  {key.with_name('signing_key.pub.pem')}" in capsys.readouterr().out
    assert cli.main(["keygen", "--key", str(key)]) == 1
    assert "--force" in capsys.readouterr().err


def test_prove_then_verify_proof(
    embedded: Harness, signing_key: Keys, lake: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """prove writes a proof that verify-proof accepts with the public key, and rejects for another event."""
    proof = tmp_path / "proof.json"
    event = f"{lake[2]}:4"
    assert cli.main(["prove", "--log-dir", str(embedded.log_dir), "--event-id", event, "--output", str(proof)]) == 0
    args = ["verify-proof", str(proof), "--public-key", str(signing_key.public)]
    assert cli.main([*args, "--event-id", event]) == 0
    assert capsys.readouterr().out.startswith("VALID")
    assert cli.main([*args, "--event-id", f"{lake[2]}:3"]) == 1
    assert capsys.readouterr().out.startswith("INVALID")
