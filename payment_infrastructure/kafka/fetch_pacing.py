"""How long the broker may hold a consumer's fetch: short while records flow, long once a poll found nothing.

The broker answers a fetch when it holds `fetch_min_bytes` or `fetch_max_wait_ms` has passed. While records flow,
a short wait and a few kilobytes make records arrive a few dozen at a time, so every stage after the fetch batches
with them. With no traffic, the same settings have the broker answer an empty fetch for every consumer each 50 ms,
which costs an idle 2-core box about a quarter of a core. After a poll that found nothing, the next fetches ask
for a single byte and wait up to `idle_fetch_max_wait_ms`: the broker answers as soon as the first record lands
(sooner than the batching settings would), and the consumer returns to them with the first records it gets.

aiokafka reads both values from its fetcher each time it builds a fetch request and offers no public way to change
them after construction, so this sets the fetcher's two attributes (checked against the pinned version by a test).
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer

from payment_infrastructure.kafka.consumer_settings import ConsumerSettings


class FetchPacing:
    """The fetch settings of one consumer, switched between flowing and idle by what each poll returned."""

    def __init__(self, settings: ConsumerSettings) -> None:
        self._flowing = (settings.fetch_max_wait_ms, settings.fetch_min_bytes)
        self._idle = (settings.idle_fetch_max_wait_ms, 1)
        self.enabled = settings.idle_fetch_max_wait_ms > settings.fetch_max_wait_ms
        self.idle = False

    def after_poll(self, consumer: AIOKafkaConsumer, *, got_records: bool) -> None:
        """Called right after `getmany` returns, before the fetcher builds its next request."""
        idle = not got_records
        if idle == self.idle or not self.enabled:
            return
        fetcher = consumer._fetcher  # private: see the module docstring
        fetcher._fetch_max_wait_ms, fetcher._fetch_min_bytes = self._idle if idle else self._flowing
        self.idle = idle
