"""One direction of dependency: consumers import the producer side, never the reverse."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO

PRODUCER = REPO / "producer" / "secureml"
CONSUMERS = REPO / "consumers" / "secureml"
HEAVY = ("pyarrow", "numpy", "duckdb", "polars", "deltalake", "pandas", "cryptography")


def _imported_modules(path: Path, root: Path) -> set[str]:
    """Every module a file under ``root`` imports by a static import statement (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = ".".join(path.relative_to(root.parent).with_suffix("").parts)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: -node.level]
                names.add(".".join([*base, node.module] if node.module else base))
            elif node.module:
                names.add(node.module)
    return names


def test_producer_never_imports_a_consumer_module() -> None:
    """No module under producer/ imports anything of secureml but secureml.audit."""
    offenders = {
        str(path.relative_to(REPO)): sorted(m for m in _imported_modules(path, PRODUCER)
                                           if m.startswith("secureml.") and not m.startswith("secureml.audit"))
        for path in PRODUCER.rglob("*.py")
    }
    assert {p: m for p, m in offenders.items() if m} == {}
    assert len(offenders) > 10, "the scan found the producer's modules"


def test_the_split_holds_what_it_should() -> None:
    """The lake, queries, integrity and the materializer live with the consumers; the producer keeps the trail."""
    for moved in ("lake", "query", "integrity", "materializer", "stream"):
        assert (CONSUMERS / moved / "__init__.py").is_file()
        assert not (PRODUCER / "audit" / moved).exists() and not (PRODUCER / "audit" / f"{moved}.py").exists()
    for kept in ("trail.py", "decorator.py", "codec.py", "config.py", "exceptions.py", "transports"):
        assert (PRODUCER / "audit" / kept).exists()


def test_logging_loads_none_of_the_consumer_side_libraries() -> None:
    """Importing and using AuditTrail (and the Kafka transport) loads no pyarrow, numpy, duckdb, polars, deltalake."""
    probe = (
        "import sys, json, tempfile\n"
        "from secureml.audit import AuditTrail, audit_function\n"
        "from secureml.audit.transports.kafka import KafkaTransport\n"
        "d = tempfile.mkdtemp()\n"
        "t = AuditTrail('op', log_dir=d, bootstrap_servers='')\n"
        "t.log_data_access(dataset_name='x', columns_accessed=['a'], num_records=1, purpose='p')\n"
        "t.log_model_inference(model_id='m', input_data='i', output='o', confidence=0.5)\n"
        "t.close()\n"
        "@audit_function(log_dir=d)\n"
        "def f(x): return x\n"
        "f(1)\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_readers_stay_importable_from_secureml_audit() -> None:
    """get_audit_logs, connect, count_events and verify are still reached through secureml.audit, lazily."""
    probe = (
        "import sys\n"
        "import secureml.audit as a\n"
        "assert 'secureml.query' not in sys.modules\n"
        "from secureml.audit import get_audit_logs, connect, count_events, verify, VerificationResult\n"
        "from secureml.query import get_audit_logs as g\n"
        "from secureml.integrity import verify as v\n"
        "assert get_audit_logs is g and verify is v\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    missing = subprocess.run([sys.executable, "-c", "from secureml.audit import no_such_name"],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "no_such_name" in missing.stderr
