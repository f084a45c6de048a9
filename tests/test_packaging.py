"""Packaging: the wheel carries both halves of the secureml namespace and the Avro schemas, and installed
alone in a fresh venv (no extras) it runs every example of the user guide."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from support.reporting import fact, pdf_text
from test_guide_examples import check_decorated_call, check_recorded_trail

from conftest import REPO

GUIDE_SCRIPT = REPO / "tests" / "guide.py"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from the working tree without its dependencies."""
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(REPO)],
                   check=True, timeout=300)
    return next(dist.glob("secureml_audit-*.whl"))


def test_wheel_holds_packages_and_finds_its_schemas(wheel: Path, tmp_path: Path) -> None:
    """A built wheel, unpacked alone on sys.path, imports the guide's modules and loads schemas from itself."""
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


@pytest.mark.timeout(900)  # pip installs the dependencies from PyPI (about a minute with pip's cache)
def test_fresh_venv_with_the_wheel_runs_every_guide_example(
    wheel: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pip install <wheel> into a new venv, no extras; its interpreter runs all guide examples on the embedded log."""
    started = time.monotonic()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-compile", str(wheel)],
                   check=True, timeout=720)
    installed = time.monotonic()
    workdir, home = tmp_path / "work", tmp_path / "home"
    workdir.mkdir()
    home.mkdir()
    # A user's shell: no SECUREML_AUDIT_* (so no broker: the embedded log), nothing of this test session.
    ran = subprocess.run([str(python), "-I", str(GUIDE_SCRIPT)], cwd=workdir, env={"PATH": "/usr/bin:/bin",
                         "HOME": str(home)}, capture_output=True, text=True, timeout=300, check=False)
    finished = time.monotonic()
    with capsys.disabled():
        print(f"\nfresh venv: venv + pip install {installed - started:.0f} s, "
              f"guide examples {finished - installed:.0f} s")
    assert ran.returncode == 0, ran.stderr[-5000:]
    produced = json.loads(ran.stdout.splitlines()[-1])
    assert produced["package"].startswith(str(venv))  # the installed wheel, not the source tree

    check_recorded_trail(produced)
    check_decorated_call(produced["decorated"])

    report = workdir / "audit_report.pdf"
    assert produced["reports"] == [str(report)] * 2
    assert ran.stdout.count(f"Audit report generated at: {report}") == 2
    assert report.read_bytes().startswith(b"%PDF")
    text = pdf_text(report)
    assert "Credit Risk Model Audit Report" in text and fact(text, "Total events") == 8

    compliance = produced["compliance"]
    assert compliance["name"] == "patient_records" and compliance["regulation"] == "GDPR"
    assert "direct_identifiers" in compliance["summary"]["failed_checks"]  # the e-mail column
    trail = produced["compliance_trail"]
    assert [log["event_type"] for log in trail] == (
        ["audit_started", "data_access"] + ["compliance_check"] * len(compliance["checks"]) + ["audit_closed"]
    )
    assert trail[1]["dataset_name"] == "patient_records" and trail[1]["num_records"] == 4

    names = "import importlib.metadata as m; print(*(d.metadata['Name'] for d in m.distributions()))"
    distributions = subprocess.run([str(python), "-I", "-c", names], capture_output=True, text=True, timeout=60,
                                   check=True).stdout.split()
    assert "secureml-audit" in distributions and not {"pytest", "pandas"} & set(distributions)  # no test extra
    shutil.rmtree(venv)  # about 800 MB, and pytest keeps the temporary directories of three sessions
