"""Topic creation at start-up: every topic and its `.DLQ` twin, idempotently (the broker may be empty), with the
configured replication factor and `min.insync.replicas`. Existing topics are left as they are."""

from __future__ import annotations

from collections.abc import Mapping

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from payment_domain.topics import Topic, dlq_of
from payment_infrastructure.kafka.security import client_security
from payment_infrastructure.kafka.settings import KafkaSettings

log = structlog.get_logger(__name__)

_TOPIC_ALREADY_EXISTS = TopicAlreadyExistsError.errno


def topic_layout(settings: KafkaSettings) -> dict[str, int]:
    """Partitions per topic name; a DLQ keeps its source's count so a record can go to the same partition."""
    layout: dict[str, int] = {}
    for topic in Topic:
        partitions = settings.status_check_partitions if topic is Topic.STATUS_CHECK_SCHEDULER else settings.partitions
        layout[topic.value] = partitions
        layout[dlq_of(topic.value)] = partitions
    return layout


async def ensure_topics(settings: KafkaSettings) -> list[str]:
    """Create every Topic and its DLQ; return the names created now (existing ones are left as they are)."""
    return await create_topics(settings, topic_layout(settings))


async def create_topics(settings: KafkaSettings, layout: Mapping[str, int]) -> list[str]:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.client_id}-admin",
        request_timeout_ms=settings.request_timeout_ms,
        **client_security(settings),
    )
    await admin.start()
    try:
        response = await admin.create_topics(
            [
                NewTopic(
                    name,
                    partitions,
                    settings.replication_factor,
                    topic_configs={"min.insync.replicas": str(settings.min_insync_replicas)},
                )
                for name, partitions in layout.items()
            ]
        )
    finally:
        await admin.close()
    created: list[str] = []
    for name, code, message in (error[:3] for error in response.topic_errors):
        if code == 0:
            created.append(name)
        elif code != _TOPIC_ALREADY_EXISTS:
            raise for_code(code)(f"creating topic {name}: {message}")
    if created:
        log.info("kafka_topics_created", topics=created)
    return created
