"""Use case: apply a PSP answer to its payment order, exactly once.

One database transaction records the event in the inbox, moves the order (guarded by the transition table and
the attempt), writes the succeeded/failed event to the outbox, schedules a status check when the outcome is
unknown, and rolls the payment up once every order is final. A retry goes to the Redis queue only after that
commit (no network I/O inside the transaction); a redelivered answer finds the inbox entry and makes sure the
retry is queued, so a crash between commit and queueing loses nothing (queueing is idempotent per attempt).
`apply_many` does the same for results of distinct orders in one transaction (most of a result's cost is per
statement); each order keeps its own guard, and a batch that cannot apply whole falls back to one result at a time.
An order that becomes SUCCESSFUL_FINAL posts its charge entry to the ledger in the same transaction (docs/ledger.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from payment_application.errors import DependencyUnavailable
from payment_application.ports.payment_orders import LockedOrder, ReconciliationEntry, ResultStore, ResultTransaction
from payment_application.ports.retry_queue import RetryQueue
from payment_domain.backoff import equal_jitter_backoff_ms
from payment_domain.events import (
    EventEnvelope,
    EventType,
    PspResultUpdated,
    payment_order_settled,
    psp_call_requested,
)
from payment_domain.ledger import CommissionSchedule, JournalEntry, charge_entry, posts_charge
from payment_domain.payment import PaymentOrder
from payment_domain.psp_result import Action, Decision, Policy, ResultSource, decide
from payment_domain.status import RETRYABLE, PaymentOrderStatus

log = structlog.get_logger(__name__)


class UnknownPaymentOrder(LookupError):
    """A result about an order this database does not hold: it can never apply (dead-letter it)."""


@dataclass(frozen=True, slots=True)
class ResultPolicy:
    max_retries: int = 5
    retry_base_ms: int = 2_000
    retry_max_ms: int = 60_000
    status_check_delays_seconds: tuple[float, ...] = (5, 30, 120, 600, 3_600)

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if not self.status_check_delays_seconds or any(d <= 0 for d in self.status_check_delays_seconds):
            raise ValueError("status_check_delays_seconds needs at least one positive delay")

    @property
    def domain(self) -> Policy:
        return Policy(max_retries=self.max_retries, status_checks=len(self.status_check_delays_seconds))


@dataclass(frozen=True, slots=True)
class Applied:
    decision: Decision | None
    duplicate: bool
    order: PaymentOrder


def _ids(result: EventEnvelope[PspResultUpdated]) -> dict[str, str]:
    """The answer's own ids, on every line about it: answers are applied in batches, apart from the log context the
    consumer bound for the record each came in (docs/operations.md, "Logs")."""
    return {"event_id": result.event_id, "parent_event_id": result.parent_event_id, "trace_id": result.trace_id}


def _check_type(result: EventEnvelope[PspResultUpdated]) -> None:
    if result.event_type is not EventType.PSP_RESULT_UPDATED:
        raise ValueError(f"expected {EventType.PSP_RESULT_UPDATED}, got {result.event_type}")


def _check_payment(locked: LockedOrder, result: EventEnvelope[PspResultUpdated]) -> None:
    """A result that names another payment than its order's was not made from this order: it can never apply."""
    named = result.payload.order.payment_id
    if named != locked.order.payment_id:
        raise UnknownPaymentOrder(
            f"payment order {locked.order.payment_order_id.value} belongs to payment {locked.order.payment_id.value}, "
            f"not {named.value}"
        )


def _calls_until(
    locked: LockedOrder, decision: Decision, result: EventEnvelope[PspResultUpdated], now: datetime
) -> datetime | None:
    """Until when a call under the attempt's key may still reach the PSP, kept while the attempt waits for word
    about it (the latest claim's lease end: no call outlives its claim's lease). None once the attempt is settled
    or moves on, once that moment is past, and when the answer is a charge's from the only call ever claimed under
    the key: that call is over, and no other can be on its way."""
    if decision.action not in (Action.CHECK_STATUS, Action.RECONCILE):
        return None
    if locked.calls_until is None or locked.calls_until <= now:
        return None
    answer = result.payload
    if answer.source is ResultSource.CHARGE and locked.psp_calls == 1 and answer.call_number == 1:
        return None
    return locked.calls_until


class ApplyPspResult:
    def __init__(
        self,
        *,
        store: ResultStore,
        retries: RetryQueue,
        policy: ResultPolicy,
        randint: Callable[[int, int], int],
        consumer: str,
        commission: CommissionSchedule,
    ) -> None:
        self._store = store
        self._commission = commission
        self._retries = retries
        self._policy = policy
        self._randint = randint
        self._consumer = consumer

    async def __call__(self, result: EventEnvelope[PspResultUpdated]) -> Applied:
        _check_type(result)
        order_id = result.payload.order.payment_order_id.value
        async with self._store.transaction() as tx:
            now = tx.now
            first = await tx.first_time(self._consumer, result.event_id, now)
            locked = await tx.lock(order_id)
            if locked is None:
                raise UnknownPaymentOrder(f"payment order {order_id} does not exist")
            _check_payment(locked, result)
            entries: list[JournalEntry] = []
            applied = await self._apply_locked(tx, locked, result, first=first, now=now, entries=entries)
            if entries:
                await tx.post_entries(entries, now)
        await self._after_commit(result, applied)
        return applied

    async def apply_many(self, results: Sequence[EventEnvelope[PspResultUpdated]]) -> list[Applied | Exception]:
        """Results for distinct orders in one transaction (one inbox insert, one lock of each kind, then each order
        exactly as `__call__` would): per-statement cost, not the rules, is what batching saves. If the batch
        cannot apply whole (an unknown order, two results for one order, any error but an unreachable database),
        each result is applied alone, so every caller gets its own outcome and one bad result cannot fail its
        neighbours."""
        order_ids = [r.payload.order.payment_order_id.value for r in results]
        if len(set(order_ids)) != len(order_ids):
            log.warning(
                "psp_result_batch_applied_one_by_one",
                results=len(results),
                event_ids=[r.event_id for r in results],
                error="two results for one order",
            )
        elif len(results) > 1:
            try:
                applied = await self._apply_batch(results, order_ids)
            except DependencyUnavailable as error:
                # The database could not be had (nothing written): alone, each would only wait for it again, one
                # after another. Every record is retried in place.
                return [error] * len(results)
            except Exception as error:
                log.warning(
                    "psp_result_batch_applied_one_by_one",
                    results=len(results),
                    event_ids=[r.event_id for r in results],
                    error=repr(error),
                )
            else:
                return [await self._after_commit_of(result, one) for result, one in zip(results, applied, strict=True)]
        outcomes: list[Applied | Exception] = []
        for result in results:
            try:
                outcomes.append(await self(result))
            except Exception as error:
                outcomes.append(error)
        return outcomes

    async def _apply_batch(
        self, results: Sequence[EventEnvelope[PspResultUpdated]], order_ids: list[int]
    ) -> list[Applied]:
        for result in results:
            _check_type(result)
        async with self._store.transaction() as tx:
            now = tx.now
            first = await tx.first_times(self._consumer, [r.event_id for r in results], now)
            locked = await tx.lock_many(order_ids)
            if missing := [i for i in order_ids if i not in locked]:
                raise UnknownPaymentOrder(f"payment orders {missing} do not exist")
            for order_id, result in zip(order_ids, results, strict=True):
                _check_payment(locked[order_id], result)
            entries: list[JournalEntry] = []
            applied = [
                await self._apply_locked(
                    tx, locked[order_id], result, first=result.event_id in first, now=now, entries=entries
                )
                for order_id, result in zip(order_ids, results, strict=True)
            ]
            if entries:  # the charges of the batch's orders that became SUCCESSFUL_FINAL, in one write
                await tx.post_entries(entries, now)
            return applied

    async def _apply_locked(
        self,
        tx: ResultTransaction,
        locked: LockedOrder,
        result: EventEnvelope[PspResultUpdated],
        *,
        first: bool,
        now: datetime,
        entries: list[JournalEntry],
    ) -> Applied:
        """The decision and its writes for one locked order (a redelivery decides nothing); the ledger entry it
        causes is added to `entries`, for the caller to post before the transaction ends."""
        error = result.payload.error_detail
        decision = decide(locked.state_at(now), result.payload.outcome, self._policy.domain) if first else None
        order = locked.order
        if decision is not None:
            order = dataclasses.replace(
                order,
                status=decision.status,
                retry_count=decision.attempt,
                retry_reason=decision.reason,
                last_error_message=error if error is not None else order.last_error_message,
                updated_at=now,
            )
            await self._write(tx, locked, order, decision, result)
            if posts_charge(locked.order.status, order.status):
                entries.append(charge_entry(order, self._commission))
        return Applied(decision=decision, duplicate=not first, order=order)

    async def _after_commit_of(self, result: EventEnvelope[PspResultUpdated], applied: Applied) -> Applied | Exception:
        try:
            await self._after_commit(result, applied)
        except Exception as error:
            return error
        return applied

    async def _after_commit(self, result: EventEnvelope[PspResultUpdated], applied: Applied) -> None:
        """Log what the commit did; if the order waits for attempt n+1, make sure that retry is queued (first
        time or a redelivery)."""
        order, decision, attempt = applied.order, applied.decision, result.payload.outcome.attempt
        if decision is not None:
            log.info(
                "psp_result_applied",
                **_ids(result),
                payment_order_id=order.public_id,
                attempt=attempt,
                action=decision.action.value,
                status=decision.status.value,
                reason=decision.reason,
            )
        elif not applied.duplicate:
            log.info("psp_result_ignored", **_ids(result), payment_order_id=order.public_id, attempt=attempt)
        if order.status in RETRYABLE and order.retry_count == attempt + 1:
            await self._queue_retry(order, result)

    async def _write(
        self,
        txn: ResultTransaction,
        locked: LockedOrder,
        order: PaymentOrder,
        decision: Decision,
        result: EventEnvelope[PspResultUpdated],
    ) -> None:
        now = order.updated_at
        check_number = {
            Action.CHECK_STATUS: decision.check_number,
            Action.RETRY: 0,
        }.get(decision.action, locked.status_check_number)
        calls_until = _calls_until(locked, decision, result, now)
        await txn.save(
            order.payment_order_id.value,
            status=order.status,
            attempt=order.retry_count,
            reason=order.retry_reason,
            error=order.last_error_message,
            status_check_number=check_number,
            now=now,
            calls_until=calls_until,
        )
        if decision.action in (Action.SUCCEED, Action.FAIL):
            await txn.add_events(
                [payment_order_settled(order, trace_id=result.trace_id, parent_event_id=result.event_id, now=now)]
            )
            await txn.roll_up(order.payment_id.value, now)
            if locked.order.status is PaymentOrderStatus.NEEDS_RECONCILIATION:
                await self._audit_reconciled(txn, order, result)
        elif decision.action is Action.CHECK_STATUS:
            delay = self._policy.status_check_delays_seconds[decision.check_number - 1]
            # Never before a call still on its way could have reached the PSP: the check must see what it did.
            due_at = max(now + timedelta(seconds=delay), calls_until or now)
            await txn.schedule_status_check(
                order.payment_order_id.value,
                attempt=order.retry_count,
                check_number=decision.check_number,
                due_at=due_at,
                trace_id=result.trace_id,
                now=now,
            )
        elif decision.action is Action.RECONCILE:
            log.error(
                "payment_order_needs_reconciliation",
                **_ids(result),
                payment_order_id=order.public_id,
                attempt=order.retry_count,
                reason=decision.reason,
            )

    async def _audit_reconciled(
        self, txn: ResultTransaction, order: PaymentOrder, result: EventEnvelope[PspResultUpdated]
    ) -> None:
        answer = result.payload
        source = answer.source.value
        status = answer.psp_status.value if answer.psp_status is not None else None
        note = f"PSP answered {status} ({source}, event {result.event_id})"
        if not answer.found:
            note = f"PSP has no charge under the attempt's key ({source}, event {result.event_id})"
        await txn.record_reconciliation(
            ReconciliationEntry(
                payment_order_id=order.payment_order_id.value,
                attempt=order.retry_count,
                from_status=PaymentOrderStatus.NEEDS_RECONCILIATION,
                to_status=order.status,
                source="psp_answer",
                actor=self._consumer,
                note=note,
                at=order.updated_at,
            )
        )
        log.warning(
            "payment_order_reconciled",
            **_ids(result),
            payment_order_id=order.public_id,
            attempt=order.retry_count,
            status=order.status.value,
            source="psp_answer",
            note=note,
        )

    async def _queue_retry(self, order: PaymentOrder, result: EventEnvelope[PspResultUpdated]) -> None:
        attempt = order.retry_count
        request = psp_call_requested(
            order, attempt=attempt, trace_id=result.trace_id, parent_event_id=result.event_id, now=result.timestamp
        )
        delay = equal_jitter_backoff_ms(
            attempt, base_ms=self._policy.retry_base_ms, max_ms=self._policy.retry_max_ms, randint=self._randint
        )
        if await self._retries.schedule(request, delay_ms=delay):
            log.info(
                "psp_retry_scheduled", **_ids(result), payment_order_id=order.public_id, attempt=attempt, delay_ms=delay
            )
