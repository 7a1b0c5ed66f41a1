"""Topics at start-up against a real broker: an existing topic with fewer partitions than configured is grown, one
whose min.insync.replicas differs gets the configured one with its other settings kept, a topic already right is
left alone, and a second start-up changes nothing."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from payment_infrastructure.kafka.admin import reconcile_topics
from payment_infrastructure.kafka.settings import KafkaSettings
from tests.fixtures.broker import unique_topic


async def topic_state(bootstrap: str, name: str) -> tuple[int, dict[str, str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([name])
        (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    finally:
        await admin.close()
    (resource,) = response.resources
    configs = {e[0]: e[1] for e in resource[4]}
    return len(described["partitions"]), configs


async def create(bootstrap: str, name: str, partitions: int, configs: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs)])
    finally:
        await admin.close()


async def test_existing_topics_are_grown_and_given_the_configured_min_insync_replicas(
    kafka_settings: KafkaSettings,
) -> None:
    bootstrap = kafka_settings.bootstrap_servers
    small, right = unique_topic("small"), unique_topic("right")
    await create(bootstrap, small, 2, {"min.insync.replicas": "1", "retention.ms": "3600000"})
    await create(bootstrap, right, 4, {"min.insync.replicas": "2"})
    settings = kafka_settings.model_copy(update={"min_insync_replicas": 2, "replication_factor": 2})

    changes = await reconcile_topics(settings, {small: 4, right: 4})

    assert changes == {small: ["partitions 2 -> 4", "min.insync.replicas 1 -> 2"]}
    partitions, configs = await topic_state(bootstrap, small)
    assert partitions == 4
    assert configs["min.insync.replicas"] == "2" and configs["retention.ms"] == "3600000"  # the other override kept
    assert (await topic_state(bootstrap, right))[0] == 4
    assert await reconcile_topics(settings, {small: 4, right: 4}) == {}  # the next start-up: nothing to do
    assert await reconcile_topics(settings, {small: 3}) == {}  # never shrunk
