"""`make bench-e2e`: orders settled per second end to end (API → outbox → Kafka → consumers → PSP simulator →
final state), every part a real process. Figures are printed; nothing is asserted.

For each scenario: create N payments (2 orders each) as fast as the API takes them, then wait until every order is
final or parked, and report orders/s over the whole run plus when 50 %/95 %/100 % of orders had settled.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import asyncpg
import httpx

from payment_infrastructure.postgres.pool import plain_dsn
from tests.benchmarks.stack import Stack, api_stack, client_token

FINAL = ("SUCCESSFUL_FINAL", "FAILED_FINAL", "DECLINED_FINAL", "NEEDS_RECONCILIATION")


def _body(i: int) -> dict[str, object]:
    return {
        "buyerId": f"BUYER-{i}",
        "orderId": f"ORDER-{uuid.uuid4().hex[:12]}",
        "totalAmount": {"value": 3000, "currency": "EUR"},
        "paymentOrders": [
            {"sellerId": "SELLER-1", "amount": {"value": 1000, "currency": "EUR"}},
            {"sellerId": "SELLER-2", "amount": {"value": 2000, "currency": "EUR"}},
        ],
    }


async def _create(stack: Stack, token: str, payments: int, concurrency: int) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(payments):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=stack.api_url, limits=limits, timeout=30) as client:

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                response = await client.post("/payments", json=_body(i), headers={"Authorization": f"Bearer {token}"})
                if response.status_code != 202:
                    raise RuntimeError(f"create failed: {response.status_code} {response.text}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _run(stack: Stack, payments: int, timeout: float) -> None:
    token = client_token(stack.issuer_url)
    orders = payments * 2
    conn = await asyncpg.connect(plain_dsn(stack.database_url))
    try:
        started = time.perf_counter()
        await _create(stack, token, payments, concurrency=32)
        created = time.perf_counter() - started
        marks: dict[int, float] = {}
        while True:
            done = await conn.fetchval("SELECT count(*) FROM payment_orders WHERE status = ANY($1::text[])", FINAL)
            elapsed = time.perf_counter() - started
            for pct in (50, 95, 100):
                if pct not in marks and done >= orders * pct / 100:
                    marks[pct] = elapsed
            if done >= orders or elapsed > timeout:
                break
            await asyncio.sleep(0.05)
        by_status = dict(
            await conn.fetch("SELECT status, count(*) FROM payment_orders GROUP BY status ORDER BY status")
        )
    finally:
        await conn.close()
    total = marks.get(100)
    print(f"  created {payments} payments ({orders} orders) in {created:.1f} s")
    if total is None:
        print(f"  NOT all settled within {timeout:.0f} s: {by_status}")
        return
    print(f"  settled: 50% {marks[50]:.1f} s, 95% {marks[95]:.1f} s, 100% {total:.1f} s")
    print(f"  orders settled/s (whole run): {orders / total:.0f}; to 95 %: {orders * 0.95 / marks[95]:.0f}")
    print(f"  final states: {by_status}")
    summary = httpx.get(f"{stack.psp_url}/admin/summary").json()
    print(
        f"  PSP: {summary['calls']} calls, {summary['orders_charged']} orders charged, "
        f"{summary['orders_charged_more_than_once']} charged more than once"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--payments", type=int, default=2000)
    parser.add_argument("--scenarios", default="BEST_PSP_EVER,NORMAL")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    for scenario in args.scenarios.split(","):
        print(f"{scenario}:")
        with api_stack(workers=1, pipeline=scenario) as stack:
            asyncio.run(_run(stack, args.payments, args.timeout))


if __name__ == "__main__":
    main()
