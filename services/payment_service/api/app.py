"""The FastAPI application of payment-service (built around an already-wired container)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import ORJSONResponse

from services.payment_service.api.middleware import RequestContextMiddleware
from services.payment_service.api.problems import install_problem_handlers
from services.payment_service.api.routes import router
from services.payment_service.bootstrap import Container


def create_app(container: Container) -> FastAPI:
    app = FastAPI(
        title="payment-service",
        version="0.1.0",
        description="Accepts multi-seller payments; charging happens asynchronously in payment-consumers.",
        default_response_class=ORJSONResponse,
    )
    app.state.container = container
    app.state.jwt_verifier = container.verifier
    app.state.auth_settings = container.settings.auth
    install_problem_handlers(app, retry_after_seconds=container.settings.api.retry_after_seconds)
    app.include_router(router)
    app.add_middleware(RequestContextMiddleware, access_log=False)
    return app
