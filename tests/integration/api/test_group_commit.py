"""Creates that arrive while the database is busy share one transaction (group commit), and sharing one never
changes any single request's answer: a neighbour's failure, a repeated key or order, or a long wait each affect only the
request they belong to.

Each test holds the API's only pool connection, so the single writer cannot start; the requests then queue up
and are written together the moment the connection comes back.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable

import asyncpg
import httpx
from prometheus_client import REGISTRY

from tests.fixtures.payment_api import ApiFactory, RunningApi
from tests.fixtures.ports import wait_until
from tests.integration.api.helpers import bearer, dsn, row_counts, valid_payment


def _batches() -> tuple[float, float]:
    """(transactions, payments) the group commit has written so far, from its histogram."""
    count = REGISTRY.get_sample_value("payment_create_batch_size_count") or 0.0
    total = REGISTRY.get_sample_value("payment_create_batch_size_sum") or 0.0
    return count, total


async def _single_writer_api(api_factory: ApiFactory, **db: object) -> RunningApi:
    return await api_factory(
        db={"pool_size": 1, "pool_timeout_seconds": 5.0, **db},
        api={"create_writers": 1, "create_batch_max_payments": 32},
    )


async def _queued(api: RunningApi, requests: list[Awaitable[httpx.Response]]) -> list[asyncio.Task[httpx.Response]]:
    tasks = [asyncio.ensure_future(r) for r in requests]

    async def all_queued() -> bool:
        return api.container.payments.queued_creates == len(tasks)

    await wait_until(all_queued, timeout=10, what=f"{len(tasks)} creates queued")
    return tasks


async def test_creates_queued_behind_a_busy_writer_are_written_in_one_transaction(
    api_factory: ApiFactory, tokens: dict[str, str], database_url: str
) -> None:
    api = await _single_writer_api(api_factory)
    before_rows, (before_batches, before_payments) = await row_counts(database_url), _batches()
    async with api.client() as client:
        async with api.writer_held():
            tasks = await _queued(
                api,
                [
                    client.post("/payments", json=valid_payment(), headers=bearer(tokens["order-service"]))
                    for _ in range(12)
                ],
            )
        responses = await asyncio.gather(*tasks)
        assert [r.status_code for r in responses] == [202] * 12
        for response in responses:  # each answer is its own payment, readable at its Location
            got = await client.get(response.headers["location"], headers=bearer(tokens["payment-reader"]))
            assert got.json()["paymentId"] == response.json()["paymentId"]
            assert len(got.json()["paymentOrders"]) == 3
    after_batches, after_payments = _batches()
    assert (after_batches - before_batches, after_payments - before_payments) == (1, 12)
    after_rows = await row_counts(database_url)
    assert after_rows["payments"] - before_rows["payments"] == 12
    assert after_rows["outbox_event"] - before_rows["outbox_event"] == 36
    assert len({r.json()["paymentId"] for r in responses}) == 12


async def test_a_key_held_by_a_request_in_flight_fails_only_that_request_of_its_batch(
    api_factory: ApiFactory, tokens: dict[str, str], database_url: str
) -> None:
    api = await _single_writer_api(api_factory, lock_timeout_ms=200)
    held_key = str(uuid.uuid4())
    other = await asyncpg.connect(dsn(database_url))
    in_flight = other.transaction()
    await in_flight.start()
    await other.execute(
        "INSERT INTO idempotency_keys VALUES ($1, $2, 'h', 202, '\\x7b7d', 1, now(), now() + interval '1 day')",
        "order-service",
        held_key,
    )
    before = await row_counts(database_url)
    try:
        async with api.client() as client:
            headers = bearer(tokens["order-service"])
            async with api.writer_held():
                tasks = await _queued(
                    api,
                    [
                        *(client.post("/payments", json=valid_payment(), headers=headers) for _ in range(5)),
                        client.post(
                            "/payments", json=valid_payment(), headers={**headers, "Idempotency-Key": held_key}
                        ),
                        *(client.post("/payments", json=valid_payment(), headers=headers) for _ in range(5)),
                    ],
                )
            responses = await asyncio.gather(*tasks)
    finally:
        await in_flight.rollback()
        await other.close()
    assert [r.status_code for r in responses] == [202] * 5 + [409] + [202] * 5
    assert responses[5].json()["type"].endswith("idempotency-key-in-use")
    after = await row_counts(database_url)
    assert after["payments"] - before["payments"] == 10
    assert after["outbox_event"] - before["outbox_event"] == 30


async def test_one_key_twice_in_a_queue_is_written_once_and_replayed_once(
    api_factory: ApiFactory, tokens: dict[str, str], database_url: str
) -> None:
    api = await _single_writer_api(api_factory)
    key, body = str(uuid.uuid4()), valid_payment()
    headers = {**bearer(tokens["order-service"]), "Idempotency-Key": key}
    before_rows, (before_batches, _) = await row_counts(database_url), _batches()
    async with api.client() as client:
        async with api.writer_held():
            tasks = await _queued(api, [client.post("/payments", json=body, headers=headers) for _ in range(2)])
        first, second = await asyncio.gather(*tasks)
    assert first.status_code == second.status_code == 202
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"
    assert second.content == first.content
    # Never in one statement (it would claim the key twice): two transactions.
    assert _batches()[0] - before_batches == 2
    assert (await row_counts(database_url))["payments"] - before_rows["payments"] == 1


async def test_a_create_that_waits_past_the_pool_timeout_is_503_and_never_written_later(
    api_factory: ApiFactory, tokens: dict[str, str], database_url: str
) -> None:
    api = await api_factory(db={"pool_size": 1, "pool_timeout_seconds": 0.3}, api={"create_writers": 1})
    before = await row_counts(database_url)
    async with api.client() as client:
        async with api.writer_held():
            waited = await client.post("/payments", json=valid_payment(), headers=bearer(tokens["order-service"]))
            assert api.container.payments.queued_creates == 0
        assert waited.status_code == 503, waited.text
        assert waited.headers["retry-after"] == "1"
        assert "database" in waited.json()["detail"]
        # The writer is free again: a new create goes through, and the withdrawn one stays unwritten.
        later = await client.post("/payments", json=valid_payment(), headers=bearer(tokens["order-service"]))
    assert later.status_code == 202
    assert (await row_counts(database_url))["payments"] - before["payments"] == 1


async def test_an_order_already_paid_fails_only_that_request_of_its_batch(
    api_factory: ApiFactory, tokens: dict[str, str], database_url: str
) -> None:
    api = await _single_writer_api(api_factory)
    headers, paid, key = bearer(tokens["order-service"]), valid_payment(), str(uuid.uuid4())
    async with api.client() as client:
        first = await client.post("/payments", json=paid, headers=headers)
        before_rows = await row_counts(database_url)
        async with api.writer_held():
            tasks = await _queued(
                api,
                [
                    *(client.post("/payments", json=valid_payment(), headers=headers) for _ in range(5)),
                    # A fresh key does not make the order new; its claim is undone with the refused payment.
                    client.post("/payments", json=paid, headers={**headers, "Idempotency-Key": key}),
                    *(client.post("/payments", json=valid_payment(), headers=headers) for _ in range(5)),
                ],
            )
        responses = await asyncio.gather(*tasks)
    assert [r.status_code for r in responses] == [202] * 5 + [409] + [202] * 5
    assert responses[5].json()["paymentId"] == first.json()["paymentId"]
    after = await row_counts(database_url)
    assert after["payments"] - before_rows["payments"] == 10
    assert after["outbox_event"] - before_rows["outbox_event"] == 30
    assert after["idempotency_keys"] == before_rows["idempotency_keys"]


async def test_one_order_twice_in_a_queue_is_written_once_and_the_repeat_points_at_it(
    api_factory: ApiFactory, tokens: dict[str, str], database_url: str
) -> None:
    api = await _single_writer_api(api_factory)
    body, headers = valid_payment(), bearer(tokens["order-service"])
    before = await row_counts(database_url)
    async with api.client() as client:
        async with api.writer_held():
            tasks = await _queued(api, [client.post("/payments", json=body, headers=headers) for _ in range(2)])
        first, second = await asyncio.gather(*tasks)
    assert first.status_code == 202, first.text
    assert second.status_code == 409, second.text
    assert second.headers["location"] == first.headers["location"]
    assert (await row_counts(database_url))["payments"] - before["payments"] == 1
