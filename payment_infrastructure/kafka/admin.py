"""Topics at start-up: every topic and its `.DLQ` twin, idempotently (the broker may be empty), with the configured
replication factor and `min.insync.replicas`; an existing topic is brought to the layout: grown to the configured
partition count (never shrunk: Kafka cannot) and given the configured `min.insync.replicas`, its other topic
settings kept. Growing a keyed topic moves some keys to new partitions: records of one order published before and
after may then be read side by side, which the claims and the inbox tolerate (they never rely on order for money);
the change is logged. A replication factor that differs is only logged (changing it is a reassignment)."""

from __future__ import annotations

from collections.abc import Mapping

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
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


_DYNAMIC_TOPIC_CONFIG = 1  # DescribeConfigs' config source of a per-topic override


async def ensure_topics(settings: KafkaSettings) -> list[str]:
    """Create every Topic and its DLQ and reconcile the existing ones; return the names created now."""
    layout = topic_layout(settings)
    created = await create_topics(settings, layout)
    await reconcile_topics(settings, {name: n for name, n in layout.items() if name not in created})
    return created


async def reconcile_topics(settings: KafkaSettings, layout: Mapping[str, int]) -> dict[str, list[str]]:
    """Bring existing topics to `layout` and the configured min.insync.replicas; returns what changed per topic."""
    if not layout:
        return {}
    admin = _admin(settings)
    await admin.start()
    try:
        changes: dict[str, list[str]] = {}
        described = {t["topic"]: t for t in await admin.describe_topics(sorted(layout)) if t["error_code"] == 0}
        grow = {}
        for name, wanted in layout.items():
            partitions = described.get(name, {}).get("partitions", [])
            if partitions and len(partitions) < wanted:
                grow[name] = NewPartitions(total_count=wanted)
                changes.setdefault(name, []).append(f"partitions {len(partitions)} -> {wanted}")
            replicas = {len(p["replicas"]) for p in partitions}
            if partitions and replicas != {settings.replication_factor}:
                log.warning(
                    "kafka_topic_replication_differs",
                    topic=name,
                    replication_factor=sorted(replicas),
                    configured=settings.replication_factor,
                )
        if grow:
            response = await admin.create_partitions(grow)
            for name, code, message in (error[:3] for error in response.topic_errors):
                if code != 0:
                    raise for_code(code)(f"growing topic {name}: {message}")
        wanted_isr = str(settings.min_insync_replicas)
        altered = []
        for name, overrides in (await _topic_overrides(admin, [n for n in layout if n in described])).items():
            if overrides.get("min.insync.replicas") != wanted_isr:
                changes.setdefault(name, []).append(
                    f"min.insync.replicas {overrides.get('min.insync.replicas', 'default')} -> {wanted_isr}"
                )
                # AlterConfigs replaces every override of the topic: send the others back unchanged.
                altered.append(
                    ConfigResource(ConfigResourceType.TOPIC, name, overrides | {"min.insync.replicas": wanted_isr})
                )
        if altered:
            for response in await admin.alter_configs(altered):
                for code, message, _type, name in (r[:4] for r in response.resources):
                    if code != 0:
                        raise for_code(code)(f"setting min.insync.replicas of {name}: {message}")
    finally:
        await admin.close()
    for name, what in sorted(changes.items()):
        log.warning("kafka_topic_reconciled", topic=name, changes=what)
    return changes


async def _topic_overrides(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, dict[str, str]]:
    """Each topic's own settings (not the broker's defaults), by name."""
    if not names:
        return {}
    overrides: dict[str, dict[str, str]] = {}
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
    for response in responses:
        for code, message, _type, name, entries in (r[:5] for r in response.resources):
            if code != 0:
                raise for_code(code)(f"describing topic {name}: {message}")
            overrides[name] = {e[0]: e[1] for e in entries if e[3] == _DYNAMIC_TOPIC_CONFIG and e[1] is not None}
    return overrides


def _admin(settings: KafkaSettings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.client_id}-admin",
        request_timeout_ms=settings.request_timeout_ms,
        **client_security(settings),
    )


async def create_topics(settings: KafkaSettings, layout: Mapping[str, int]) -> list[str]:
    admin = _admin(settings)
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
