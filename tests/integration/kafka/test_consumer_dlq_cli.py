"""`payments dlq list|show|replay` against the real broker."""

from __future__ import annotations

import asyncio
import os
import sys

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from payment_domain.topics import dlq_of
from payment_infrastructure.kafka.consumer import ConsumedRecord, PoisonMessage
from payment_infrastructure.kafka.settings import KafkaSettings
from services.payment_consumers.cli import main
from tests.fixtures.broker import TopicReader, unique_topic
from tests.integration.kafka.consumer_support import dead_letter_publisher

ORIGINAL_HEADERS = {"eventId": b"e-1", "traceId": b"t-1", "eventType": b"payment_order_created"}
ENVELOPE = {"eventId": "e-1", "eventType": "payment_order_created", "data": {"paymentOrderId": "42"}}


async def _dead_letters(kafka: KafkaSettings, reader: TopicReader) -> str:
    """A source topic and its DLQ holding two dead letters: one on partition 1, one on partition 2."""
    topic = await reader.create(unique_topic("cli"), partitions=3)
    await reader.create(dlq_of(topic), partitions=3)
    letters = [
        ConsumedRecord(topic, 1, 17, "order-42", orjson.dumps(ENVELOPE), dict(ORIGINAL_HEADERS), 1_700_000_000_000),
        ConsumedRecord(topic, 2, 5, "order-43", b"\xff not json", {"eventId": b"e-2"}, 1_700_000_000_000),
    ]
    async with dead_letter_publisher(kafka) as dlq:
        await dlq.publish(letters[0], PoisonMessage("missing field amountValue"), group_id="g-1", attempts=1)
        await dlq.publish(letters[1], RuntimeError("boom\nsecond line"), group_id="g-1", attempts=4)
    return topic


async def _cli(capsys: pytest.CaptureFixture[str], kafka: KafkaSettings, *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process (in a thread: it runs its own event loop)."""
    capsys.readouterr()
    try:
        await asyncio.to_thread(main, ["--bootstrap-servers", kafka.bootstrap_servers, *args])
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


async def test_dlq_list_counts_the_messages_of_every_dlq_topic(
    kafka_settings: KafkaSettings, topic_reader: TopicReader, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = await _dead_letters(kafka_settings, topic_reader)

    code, out, _ = await _cli(capsys, kafka_settings, "dlq", "list")

    assert code == 0
    counts = {line.split()[0]: int(line.split()[1]) for line in out.splitlines()}
    assert counts[dlq_of(topic)] == 2
    assert topic not in counts  # only DLQs are listed


async def test_dlq_list_of_one_topic_shows_each_letter_with_its_error_and_origin(
    kafka_settings: KafkaSettings, topic_reader: TopicReader, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = await _dead_letters(kafka_settings, topic_reader)

    code, out, _ = await _cli(capsys, kafka_settings, "dlq", "list", "--topic", dlq_of(topic))

    assert code == 0
    header, first, second, summary = out.splitlines()
    assert header.split("\t") == ["partition", "offset", "key", "error_class", "error_message", "original"]
    assert first.split("\t") == [
        "1",
        "0",
        "order-42",
        "payment_infrastructure.kafka.records.PoisonMessage",
        "missing field amountValue",
        f"{topic}:1@17",
    ]
    assert second.split("\t") == ["2", "0", "order-43", "RuntimeError", "boom second line", f"{topic}:2@5"]
    assert summary == f"2 dead letter(s) in {dlq_of(topic)}"


async def test_dlq_show_prints_the_headers_and_the_value_as_pretty_json(
    kafka_settings: KafkaSettings, topic_reader: TopicReader, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = await _dead_letters(kafka_settings, topic_reader)

    code, out, _ = await _cli(capsys, kafka_settings, "dlq", "show", dlq_of(topic), "1", "0")

    assert code == 0
    assert "key:       order-42" in out
    assert "  traceId: t-1" in out
    assert "  x-error-message: missing field amountValue" in out
    assert "  x-attempts: 1" in out
    assert orjson.dumps(ENVELOPE, option=orjson.OPT_INDENT_2).decode() in out


async def test_dlq_show_of_an_absent_offset_fails_with_exit_code_1(
    kafka_settings: KafkaSettings, topic_reader: TopicReader, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = await _dead_letters(kafka_settings, topic_reader)

    code, _, err = await _cli(capsys, kafka_settings, "dlq", "show", dlq_of(topic), "1", "7")

    assert code == 1
    assert f"no message at {dlq_of(topic)}:1@7" in err


async def test_dlq_commands_refuse_topics_that_are_not_dlqs_or_do_not_exist(
    kafka_settings: KafkaSettings, topic_reader: TopicReader, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = await _dead_letters(kafka_settings, topic_reader)
    missing = dlq_of(unique_topic("missing"))

    not_a_dlq, _, _ = await _cli(capsys, kafka_settings, "dlq", "list", "--topic", topic)
    absent, _, err = await _cli(capsys, kafka_settings, "dlq", "list", "--topic", missing)
    _, listing, _ = await _cli(capsys, kafka_settings, "dlq", "list")

    assert not_a_dlq == 2
    assert absent == 1
    assert f"no topic {missing}" in err
    assert missing not in listing  # looking for it did not create it


async def test_dlq_replay_of_one_letter_republishes_it_to_its_original_partition_without_error_headers(
    kafka_settings: KafkaSettings, topic_reader: TopicReader, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = await _dead_letters(kafka_settings, topic_reader)

    code, out, _ = await _cli(
        capsys, kafka_settings, "dlq", "replay", dlq_of(topic), "--partition", "1", "--offset", "0"
    )

    assert code == 0
    assert f"replayed {dlq_of(topic)}:1@0 -> {topic}:1@0" in out
    [replayed] = await topic_reader.read_all(topic)
    assert (replayed.partition, replayed.key, replayed.value) == (1, "order-42", orjson.dumps(ENVELOPE))
    assert replayed.headers == ORIGINAL_HEADERS


async def test_dlq_replay_all_republishes_every_letter(
    kafka_settings: KafkaSettings, topic_reader: TopicReader, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = await _dead_letters(kafka_settings, topic_reader)

    code, out, _ = await _cli(capsys, kafka_settings, "dlq", "replay", dlq_of(topic), "--all")

    assert code == 0
    assert out.splitlines()[-1] == f"2 letter(s) replayed from {dlq_of(topic)}"
    replayed = await topic_reader.read_all(topic)
    assert sorted((m.partition, m.key, m.value, tuple(m.headers)) for m in replayed) == [
        (1, "order-42", orjson.dumps(ENVELOPE), tuple(ORIGINAL_HEADERS)),
        (2, "order-43", b"\xff not json", ("eventId",)),
    ]


async def test_dlq_replay_needs_either_one_letter_or_all(
    kafka_settings: KafkaSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = await _cli(capsys, kafka_settings, "dlq", "replay", "x.DLQ", "--partition", "1")

    assert code == 2
    assert "--partition P --offset O, or --all" in err or "needs both --partition and --offset" in err


async def test_the_cli_runs_as_a_module_with_the_broker_from_the_environment(
    kafka_settings: KafkaSettings, topic_reader: TopicReader
) -> None:
    topic = await _dead_letters(kafka_settings, topic_reader)
    env = {**os.environ, "PAYMENTS_KAFKA__BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers}

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.payment_consumers.cli",
        "dlq",
        "list",
        "--topic",
        dlq_of(topic),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)

    assert process.returncode == 0, err.decode()
    assert out.decode().splitlines()[-1] == f"2 dead letter(s) in {dlq_of(topic)}"


async def test_topic_read_prints_the_messages_of_any_topic_filtered_by_key(
    kafka_settings: KafkaSettings, topic_reader: TopicReader, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = await topic_reader.create(unique_topic("read"), partitions=2)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_settings.bootstrap_servers)
    await producer.start()
    try:
        for key in ("1001", "1002", "1001"):
            await producer.send_and_wait(
                topic, orjson.dumps({**ENVELOPE, "aggregateId": key}), key=key.encode(), headers=[("eventType", b"x")]
            )
    finally:
        await producer.stop()

    code, out, _ = await _cli(capsys, kafka_settings, "topic", "read", topic, "--key", "1001")

    assert code == 0
    assert out.count("key=1001 eventType=x") == 2
    assert "key=1002" not in out
    assert '"aggregateId": "1001"' in out
    assert f"2 of 2 message(s) on {topic}" in out
