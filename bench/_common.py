"""Shared bench helpers: a broker, the SecureML 0.3.1 baseline, medians."""

from __future__ import annotations

import importlib.util
import logging
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from io import BytesIO
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "secureml-audit" / "bench"


def bootstrap() -> str:
    """SECUREML_AUDIT_BOOTSTRAP_SERVERS, else the project's local broker (started if needed)."""
    if os.environ.get("SECUREML_AUDIT_BOOTSTRAP_SERVERS"):
        return os.environ["SECUREML_AUDIT_BOOTSTRAP_SERVERS"]
    out = subprocess.run([str(REPO / "scripts" / "kafka-local"), "start"], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def secureml_031_audit() -> ModuleType:
    """SecureML 0.3.1's own audit module (from its PyPI wheel, loaded alone, console echo off)."""
    wheel_dir = CACHE / "secureml-0.3.1"
    module_path = wheel_dir / "secureml" / "audit.py"
    if not module_path.exists():
        wheel_dir.mkdir(parents=True, exist_ok=True)
        print("bench: fetching secureml==0.3.1 from PyPI (no dependencies) ...", file=sys.stderr)
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", tmp,
                            "secureml==0.3.1"], check=True)
            wheel = next(Path(tmp).glob("secureml-0.3.1-*.whl"))
            with zipfile.ZipFile(wheel) as zf:
                zf.extract("secureml/audit.py", wheel_dir)
    spec = importlib.util.spec_from_file_location("secureml031_audit", module_path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    logging.getLogger("secureml").handlers.clear()  # console echo off: file logging only
    return module


def median(values: list[float]) -> float:
    """Median of the samples."""
    return statistics.median(values)


def log_inferences(events: int, log_dir: Path, broker: str, topic: str) -> None:
    """Log ``events`` inference events in trails of 10,000 (13 operation names), into Kafka or the embedded log."""
    from secureml.audit import AuditTrail

    per_trail = 10_000
    for start in range(0, events, per_trail):
        trail = AuditTrail(f"op-{start // per_trail % 13}", log_dir=log_dir, bootstrap_servers=broker, topic=topic)
        for i in range(min(per_trail, events - start) - 2):
            trail.log_model_inference("credit_risk_v1", f"application_{i}", "low_risk", 0.87)
        trail.close()
        print(f"\rbench: logged {min(start + per_trail, events):,}/{events:,}", file=sys.stderr, end="")
    print(file=sys.stderr)


def percentiles(values: list[float]) -> list[float]:
    """The 1st to 99th percentiles (NaN when there are too few values)."""
    return statistics.quantiles(values, n=100) if len(values) > 1 else [float("nan")] * 99


def baseline_code(work: Path, commit: str) -> Path:
    """``commit``'s tree under ``work``, with its accelerator built into ``site`` beside it (once per commit)."""
    code = work / f"baseline-{commit}"
    if not (code / "site").exists():
        archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], capture_output=True, check=True)
        with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
            tar.extractall(code, filter="data")
        if (code / "native").exists():
            print(f"bench: building {commit}'s accelerator", file=sys.stderr)
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(code / "site-build"),
                            str(code / "native")], check=True, env={**os.environ, "CARGO_TARGET_DIR": str(
                                work / "baseline-target")})
            (code / "site-build").rename(code / "site")
        else:
            (code / "site").mkdir()
    return code
