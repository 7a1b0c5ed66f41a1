"""schemathesis against the served OpenAPI document: every operation, data that fits its schema and data that
does not, over real HTTP to an API on real Postgres, Redis and Keycloak tokens.

Each response must be documented (status, content type, body schema), never a 5xx; data outside the schema must
be refused with a 4xx; a refusal writes nothing. Bounded: a fixed number of derandomized examples per operation and
mode, so the run is the same every time and fits `make test`.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import requests
import schemathesis
from hypothesis import given
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.transport.prepare import get_exclude_headers

from tests.fixtures.payment_api import RunningApi
from tests.integration.api.helpers import bearer, bounded, fetch, row_counts, valid_payment
from tests.integration.api.test_refunds import charged_payment

EXAMPLES_PER_OPERATION_AND_MODE = 40
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# The realm client whose token each operation is called with (its role passes the operation's check).
CALLER = {
    "POST /payments": "order-service",
    "GET /payments/{payment_id}": "order-service",
    "POST /payments/{payment_id}/orders/{payment_order_id}/refunds": "order-service",
    "GET /payments/{payment_id}/orders/{payment_order_id}/refunds/{refund_id}": "order-service",
}
SELLERS_CALLER = "finance-reader"


@dataclass
class FuzzReport:
    cases: Counter[str] = field(default_factory=Counter)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    created: int = 0
    unsatisfiable: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def _fuzz(base_url: str, document: dict[str, Any], tokens: dict[str, str], report: FuzzReport) -> None:
    """Blocking (requests): run in a thread, while the API serves from the test's event loop."""
    schema = schemathesis.openapi.from_dict(document)
    session = requests.Session()
    for result in schema.get_all_operations():
        operation = result.ok()
        headers = bearer(tokens[CALLER.get(operation.label, SELLERS_CALLER)])
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            started = time.monotonic()
            try:
                _examples(operation, mode, base_url=base_url, session=session, headers=headers, report=report)()
            except Unsatisfiable:
                report.unsatisfiable.append(f"{operation.label} {mode.value}")
            report.seconds[f"{operation.label} {mode.value}"] = round(time.monotonic() - started, 1)


def _examples(
    operation: APIOperation,
    mode: GenerationMode,
    *,
    base_url: str,
    session: requests.Session,
    headers: dict[str, str],
    report: FuzzReport,
    path_parameters: dict[str, str] | None = None,
) -> Callable[[], None]:
    """`path_parameters` point every case at those ids (e.g. an order that exists) instead of generated ones."""
    key = f"{operation.label} {mode.value}"
    checks = [*CHECKS, negative_data_rejection] if mode is GenerationMode.NEGATIVE else CHECKS

    @bounded(EXAMPLES_PER_OPERATION_AND_MODE)
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        if path_parameters is not None:
            case.path_parameters = dict(path_parameters)
        report.cases[key] += 1
        # A case that tests a missing Authorization header is sent without ours.
        sent = {} if "Authorization" in get_exclude_headers(case) else headers
        response = case.call(base_url=base_url, session=session, headers=sent, timeout=10)
        report.statuses[(key, response.status_code)] += 1
        if response.status_code == 202 and "idempotent-replayed" not in response.headers:
            report.created += 1
        try:
            case.validate_response(response, checks=checks)
        except (AssertionError, FailureGroup) as failure:
            report.failures.append(f"{key}: {str(failure)[:600]}")

    return run  # type: ignore[no-any-return]


async def test_every_operation_answers_inside_its_document_and_refuses_bad_data_with_a_4xx(
    payment_api: RunningApi, tokens: dict[str, str], database_url: str
) -> None:
    async with payment_api.client() as client:
        document = (await client.get("/openapi.json")).json()
    before = await row_counts(database_url)
    report = FuzzReport()
    await asyncio.to_thread(_fuzz, payment_api.base_url, document, tokens, report)
    after = await row_counts(database_url)

    print(f"\nfuzz: {report}")  # noqa: T201
    operations = {key.rsplit(" ", 1)[0] for key in report.cases}
    assert operations == {
        "POST /payments",
        "GET /payments/{payment_id}",
        "POST /payments/{payment_id}/orders/{payment_order_id}/refunds",
        "GET /payments/{payment_id}/orders/{payment_order_id}/refunds/{refund_id}",
        "GET /sellers/{seller_id}/balance",
        "GET /sellers/{seller_id}/entries",
    }
    assert all(n >= EXAMPLES_PER_OPERATION_AND_MODE // 2 for n in report.cases.values()), report.cases
    assert not report.failures, "\n".join(report.failures)
    # Free-text path parameters and no body: with the token supplied, no data outside the schema exists.
    assert report.unsatisfiable == [
        "GET /payments/{payment_id} negative",
        "GET /payments/{payment_id}/orders/{payment_order_id}/refunds/{refund_id} negative",
    ]
    # A body the generator cannot build (a dangling $ref) is sent as none: every case would end at the 415.
    for operation in ("POST /payments", "POST /payments/{payment_id}/orders/{payment_order_id}/refunds"):
        positive = {status for (key, status), n in report.statuses.items() if key == f"{operation} positive" and n}
        assert positive - {415}, (operation, positive)
    # Only the 202s wrote: one payment each; every refusal wrote nothing.
    assert after["payments"] - before["payments"] == report.created, (report.created, before, after)
    print(f"\nfuzz cases: {dict(report.cases)}\nstatuses: {dict(report.statuses)}")  # noqa: T201


def _references(node: object) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in _references(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _references(value)]
    return []


async def test_every_reference_in_the_document_resolves(payment_api: RunningApi) -> None:
    """A client generator (or schemathesis) cannot build a body whose schema is missing: the refund body's was."""
    async with httpx.AsyncClient(base_url=payment_api.base_url) as client:
        document = (await client.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    references = _references(document)
    assert "#/components/schemas/RefundRequest" in references
    dangling = sorted({ref for ref in references if ref.removeprefix("#/components/schemas/") not in schemas})
    assert dangling == []


async def test_the_document_describes_every_answer_as_problem_json(payment_api: RunningApi) -> None:
    async with httpx.AsyncClient(base_url=payment_api.base_url) as client:
        document = (await client.get("/openapi.json")).json()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                content = response.get("content", {})
                expected = "application/problem+json" if status.startswith(("4", "5")) else "application/json"
                assert expected in content, (method, path, status, response)


async def test_a_created_payment_and_its_reads_match_the_document(
    payment_api: RunningApi, tokens: dict[str, str]
) -> None:
    """The fuzzing above rarely creates a payment and never reads one: the success documents, checked here."""
    async with payment_api.client() as client:
        document = (await client.get("/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(document)

    def check() -> None:
        session = requests.Session()
        writer, finance = bearer(tokens["order-service"]), bearer(tokens["finance-reader"])
        create = schema["/payments"]["POST"].Case(body=valid_payment(), media_type="application/json")
        created = create.call(base_url=payment_api.base_url, session=session, headers=writer)
        assert created.status_code == 202
        create.validate_response(created, checks=CHECKS)
        payment_id = created.json()["paymentId"]
        read = schema["/payments/{payment_id}"]["GET"].Case(path_parameters={"payment_id": payment_id})
        got = read.call(base_url=payment_api.base_url, session=session, headers=writer)
        assert got.status_code == 200
        read.validate_response(got, checks=CHECKS)
        for path in ("/sellers/{seller_id}/balance", "/sellers/{seller_id}/entries"):
            case = schema[path]["GET"].Case(path_parameters={"seller_id": "SELLER-111"})
            answer = case.call(base_url=payment_api.base_url, session=session, headers=finance)
            assert answer.status_code == 200
            case.validate_response(answer, checks=CHECKS)

    await asyncio.to_thread(check)


REFUND = "/payments/{payment_id}/orders/{payment_order_id}/refunds"


async def test_refund_bodies_aimed_at_a_charged_order_answer_inside_the_document_and_write_only_when_accepted(
    payment_api: RunningApi, tokens: dict[str, str], database_url: str
) -> None:
    """The fuzz above names orders that do not exist (404): here every positive case reaches a charged order, so
    the amount, currency and Idempotency-Key rules, the refund limit and the 202 are what answer. (Negative cases
    need no order: they are refused before it is looked up, as the fuzz above shows.)"""
    writer = tokens["order-service"]
    async with payment_api.client() as client:
        document = (await client.get("/openapi.json")).json()
        payment_id, order_id, _charged = await charged_payment(client, writer, database_url)
    (before,) = await fetch(database_url, "SELECT count(*) AS n FROM refunds")
    report = FuzzReport()
    operation = schemathesis.openapi.from_dict(document)[REFUND]["POST"]
    run = _examples(
        operation,
        GenerationMode.POSITIVE,
        base_url=payment_api.base_url,
        session=requests.Session(),
        headers=bearer(writer),
        report=report,
        path_parameters={"payment_id": payment_id, "payment_order_id": order_id},
    )
    await asyncio.to_thread(run)
    (after,) = await fetch(database_url, "SELECT count(*) AS n FROM refunds")

    print(f"\nrefund fuzz on a charged order: {dict(report.cases)}\nstatuses: {dict(report.statuses)}")  # noqa: T201
    assert not report.failures, "\n".join(report.failures)
    assert all(n >= EXAMPLES_PER_OPERATION_AND_MODE // 2 for n in report.cases.values()), report.cases
    statuses = {status for (_key, status), n in report.statuses.items() if n}
    assert statuses - {404, 415}, statuses  # the cases reached the order: its rules answered, not its absence
    # Only the accepted refunds wrote, one row each; every refusal wrote nothing.
    assert after["n"] - before["n"] == report.created, (report.created, before, after)
