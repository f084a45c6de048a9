"""Where audit events go: constructor arguments, then SECUREML_AUDIT_* variables, then defaults."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from secureml.audit.exceptions import AuditConfigError

ENV_PREFIX = "SECUREML_AUDIT_"
KAFKA_ENV_PREFIX = ENV_PREFIX + "KAFKA_"  # SECUREML_AUDIT_KAFKA_SECURITY_PROTOCOL -> security.protocol
DEFAULT_LOG_DIR = "secureml_audit_logs"
DEFAULT_TOPIC = "audit-events"
_SECRET_MARKERS = ("password", "secret", "key.pem", "token")
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def _number(name: str, value: Any, kind: type[int] | type[float], low: float, high: float | None) -> Any:
    """``value`` as an int or float within [low, high] (``gt`` low for floats), or AuditConfigError."""
    try:
        if isinstance(value, bool) or (kind is int and isinstance(value, float) and not value.is_integer()):
            raise ValueError
        number = kind(value)
    except (TypeError, ValueError):
        expected = "an integer" if kind is int else "a number"
        raise AuditConfigError(f"invalid audit configuration: {name}: must be {expected}, got {value!r}") from None
    too_low = number <= low if kind is float else number < low
    if too_low or (high is not None and number > high):
        bounds = f"> {low:g}" if kind is float else f"between {low:g} and {high:g}"
        raise AuditConfigError(f"invalid audit configuration: {name}: must be {bounds}, got {value!r}")
    return number


class AuditConfig:
    """Resolved transport settings of an audit trail (validated on construction, immutable).

    ``bootstrap_servers`` empty means the embedded local log under ``log_dir``.
    ``producer_config`` holds raw librdkafka settings (TLS, SASL, ...) passed through as given;
    secrets among them are masked in ``repr``.
    """

    __slots__ = ("log_dir", "bootstrap_servers", "topic", "partitions", "replication_factor", "flush_timeout",
                 "producer_config")
    log_dir: Path
    bootstrap_servers: str | None
    topic: str
    partitions: int
    replication_factor: int
    flush_timeout: float
    producer_config: tuple[tuple[str, str], ...]

    def __init__(
        self,
        log_dir: str | os.PathLike[str] = DEFAULT_LOG_DIR,
        bootstrap_servers: str | None = None,
        topic: str = DEFAULT_TOPIC,
        partitions: Any = 6,
        replication_factor: Any = 1,
        flush_timeout: Any = 60.0,
        producer_config: tuple[tuple[str, str], ...] = (),
    ) -> None:
        set_ = object.__setattr__
        try:
            # Absolute, so that a later chdir cannot send events of one configuration elsewhere.
            set_(self, "log_dir", Path(log_dir).expanduser().absolute())
            if "\x00" in str(self.log_dir):
                raise TypeError
        except TypeError:
            raise AuditConfigError(
                f"invalid audit configuration: log_dir: must be a path (without NUL characters), got {log_dir!r}"
            ) from None
        if bootstrap_servers is not None and not isinstance(bootstrap_servers, str):
            raise AuditConfigError(
                f"invalid audit configuration: bootstrap_servers: must be a string, got {bootstrap_servers!r}")
        set_(self, "bootstrap_servers", (bootstrap_servers.strip() or None) if bootstrap_servers is not None else None)
        if not isinstance(topic, str) or not _TOPIC_NAME.match(topic):
            raise AuditConfigError(f"invalid audit configuration: topic: must be 1-249 characters of letters, digits, "
                                   f"'.', '_' and '-', got {topic!r}")
        set_(self, "topic", topic)
        set_(self, "partitions", _number("partitions", partitions, int, 1, 10_000))
        set_(self, "replication_factor", _number("replication_factor", replication_factor, int, 1, 16))
        set_(self, "flush_timeout", _number("flush_timeout", flush_timeout, float, 0, None))
        set_(self, "producer_config", tuple(producer_config))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"AuditConfig is immutable: cannot set {name!r}")

    def _key(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AuditConfig) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @property
    def transport(self) -> str:
        """'kafka' when bootstrap servers are configured, else 'embedded'."""
        return "kafka" if self.bootstrap_servers else "embedded"

    def librdkafka_settings(self) -> dict[str, str]:
        """The pass-through producer settings as a dict."""
        return dict(self.producer_config)

    def __repr__(self) -> str:
        masked = tuple((k, "***" if any(m in k for m in _SECRET_MARKERS) else v) for k, v in self.producer_config)
        return (f"AuditConfig(log_dir={self.log_dir!r}, bootstrap_servers={self.bootstrap_servers!r}, "
                f"topic={self.topic!r}, partitions={self.partitions}, replication_factor={self.replication_factor}, "
                f"flush_timeout={self.flush_timeout}, producer_config={masked!r})")


def _settings(value: Any, name: str) -> dict[str, Any]:
    """librdkafka settings: a mapping of setting names to scalar values."""
    if not isinstance(value, Mapping):
        raise AuditConfigError(f"{name} must be a dict of librdkafka settings (e.g. {{'security.protocol': "
                               f"'SASL_SSL'}}), got {type(value).__name__}")
    for key, setting in value.items():
        if not isinstance(key, str) or not key:
            raise AuditConfigError(f"{name}: setting names must be non-empty strings, got {key!r}")
        if not isinstance(setting, (str, int, float, bool)):
            raise AuditConfigError(f"{name}[{key!r}] must be a string, number or boolean, got "
                                   f"{type(setting).__name__}")
    return dict(value)


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
            from_env = json.loads(raw_json)
        except json.JSONDecodeError as exc:
            raise AuditConfigError(f"{ENV_PREFIX}PRODUCER_CONFIG must be a JSON object: {exc}") from exc
        settings.update(_settings(from_env, f"{ENV_PREFIX}PRODUCER_CONFIG"))
    settings.update(_settings(producer_config or {}, "producer_config"))
    values["producer_config"] = tuple(sorted((str(k), str(v)) for k, v in settings.items()))
    return AuditConfig(**values)


def existing_log_dir(log_dir: str | os.PathLike[str] | None, command: str) -> Path:
    """The log directory a reading command names, which must exist (a typo must not read as "no events")."""
    directory = resolve_config(log_dir=log_dir, bootstrap_servers="").log_dir
    if not directory.is_dir():
        what = "is not a directory" if directory.exists() else "does not exist"
        raise AuditConfigError(
            f"{command}: the log directory {directory} {what}: give --log-dir the folder your AuditTrail writes "
            f"to (its log_dir; default ${ENV_PREFIX}LOG_DIR or {DEFAULT_LOG_DIR})"
        )
    return directory
