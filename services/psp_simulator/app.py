"""The simulated PSP's HTTP face (dev and test only).

PSP API:
  POST /v1/charges               header Idempotency-Key (required), body {merchantReference, amount, currency,
                                 sellerId}; 200 with the charge; 400 bad request; 422 key reused with another body
  GET  /v1/charges/{key}         200 with the charge's current status; 404 (code "charge_not_found") if unseen
  POST /v1/refunds               header Idempotency-Key (required), body {merchantReference, refundReference,
                                 amount, currency, sellerId}: a refund, answered like a charge (same scenarios)
                                 Either may answer 503 (code "service_unavailable") after executing, with the
                                 profile's chargedThenUnavailablePercent; the key then replays it (200)
  GET  /v1/refunds/{key}         200 with the refund's current status; 404 (code "refund_not_found") if unseen
Admin:
  GET/PUT /admin/scenario        the active profile; PUT {"scenario": "PEAK", <profile field overrides>...}
  POST /admin/force              {"merchantReference", "outcome", "delayMs", "times", "httpStatus"}: script the
                                 next charges of one reference
  GET  /admin/summary            ledger counters, including orders_charged_more_than_once and the refund book
                                 (orders_refunded_more_than_once, orders_refunded_beyond_charge)
  POST /admin/reset              a fresh ledger
Errors are RFC 9457 problem documents carrying a stable `code`.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Body, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError
from pydantic.alias_generators import to_camel

from services.psp_simulator.ledger import Charge, ChargeRequest
from services.psp_simulator.profiles import Outcome, ScenarioProfile, UnknownScenario, build_profile
from services.psp_simulator.simulator import (
    ChargedThenUnavailable,
    Clock,
    ForcedCall,
    ForcedHttpError,
    IdempotencyKeyMismatch,
    PspSimulator,
    utc_now,
)

PROBLEM_JSON = "application/problem+json"
MAX_KEY_LENGTH = 255


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class ChargeBody(_Wire):
    merchant_reference: str = Field(min_length=1, max_length=255)
    amount: StrictInt = Field(gt=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    seller_id: str = Field(min_length=1, max_length=255)


class RefundBody(ChargeBody):
    refund_reference: str = Field(min_length=1, max_length=255)


class ForceBody(_Wire):
    merchant_reference: str = Field(min_length=1)
    outcome: Outcome = Outcome.SUCCESSFUL_FINAL
    delay_ms: float = Field(default=0, ge=0)
    times: int = Field(default=1, ge=1)
    http_status: int | None = Field(default=None, ge=400, le=599)


def problem(status: int, code: str, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "code": code, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def create_app(profile: ScenarioProfile, rng: random.Random, clock: Clock = utc_now) -> FastAPI:
    simulator = PspSimulator(profile, rng, clock)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await simulator.aclose()

    app = FastAPI(title="PSP simulator (dev and test only)", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.simulator = simulator

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        return problem(400, "invalid_request", "Bad Request", "the request is malformed", errors=errors)

    async def execute(
        operation: Callable[[str, ChargeRequest], Awaitable[tuple[Charge, bool]]],
        request: ChargeRequest,
        idempotency_key: str | None,
    ) -> Response:
        key = (idempotency_key or "").strip()
        if not key or len(key) > MAX_KEY_LENGTH:
            return problem(
                400,
                "idempotency_key_required",
                "Bad Request",
                f"an Idempotency-Key header of 1 to {MAX_KEY_LENGTH} characters is required",
            )
        try:
            charge, replayed = await operation(key, request)
        except IdempotencyKeyMismatch:
            return problem(
                422,
                "idempotency_key_mismatch",
                "Unprocessable Content",
                "this Idempotency-Key was first used with a different request body",
            )
        except ChargedThenUnavailable:
            return problem(
                503,
                "service_unavailable",
                "Service Unavailable",
                "the PSP is temporarily unavailable (chargedThenUnavailablePercent: it was executed all the same)",
            )
        except ForcedHttpError as forced:
            return problem(forced.status, "forced_error", "Forced Error", "scripted by POST /admin/force")
        headers = {"Idempotent-Replayed": "true"} if replayed else {}
        return JSONResponse(charge.view(), headers=headers)

    @app.post("/v1/charges")
    async def create_charge(body: ChargeBody, idempotency_key: Annotated[str | None, Header()] = None) -> Response:
        request = ChargeRequest(body.merchant_reference, body.amount, body.currency, body.seller_id)
        return await execute(simulator.charge, request, idempotency_key)

    @app.post("/v1/refunds")
    async def create_refund(body: RefundBody, idempotency_key: Annotated[str | None, Header()] = None) -> Response:
        request = ChargeRequest(
            body.merchant_reference, body.amount, body.currency, body.seller_id, body.refund_reference
        )
        return await execute(simulator.refund, request, idempotency_key)

    @app.get("/v1/refunds/{idempotency_key:path}")
    async def get_refund(idempotency_key: str) -> Response:
        refund = simulator.refund_status(idempotency_key)
        if refund is None:
            return problem(404, "refund_not_found", "Not Found", "no refund was ever made with this key")
        return JSONResponse(refund.view())

    @app.get("/v1/charges/{idempotency_key:path}")
    async def get_charge(idempotency_key: str) -> Response:
        charge = simulator.status(idempotency_key)
        if charge is None:
            return problem(404, "charge_not_found", "Not Found", "no charge was ever made with this key")
        return JSONResponse(charge.view())

    @app.get("/admin/scenario")
    async def get_scenario() -> dict[str, Any]:
        return simulator.profile.model_dump(by_alias=True)

    @app.put("/admin/scenario")
    async def put_scenario(body: Annotated[dict[str, Any], Body()]) -> Response:
        overrides = dict(body)
        scenario = str(overrides.pop("scenario", "NORMAL"))
        try:
            new_profile = build_profile(scenario, overrides)
        except UnknownScenario as exc:
            return problem(400, "unknown_scenario", "Bad Request", str(exc))
        except ValidationError as exc:
            errors = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
            return problem(400, "invalid_profile", "Bad Request", "the profile is invalid", errors=errors)
        simulator.set_profile(new_profile)
        return JSONResponse(new_profile.model_dump(by_alias=True))

    @app.post("/admin/force", status_code=204)
    async def force(body: ForceBody) -> None:
        simulator.force(body.merchant_reference, ForcedCall(body.outcome, body.delay_ms, body.times, body.http_status))

    @app.get("/admin/summary")
    async def summary() -> dict[str, Any]:
        return simulator.summary()

    @app.get("/admin/charged")
    async def charged() -> dict[str, Any]:
        """Every merchant reference (payment order) charged successfully, with its first successful charge."""
        return {"charged": simulator.charged()}

    @app.post("/admin/reset", status_code=204)
    async def reset() -> None:
        simulator.reset()

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "UP"}

    return app
