"""ensure_topic against a real broker: one metadata request serves the topics a process ensures in a row."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from conftest import unique_topic
from secureml.audit.config import resolve_config
from secureml.audit.transports import kafka as transport


def test_topics_a_broker_just_listed_are_not_asked_for_again_and_missing_ones_are_created(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second, missing = unique_topic(), unique_topic(), unique_topic()
    config = resolve_config(log_dir=str(tmp_path), bootstrap_servers=kafka_bootstrap, topic=first)
    transport.ensure_topic(config)  # created
    transport.ensure_topic(config, second)  # created too

    clients: list[dict[str, object]] = []

    class Counted(AdminClient):  # type: ignore[misc]
        def __init__(self, settings: dict[str, object]) -> None:
            clients.append(settings)
            super().__init__(settings)

    monkeypatch.setattr(transport, "AdminClient", Counted)
    transport.ensure_topic(config, first)
    transport.ensure_topic(config, second)
    assert clients == []  # listed or created in the last 30 s: no admin client, no request
    transport.ensure_topic(config, missing)
    assert len(clients) == 1
    listed = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10).topics
    assert {first, second, missing} <= set(listed)
    monkeypatch.setattr(transport, "_LISTED_FOR", 0.0)  # a listing too old is not trusted
    transport.ensure_topic(config, first)
    assert len(clients) == 2
