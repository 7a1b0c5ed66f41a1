"""The simulated PSP's behaviour, independent of HTTP: idempotent charges and refunds, status queries, admin knobs.

A charge executes in its own task, never in the request handler, so it completes even when the caller
stops waiting or disconnects: exactly the unknown outcome a real PSP produces after a client timeout.
Everything runs on one event loop, so "look up the key, then insert it" has no await in between and two
requests with one key can never both execute.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from services.psp_simulator.ledger import DECIDED, Charge, ChargeRequest, ChargeStatus, Ledger
from services.psp_simulator.profiles import Outcome, ScenarioProfile
from services.psp_simulator.sampling import ChargePlan, plan_charge, plan_pending_resolution

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class IdempotencyKeyMismatch(Exception):
    """The key was first used with a different request body."""


class ChargedThenUnavailable(Exception):
    """The charge (or refund) was executed and recorded, but the caller is to hear a 503."""

    def __init__(self, charge: Charge) -> None:
        super().__init__(f"{charge.idempotency_key} executed, answered 503")
        self.charge = charge


class ForcedHttpError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"forced HTTP {status}")
        self.status = status


@dataclass
class ForcedCall:
    """Overrides the sampled plan for the next `times` new charges of one merchant reference."""

    outcome: Outcome
    delay_ms: float
    times: int
    http_status: int | None = None  # answer this status instead, without executing (nothing recorded)


class PspSimulator:
    def __init__(self, profile: ScenarioProfile, rng: random.Random, clock: Clock = utc_now) -> None:
        self.profile = profile
        self._rng = rng
        self._clock = clock
        self.ledger = Ledger()
        self._forced: dict[str, ForcedCall] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def charge(self, key: str, request: ChargeRequest) -> tuple[Charge, bool]:
        """The charge for `key`, executing it if the key is new; the bool says whether it was a replay."""
        ledger = self.ledger
        ledger.calls += 1
        return await self._once(ledger, ledger.charges, key, request)

    async def refund(self, key: str, request: ChargeRequest) -> tuple[Charge, bool]:
        """The refund for `key` (same scenarios as a charge: slow, declined, failed, pending), executed once."""
        ledger = self.ledger
        ledger.refund_calls += 1
        return await self._once(ledger, ledger.refunds, key, request)

    def refund_status(self, key: str) -> Charge | None:
        self.ledger.refund_status_queries += 1
        return self.ledger.refunds.get(key)

    async def _once(
        self, ledger: Ledger, book: dict[str, Charge], key: str, request: ChargeRequest
    ) -> tuple[Charge, bool]:
        existing = book.get(key)
        if existing is not None:
            if existing.request != request:
                ledger.idempotency_mismatches += 1
                raise IdempotencyKeyMismatch(key)
            ledger.replays += 1
            await existing.decided.wait()
            return existing, True
        plan = self._plan(request.refund_reference or request.merchant_reference)
        unavailable = self._answers_unavailable()
        now = self._clock()
        charge = Charge(
            id=f"{'re' if request.refund_reference else 'ch'}_{self._rng.getrandbits(64):016x}",
            idempotency_key=key,
            request=request,
            created_at=now,
            updated_at=now,
        )
        book[key] = charge
        if request.refund_reference:
            ledger.refund_executions += 1
        else:
            ledger.executions += 1
        if plan.timed_out:
            ledger.slow_calls += 1
        self._spawn(self._execute(ledger, charge, plan))
        await charge.decided.wait()
        if unavailable:
            ledger.answered_unavailable_after_execution += 1
            raise ChargedThenUnavailable(charge)
        return charge, False

    def status(self, key: str) -> Charge | None:
        self.ledger.status_queries += 1
        return self.ledger.charges.get(key)

    def force(self, merchant_reference: str, call: ForcedCall) -> None:
        self._forced[merchant_reference] = call

    def set_profile(self, profile: ScenarioProfile) -> None:
        self.profile = profile
        log.info("psp_scenario_changed", scenario=profile.name)

    def reset(self) -> None:
        """A fresh ledger; charges still executing finish into the old one, unseen."""
        self.ledger = Ledger()
        self._forced.clear()
        log.info("psp_ledger_reset")

    def summary(self) -> dict[str, Any]:
        return self.ledger.summary(self.profile.name)

    def charged(self) -> dict[str, dict[str, Any]]:
        return self.ledger.charged()

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _plan(self, merchant_reference: str) -> ChargePlan:
        forced = self._forced.get(merchant_reference)
        if forced is None:
            return plan_charge(self.profile, self._rng)
        forced.times -= 1
        if forced.times <= 0:
            del self._forced[merchant_reference]
        if forced.http_status is not None:
            self.ledger.forced_http_errors += 1
            raise ForcedHttpError(forced.http_status)
        return ChargePlan(delay_ms=forced.delay_ms, bucket="forced", outcome=forced.outcome)

    def _answers_unavailable(self) -> bool:
        percent = self.profile.charged_then_unavailable_percent
        return percent > 0 and self._rng.uniform(0, 100) < percent

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _execute(self, ledger: Ledger, charge: Charge, plan: ChargePlan) -> None:
        await asyncio.sleep(plan.delay_ms / 1000)
        ledger.by_outcome[plan.outcome.value] += 1
        self._settle(ledger, charge, ChargeStatus(plan.outcome.value))
        charge.decided.set()
        charge.decided = DECIDED  # waiters hold the charge's own event; later callers need none
        if charge.status is ChargeStatus.PENDING:
            resolution = plan_pending_resolution(self.profile, self._rng)
            await asyncio.sleep(resolution.delay_ms / 1000)
            ledger.pending_resolved += 1
            self._settle(ledger, charge, ChargeStatus(resolution.outcome.value))

    def _settle(self, ledger: Ledger, charge: Charge, status: ChargeStatus) -> None:
        charge.status = status
        charge.updated_at = self._clock()
        if status is ChargeStatus.SUCCESSFUL_FINAL:
            if charge.request.refund_reference:
                ledger.record_refund(charge)
            else:
                ledger.record_success(charge)
