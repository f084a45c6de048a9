"""Make the input of `go run . check`: a real lake, materialised three times with a real witness process.

Writes DIR/input.json ({"log_vkey", "witness_vkeys", "proof": `prove --consistency 0 latest`}):

    python scripts/c2sp-vectors/live_input.py /tmp/crosscheck
    cd scripts/c2sp-vectors && go run . check < /tmp/crosscheck/input.json

tests/data/c2sp_go_checked.json is one such input that Go verified.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from secureml.audit import AuditTrail
from secureml.integrity.keys import generate_key, load_public_key, load_signing_key
from secureml.integrity.notes import COSIGNATURE_V1, NoteKey
from secureml.integrity.proofs import prove_consistency
from secureml.integrity.treehead import log_key
from secureml.materializer import materialize

ORIGIN = "audit.example/crosscheck"


def main(root: Path) -> None:
    os.environ["SECUREML_AUDIT_SIGNING_KEY"] = str(root / "keys" / "log.pem")
    os.environ["SECUREML_AUDIT_LOG_ORIGIN"] = ORIGIN
    generate_key(root / "keys" / "log.pem")
    generate_key(root / "witness" / "key.pem")
    log_vkey = log_key(ORIGIN, load_public_key(root / "keys" / "log.pub.pem")).vkey()
    witness = NoteKey("witness.example/go-check", load_signing_key(root / "witness" / "key.pem").public_key(),
                      COSIGNATURE_V1)
    with (root / "witness.log").open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "secureml.audit.cli", "witness", "--name", witness.name, "--key",
             str(root / "witness" / "key.pem"), "--state", str(root / "witness" / "state"), "--log", log_vkey,
             "--listen", "127.0.0.1:0"], stderr=err)
    try:
        while not (match := re.search(r"http://127\.0\.0\.1:\d+", (root / "witness.log").read_text())):
            time.sleep(0.05)
        for round_ in range(3):
            trail = AuditTrail(operation_name=f"op{round_}", log_dir=root / "logs")
            for i in range(7 + round_):
                trail.log_data_access(dataset_name="d", columns_accessed=["a"], num_records=i, purpose="p")
            trail.close()
            materialize(root / "logs", once=True, witnesses=[match.group(0), witness.vkey()])
        proof = prove_consistency(root / "logs", "0", "latest")
    finally:
        process.terminate()
        process.wait()
    (root / "input.json").write_text(json.dumps({"log_vkey": log_vkey, "witness_vkeys": [witness.vkey()],
                                                 "proof": proof}))


if __name__ == "__main__":
    main(Path(sys.argv[1]).absolute())
