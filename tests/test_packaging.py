"""Packaging: the wheel carries both halves of the secureml namespace and the Avro schemas."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import REPO


def test_wheel_holds_packages_and_finds_its_schemas(tmp_path: Path) -> None:
    """A built wheel, unpacked alone on sys.path, imports the guide's modules and loads schemas from itself."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(REPO)],
                   check=True, timeout=300)
    wheel = next(tmp_path.glob("secureml_audit-*.whl"))
    unpacked = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        zf.extractall(unpacked)
    assert "secureml/__init__.py" not in names  # a namespace split over producer/ and consumers/
    assert "secureml/audit/schemas/audit_event.v1.avsc" in names
    assert "secureml/audit/schemas/audit_alert.v1.avsc" in names
    assert any(n.endswith("entry_points.txt") for n in names)
    probe = (
        "import secureml.audit, secureml.reporting, secureml.compliance, secureml.alerting;"
        "from secureml.audit.schema import load_schema, schema_dirs;"
        "print(secureml.audit.__file__); print(load_schema()['name']); print(schema_dirs()[0].is_dir())"
    )
    out = subprocess.run([sys.executable, "-c", probe], env={"PYTHONPATH": str(unpacked), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=120, check=True).stdout.splitlines()
    assert out[0].startswith(str(unpacked)) and out[1] == "AuditEvent" and out[2] == "True"
