"""Where audit events go: constructor arguments, then SECUREML_AUDIT_* variables, then defaults."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from secureml.audit.exceptions import AuditConfigError

ENV_PREFIX = "SECUREML_AUDIT_"
KAFKA_ENV_PREFIX = ENV_PREFIX + "KAFKA_"  # SECUREML_AUDIT_KAFKA_SECURITY_PROTOCOL -> security.protocol
DEFAULT_LOG_DIR = "secureml_audit_logs"
DEFAULT_TOPIC = "audit-events"
_SECRET_MARKERS = ("password", "secret", "key.pem", "token")


class AuditConfig(BaseModel):
    """Resolved transport settings of an audit trail.

    ``bootstrap_servers`` empty means the embedded local log under ``log_dir``.
    ``producer_config`` holds raw librdkafka settings (TLS, SASL, ...) passed through as given.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    log_dir: Path = Path(DEFAULT_LOG_DIR)
    bootstrap_servers: str | None = None
    topic: str = Field(DEFAULT_TOPIC, min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")
    partitions: int = Field(6, ge=1, le=10_000)
    replication_factor: int = Field(1, ge=1, le=16)
    flush_timeout: float = Field(60.0, gt=0)
    producer_config: tuple[tuple[str, str], ...] = ()

    @field_validator("log_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # Absolute, so that a later chdir cannot send events of one configuration elsewhere.
        return value.expanduser().absolute()

    @field_validator("bootstrap_servers")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @property
    def transport(self) -> str:
        """'kafka' when bootstrap servers are configured, else 'embedded'."""
        return "kafka" if self.bootstrap_servers else "embedded"

    def librdkafka_settings(self) -> dict[str, str]:
        """The pass-through producer settings as a dict."""
        return dict(self.producer_config)

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            if name == "producer_config":
                value = tuple((k, "***" if any(m in k for m in _SECRET_MARKERS) else v) for k, v in value)
            yield name, value


def resolve_config(
    *,
    log_dir: str | os.PathLike[str] | None = None,
    bootstrap_servers: str | None = None,
    topic: str | None = None,
    producer_config: dict[str, Any] | None = None,
    **extra: Any,
) -> AuditConfig:
    """Build an AuditConfig from arguments, then the environment, then defaults."""
    env = os.environ
    values: dict[str, Any] = {
        "log_dir": log_dir or env.get(ENV_PREFIX + "LOG_DIR") or DEFAULT_LOG_DIR,
        "bootstrap_servers": bootstrap_servers
        if bootstrap_servers is not None
        else env.get(ENV_PREFIX + "BOOTSTRAP_SERVERS"),
        "topic": topic or env.get(ENV_PREFIX + "TOPIC") or DEFAULT_TOPIC,
    }
    for name in ("partitions", "replication_factor", "flush_timeout"):
        if name in extra and extra[name] is not None:
            values[name] = extra.pop(name)
        elif (raw := env.get(ENV_PREFIX + name.upper())) is not None:
            values[name] = raw
    extra = {k: v for k, v in extra.items() if v is not None}
    if extra:
        raise AuditConfigError(f"unknown configuration option(s): {sorted(extra)}")
    settings = {
        k[len(KAFKA_ENV_PREFIX) :].lower().replace("_", "."): v
        for k, v in env.items()
        if k.startswith(KAFKA_ENV_PREFIX)
    }
    if (raw_json := env.get(ENV_PREFIX + "PRODUCER_CONFIG")) is not None:
        try:
            settings.update(json.loads(raw_json))
        except json.JSONDecodeError as exc:
            raise AuditConfigError(f"{ENV_PREFIX}PRODUCER_CONFIG must be a JSON object: {exc}") from exc
    settings.update(producer_config or {})
    values["producer_config"] = tuple(sorted((str(k), str(v)) for k, v in settings.items()))
    try:
        return AuditConfig(**values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise AuditConfigError(f"invalid audit configuration: {problems}") from exc
