"""log_context: the cheaper bound_contextvars the consumers and the API bind their ids with."""

from __future__ import annotations

import asyncio

import structlog

from payment_infrastructure.observability.logging import log_context


def test_binds_for_the_block_and_restores_what_was_there() -> None:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(consumer="c1", event_id="outer")

    with log_context(event_id="inner", payment_order_id="po-1"):
        assert structlog.contextvars.get_contextvars() == {
            "consumer": "c1",
            "event_id": "inner",
            "payment_order_id": "po-1",
        }
        with log_context(payment_order_id="po-2"):
            assert structlog.contextvars.get_contextvars()["payment_order_id"] == "po-2"
        assert structlog.contextvars.get_contextvars()["payment_order_id"] == "po-1"

    assert structlog.contextvars.get_contextvars() == {"consumer": "c1", "event_id": "outer"}
    structlog.contextvars.clear_contextvars()


def test_restores_when_the_block_raises() -> None:
    structlog.contextvars.clear_contextvars()
    try:
        with log_context(event_id="e-1"):
            raise RuntimeError("handler failed")
    except RuntimeError:
        pass
    assert structlog.contextvars.get_contextvars() == {}


async def test_records_handled_at_once_keep_their_own_ids() -> None:
    structlog.contextvars.clear_contextvars()
    seen: dict[str, object] = {}
    both_bound = asyncio.Barrier(2)

    async def handle(event_id: str) -> None:
        with log_context(event_id=event_id):
            await both_bound.wait()
            seen[event_id] = structlog.contextvars.get_contextvars()["event_id"]

    await asyncio.gather(handle("a"), handle("b"))

    assert seen == {"a": "a", "b": "b"}
    assert structlog.contextvars.get_contextvars() == {}
