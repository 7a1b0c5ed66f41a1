"""GET /sellers/{sellerId}/balance and /entries against real Postgres and real Keycloak tokens: the finance role
reads every seller, a seller's own client (claim seller_id) only that seller, everyone else gets a 403 problem."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from payment_domain.ids import PaymentId, PaymentOrderId
from payment_domain.ledger import CommissionSchedule, charge_entry
from payment_domain.money import Amount, Currency
from payment_domain.payment import PaymentOrder
from payment_domain.status import PaymentOrderStatus
from payment_infrastructure.postgres.ledger_entries import insert_entries
from tests.fixtures.database import migrated_database
from tests.fixtures.payment_api import ApiFactory, RunningApi
from tests.integration.api.helpers import bearer, dsn

COMMISSION = CommissionSchedule(default_bps=1_000)
AT = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
# seller-1: three EUR charges and one USD; seller-2: one EUR charge
CHARGES = [(101, "seller-1", 2_000, "EUR"), (102, "seller-2", 5_000, "EUR"), (103, "seller-1", 999, "EUR")]
CHARGES += [(104, "seller-1", 1_005, "USD"), (105, "seller-1", 10, "EUR")]


def order(order_id: int, seller: str, amount: int, currency: str) -> PaymentOrder:
    return PaymentOrder(
        payment_order_id=PaymentOrderId(order_id),
        payment_id=PaymentId(100),
        seller_id=seller,
        amount=Amount(amount, Currency(currency)),
        status=PaymentOrderStatus.SUCCESSFUL_FINAL,
        created_at=AT,
        updated_at=AT,
    )


@pytest.fixture(scope="module")
async def ledger_database() -> AsyncIterator[str]:
    """A database of this module's own, holding the charges above (the ledger cannot be cleaned up after)."""
    async with migrated_database() as url:
        conn = await asyncpg.connect(dsn(url))
        try:
            for charge in CHARGES:  # one transaction each, so the posting ids follow this order
                async with conn.transaction():
                    await insert_entries(conn, [charge_entry(order(*charge), COMMISSION)], AT)
        finally:
            await conn.close()
        yield url


@pytest.fixture
async def api(api_factory: ApiFactory, ledger_database: str) -> RunningApi:
    return await api_factory(database_url=ledger_database)


async def test_the_finance_role_reads_any_sellers_balance_per_currency(api: RunningApi, tokens: dict[str, str]) -> None:
    async with api.client() as client:
        one = await client.get("/sellers/seller-1/balance", headers=bearer(tokens["finance-reader"]))
        two = await client.get("/sellers/seller-2/balance", headers=bearer(tokens["finance-reader"]))
    assert one.status_code == 200, one.text
    # EUR: 2000 - 200, 999 - 99, 10 - 1 ; USD: 1005 - 100 (commission rounds down)
    assert one.json() == {
        "sellerId": "seller-1",
        "balances": [
            {"currency": "EUR", "balance": 2_709, "credited": 2_709, "debited": 0, "postings": 3},
            {"currency": "USD", "balance": 905, "credited": 905, "debited": 0, "postings": 1},
        ],
    }
    assert two.json()["balances"] == [
        {"currency": "EUR", "balance": 4_500, "credited": 4_500, "debited": 0, "postings": 1}
    ]


async def test_a_seller_never_credited_has_no_balances(api: RunningApi, tokens: dict[str, str]) -> None:
    async with api.client() as client:
        response = await client.get("/sellers/nobody/balance", headers=bearer(tokens["finance-reader"]))
    assert response.status_code == 200
    assert response.json() == {"sellerId": "nobody", "balances": []}


async def test_a_sellers_own_client_reads_its_balance_and_statement(api: RunningApi, tokens: dict[str, str]) -> None:
    own = bearer(tokens["seller-1-portal"])
    async with api.client() as client:
        balance = await client.get("/sellers/seller-1/balance", headers=own)
        entries = await client.get("/sellers/seller-1/entries", headers=own)
    assert balance.status_code == 200 and entries.status_code == 200, (balance.text, entries.text)
    assert [b["balance"] for b in balance.json()["balances"]] == [2_709, 905]
    assert [(e["paymentOrderId"], e["amount"]) for e in entries.json()["entries"]] == [
        ("paymentorder-105", 9),
        ("paymentorder-104", 905),
        ("paymentorder-103", 900),
        ("paymentorder-101", 1_800),
    ]


@pytest.mark.parametrize("path", ["/sellers/seller-2/balance", "/sellers/seller-2/entries"])
async def test_a_sellers_client_cannot_read_another_seller(api: RunningApi, tokens: dict[str, str], path: str) -> None:
    async with api.client() as client:
        response = await client.get(path, headers=bearer(tokens["seller-1-portal"]))
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == "this operation needs the role finance:read"


@pytest.mark.parametrize("client_id", ["order-service", "payment-reader", "no-role-client"])
@pytest.mark.parametrize("path", ["/sellers/seller-1/balance", "/sellers/seller-1/entries"])
async def test_every_other_client_gets_403(api: RunningApi, tokens: dict[str, str], client_id: str, path: str) -> None:
    async with api.client() as client:
        response = await client.get(path, headers=bearer(tokens[client_id]))
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"


async def test_without_a_token_it_is_401(api: RunningApi) -> None:
    async with api.client() as client:
        response = await client.get("/sellers/seller-1/balance")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


async def test_the_statement_pages_newest_first_by_cursor(api: RunningApi, tokens: dict[str, str]) -> None:
    finance = bearer(tokens["finance-reader"])
    async with api.client() as client:
        first = (await client.get("/sellers/seller-1/entries", params={"limit": 3}, headers=finance)).json()
        second = (
            await client.get(
                "/sellers/seller-1/entries", params={"limit": 3, "cursor": first["nextCursor"]}, headers=finance
            )
        ).json()
    assert [e["paymentOrderId"] for e in first["entries"]] == [
        "paymentorder-105",
        "paymentorder-104",
        "paymentorder-103",
    ]
    assert first["nextCursor"] is not None
    assert [e["paymentOrderId"] for e in second["entries"]] == ["paymentorder-101"]
    assert second["nextCursor"] is None
    line = second["entries"][0]
    assert (line["kind"], line["side"], line["currency"], line["amount"]) == ("CHARGE", "CREDIT", "EUR", 1_800)
    assert datetime.fromisoformat(line["postedAt"]) == AT


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 201}, {"cursor": "abc"}, {"cursor": "-1"}])
async def test_a_bad_page_request_is_a_422_problem(
    api: RunningApi, tokens: dict[str, str], params: dict[str, object]
) -> None:
    async with api.client() as client:
        response = await client.get(
            "/sellers/seller-1/entries", params=params, headers=bearer(tokens["finance-reader"])
        )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


async def test_openapi_documents_the_balance_and_the_paged_statement(api: RunningApi) -> None:
    async with api.client() as client:
        document = (await client.get("/openapi.json")).json()
    statement = document["paths"]["/sellers/{seller_id}/entries"]["get"]
    assert {p["name"] for p in statement["parameters"]} == {"seller_id", "limit", "cursor"}
    assert "403" in statement["responses"]
    assert "/sellers/{seller_id}/balance" in document["paths"]
