"""The fetch settings follow the polls: batching while records flow, one byte and a long wait once idle."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from aiokafka import AIOKafkaConsumer

from payment_infrastructure.kafka.consumer_settings import ConsumerSettings
from payment_infrastructure.kafka.fetch_pacing import FetchPacing


def consumer(wait_ms: int, min_bytes: int) -> Any:
    return SimpleNamespace(_fetcher=SimpleNamespace(_fetch_max_wait_ms=wait_ms, _fetch_min_bytes=min_bytes))


def asked(c: Any) -> tuple[int, int]:
    return c._fetcher._fetch_max_wait_ms, c._fetcher._fetch_min_bytes


def test_an_empty_poll_asks_for_one_byte_with_the_idle_wait_and_records_bring_the_batching_settings_back() -> None:
    settings = ConsumerSettings(fetch_max_wait_ms=50, fetch_min_bytes=16_384, idle_fetch_max_wait_ms=500)
    pacing, c = FetchPacing(settings), consumer(50, 16_384)
    pacing.after_poll(cast(AIOKafkaConsumer, c), got_records=True)
    assert (asked(c), pacing.idle) == ((50, 16_384), False)
    pacing.after_poll(cast(AIOKafkaConsumer, c), got_records=False)
    assert (asked(c), pacing.idle) == ((500, 1), True)
    pacing.after_poll(cast(AIOKafkaConsumer, c), got_records=False)
    assert asked(c) == (500, 1)
    pacing.after_poll(cast(AIOKafkaConsumer, c), got_records=True)
    assert (asked(c), pacing.idle) == ((50, 16_384), False)


def test_an_idle_wait_at_or_below_the_fetch_wait_leaves_the_fetch_settings_alone() -> None:
    settings = ConsumerSettings(fetch_max_wait_ms=50, fetch_min_bytes=16_384, idle_fetch_max_wait_ms=50)
    pacing, c = FetchPacing(settings), consumer(50, 16_384)
    pacing.after_poll(cast(AIOKafkaConsumer, c), got_records=False)
    assert (asked(c), pacing.idle) == ((50, 16_384), False)


def test_the_pinned_aiokafka_fetcher_reads_the_two_attributes_it_is_built_with() -> None:
    from aiokafka.consumer.fetcher import Fetcher

    names = Fetcher.__init__.__code__.co_names
    assert {"_fetch_max_wait_ms", "_fetch_min_bytes"} <= set(names)
    assert {"_fetch_max_wait_ms", "_fetch_min_bytes"} <= set(Fetcher._get_actions_per_node.__code__.co_names)
