"""Outbox fixtures: a clean outbox (windows for now), a started publisher and a fresh topic per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_infrastructure.kafka.producer import KafkaEventPublisher
from payment_infrastructure.kafka.settings import KafkaSettings
from payment_infrastructure.postgres.outbox_partitions import ensure_outbox_partitions
from tests.fixtures.broker import TopicReader, unique_topic
from tests.integration.outbox.support import reset_outbox


@pytest.fixture
async def outbox(engine: AsyncEngine) -> AsyncEngine:
    """The session database with an empty outbox and the current and next window present."""
    await reset_outbox(engine)
    await ensure_outbox_partitions(engine, now=datetime.now(UTC), windows_ahead=1)
    return engine


@pytest.fixture
async def publisher(kafka_settings: KafkaSettings) -> AsyncIterator[KafkaEventPublisher]:
    async with KafkaEventPublisher.from_settings(kafka_settings) as started:
        yield started


@pytest.fixture
async def topic(topic_reader: TopicReader) -> str:
    return await topic_reader.create(unique_topic(), partitions=4)
