"""The optional native accelerator (``pip install ./native``, the distribution ``secureml-audit-native``).

It writes a trail's events (envelope, privacy seal and hash chain: ``AuditTrail``), decodes them
into Arrow for the materializer, re-encodes and hashes lake rows for verify and checkpoints, and
builds and reveals query results. Each step gives byte for byte what its pure-Python path gives,
which runs when it is not installed or ``SECUREML_AUDIT_NATIVE`` is ``0``."""

from __future__ import annotations

import os
import warnings
from types import ModuleType

NATIVE_ENV = "SECUREML_AUDIT_NATIVE"
INTERFACE = 8  # the native module's INTERFACE this code calls (native/src/lib.rs raises both together)


def _load() -> ModuleType | None:
    """The native module, or None when it is switched off or not installed: it is a separate, optional
    distribution (it needs Rust to build), so its absence is a normal installation, not an error."""
    if os.environ.get(NATIVE_ENV) == "0":
        return None
    try:
        import secureml_audit_native
    except ImportError:
        return None
    found = getattr(secureml_audit_native, "INTERFACE", None)
    if found != INTERFACE:
        warnings.warn(f"secureml-audit-native offers interface {found}, this secureml-audit calls {INTERFACE}: it is "
                      "not used (the pure-Python path writes the same bytes, slower); reinstall it from this "
                      "version's sources: pip install ./native", RuntimeWarning, stacklevel=2)
        return None
    return secureml_audit_native


native: ModuleType | None = _load()
