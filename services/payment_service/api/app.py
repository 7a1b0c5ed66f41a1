"""The FastAPI application of payment-service (built around an already-wired container)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import ORJSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel

from services.payment_service.api.admission import AdmissionMiddleware
from services.payment_service.api.ledger_routes import router as ledger_router
from services.payment_service.api.middleware import RequestContextMiddleware
from services.payment_service.api.problems import (
    PROBLEM_JSON,
    Problem,
    install_problem_handlers,
    problem_responses,
)
from services.payment_service.api.refund_routes import router as refund_router
from services.payment_service.api.routes import router
from services.payment_service.api.schemas import CreatePaymentRequest, RefundRequest
from services.payment_service.bootstrap import Container


def create_app(container: Container) -> FastAPI:
    app = FastAPI(
        title="payment-service",
        version="0.1.0",
        description="Accepts multi-seller payments; charging happens asynchronously in payment-consumers.",
        default_response_class=ORJSONResponse,
        # Our own metrics, JSON logs and trace ids cover this; FastAPI's OpenTelemetry hooks cost CPU per request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.container = container
    app.state.jwt_verifier = container.verifier
    app.state.auth_settings = container.settings.auth
    install_problem_handlers(app, retry_after_seconds=container.settings.api.retry_after_seconds)
    app.include_router(router)
    app.include_router(ledger_router)
    app.include_router(refund_router)
    # Added first, so it runs inside the request context (trace id, latency metric) and before routing.
    app.add_middleware(
        AdmissionMiddleware,
        admission=container.admission,
        pipeline=container.pipeline,
        route=_route("POST", "/payments"),
        method="POST",
        retry_after_seconds=container.settings.api.retry_after_seconds,
    )
    app.add_middleware(RequestContextMiddleware, access_log=False)
    _complete_document(app)
    return app


def _route(method: str, path: str) -> APIRoute:
    return next(r for r in router.routes if isinstance(r, APIRoute) and r.path == path and method in (r.methods or ()))


# Bodies the routes validate themselves from the raw bytes (FastAPI does not see them), and the problem document.
_RAW_BODIES: tuple[type[BaseModel], ...] = (CreatePaymentRequest, RefundRequest, Problem)


def _complete_document(app: FastAPI) -> None:
    """POST /payments and POST .../refunds validate their raw bodies themselves (routes._parse_body,
    refund_routes._parse_body): publish those schemas, the problem document every 4xx and 5xx answers with, and
    the bearer scheme in OpenAPI."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            components = document.setdefault("components", {}).setdefault("schemas", {})
            for model in _RAW_BODIES:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(schema.pop("$defs", {}))
                components[model.__name__] = schema
            # FastAPI's own 422 shape is never sent: the validation handler answers problem+json.
            components.pop("HTTPValidationError", None)
            components.pop("ValidationError", None)
            for operations in document["paths"].values():
                for operation in operations.values():
                    invalid = operation["responses"].get("422")
                    if invalid is not None and PROBLEM_JSON not in invalid.get("content", {}):
                        invalid.update(problem_responses({422: "A parameter is invalid (listed in `errors`)"})[422])
            document["components"].setdefault("securitySchemes", {})["bearerAuth"] = {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "A Keycloak access token; POST needs realm role payment:write, GET /payments "
                "payment:read, "
                "GET /sellers/{sellerId}/... finance:read or the seller's own client (claim seller_id)",
            }
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
