"""A simulated PSP with a ledger, behind the real PspGateway port, and the faults a real one (and the network) has.

Per idempotency key the PSP remembers what it did: nothing yet, in progress, charged, declined, or failed. A charge
is visible to a status query from the moment the request arrives, and the key never charges twice (a repeated call
replays the key's answer, is told 409 while it is in progress, or, as a fault, 503 after charging). The ledger is
the truth the invariants are checked against: which keys moved money for which payment order. Refunds are kept
the same way, under the refund's own key, with the same faults (`refunds`: which keys paid money back).

What the simulation trusts, and documents in docs/money-safety.md: a 429 to the first call ever made under a
key, our own pool refusing, and a refused connection mean the PSP did not process that call; a status query
answers truthfully about every request that reached the PSP. A 503 proves nothing: as a fault, the PSP (a proxy in
front of it) charges a new key and answers 503.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from payment_application.ports.psp import PspCallResult, PspChargeRequest, PspRefundRequest, PspStatusResult
from payment_domain.psp_answer import AnswerKind, PspAnswer
from payment_domain.psp_answer import answer_for_psp_status as psp_said
from payment_domain.status import PaymentOrderStatus
from tests.simulation.scheduler import checkpoint, wait_for

S = PaymentOrderStatus

IN_PROGRESS = "in progress"
CHARGED = "charged"
DECLINED = "declined"
FAILED = "failed (no money moved)"
# What our gateway makes of a call that never reached the PSP (refused on our side, a 429): no status word.
NOT_EXECUTED = PspAnswer(AnswerKind.NOT_CHARGED)
# What it makes of a 503: probably not executed, never proof of it.
UNAVAILABLE = PspAnswer(AnswerKind.UNAVAILABLE)


@dataclass
class KeyState:
    merchant_reference: str
    state: str
    calls: int = 1
    refund: bool = False  # a refund's key: the money moves back to the buyer


@dataclass
class LateExecution:
    key: str
    due_ms: int
    outcome: str  # CHARGED or DECLINED


@dataclass
class SimPsp:
    random: random.Random
    now_ms: Callable[[], int]
    trace: Callable[[str], None]
    faults: Callable[[], bool]  # True while faults are on
    keys: dict[str, KeyState] = field(default_factory=dict)
    ledger: list[tuple[str, str]] = field(default_factory=list)  # (merchant_reference, key) per charge made
    refunds: list[tuple[str, str]] = field(default_factory=list)  # (merchant_reference, key) per refund paid back
    # key -> its first request (amount, seller; a refund's names its refund)
    requests: dict[str, PspChargeRequest | PspRefundRequest] = field(default_factory=dict)
    late: list[LateExecution] = field(default_factory=list)
    status_outage: bool = False  # the status endpoint is down while faults are on: unknown outcomes get parked
    # The longest a charge takes from its start until nothing of it can reach the PSP (the executor's call budget):
    # while faults are on, a request may spend up to that long on its way (our pool's queue, a slow connect).
    call_budget_ms: int = 0
    in_transit: list[int] = field(default_factory=list)  # when each request on its way arrives

    def charges_of(self, merchant_reference: str) -> list[str]:
        return [key for ref, key in self.ledger if ref == merchant_reference]

    def _charge(self, key: str) -> None:
        state = self.keys[key]
        state.state = CHARGED
        (self.refunds if state.refund else self.ledger).append((state.merchant_reference, key))
        self.trace(f"PSP {'paid back refund' if state.refund else 'charged'} {key}")

    def run_due(self) -> None:
        """Execute the late charges that are due (the PSP's own background work)."""
        now = self.now_ms()
        for execution in [e for e in self.late if e.due_ms <= now]:
            self.late.remove(execution)
            if execution.outcome == CHARGED:
                self._charge(execution.key)
            else:
                self.keys[execution.key].state = DECLINED
                self.trace(f"PSP declined {execution.key} (late)")

    def next_due_ms(self) -> int | None:
        return min([e.due_ms for e in self.late] + self.in_transit, default=None)

    def _pick(self, weights: dict[str, int]) -> str:
        names = list(weights)
        return self.random.choices(names, weights=[weights[n] for n in names])[0]

    async def charge(self, request: PspChargeRequest) -> PspCallResult:
        return await self._call(request)

    async def refund(self, request: PspRefundRequest) -> PspCallResult:
        return await self._call(request)

    async def _call(self, request: PspChargeRequest | PspRefundRequest) -> PspCallResult:
        # The request leaves and, unless refused on our side, arrives in the same step: no await between the
        # caller's last look at its lease and the PSP seeing the key.
        key = request.idempotency_key
        faulty = self.faults()
        if faulty and self.call_budget_ms and self.random.random() < 0.25:
            # Slow on its way, never longer than the budget: a status check or another claim may run meanwhile.
            arrives = self.now_ms() + self.random.randint(1, self.call_budget_ms)
            self.trace(f"PSP call {key} on its way until {arrives}")
            self.in_transit.append(arrives)
            try:
                await wait_for(lambda: self.now_ms() >= arrives)
            finally:
                self.in_transit.remove(arrives)  # arrived, or its process died on the way (never sent)
        if faulty and self.random.random() < 0.15:
            why = self.random.choice(["POOL_FULL", "CONNECT_FAILED"])
            self.trace(f"PSP call {key} refused on our side ({why})")
            await checkpoint()
            return PspCallResult(NOT_EXECUTED, 1, error_code=why)
        known = self.keys.get(key)
        if known is not None:
            known.calls += 1
            answer = self._replay(key, known, faulty)
        else:
            answer = self._first_call(request, faulty)
        await checkpoint()  # the answer travels back: a crash here loses it
        return answer

    def _replay(self, key: str, known: KeyState, faulty: bool) -> PspCallResult:
        if faulty and self.random.random() < 0.4:
            self.trace(f"PSP answered a repeated call {key} 503 ({known.state})")
            return PspCallResult(UNAVAILABLE, 1, error_code="HTTP_503")
        answer = {
            IN_PROGRESS: S.PENDING_STATUS_CHECK_LATER,  # 409: still processing this key
            CHARGED: S.SUCCESSFUL_FINAL,
            DECLINED: S.DECLINED_FINAL,
            FAILED: S.FAILED_TRANSIENT_ERROR,
        }[known.state]
        self.trace(f"PSP replayed {key}: {answer}")
        return PspCallResult(psp_said(answer), 1)

    def _first_call(self, request: PspChargeRequest | PspRefundRequest, faulty: bool) -> PspCallResult:
        key = request.idempotency_key
        if faulty and self.random.random() < 0.2:
            # Busy (503) or rate limited (429) before doing anything: the key is not recorded.
            code = self.random.choice((429, 503))
            self.trace(f"PSP refused {key} with {code}, nothing recorded")
            return PspCallResult(NOT_EXECUTED if code == 429 else UNAVAILABLE, 1, error_code=f"HTTP_{code}")
        refund = isinstance(request, PspRefundRequest)
        self.keys[key] = KeyState(request.merchant_reference, IN_PROGRESS, refund=refund)
        self.requests[key] = request
        what = self._pick(
            {"success": 60, "decline": 8, "transient": 12, "pending": 8, "late": 6, "lost": 6, "charged_503": 5}
            if faulty
            else {"success": 75, "decline": 10, "transient": 15}
        )
        if what == "success":
            self._charge(key)
            return PspCallResult(psp_said(S.SUCCESSFUL_FINAL), 1)
        if what == "charged_503":
            # A proxy in front of the PSP lost the connection after the PSP charged, and answers 503.
            self._charge(key)
            self.trace(f"PSP charged {key} then answered 503")
            return PspCallResult(UNAVAILABLE, 1, error_code="HTTP_503")
        if what == "decline":
            self.keys[key].state = DECLINED
            self.trace(f"PSP declined {key}")
            return PspCallResult(psp_said(S.DECLINED_FINAL), 1)
        if what == "transient":
            self.keys[key].state = FAILED
            self.trace(f"PSP failed {key} transiently, no money moved")
            return PspCallResult(psp_said(S.FAILED_TRANSIENT_ERROR), 1)
        if what == "lost":
            self._charge(key)
            self.trace(f"PSP answer for {key} lost: caller times out")
            return PspCallResult(psp_said(S.TIMEOUT_EXCEEDED_1S_TRANSIENT), 1000, error_code="READ_TIMEOUT")
        outcome = CHARGED if self.random.random() < 0.8 else DECLINED
        due = self.now_ms() + self.random.randint(100, 8_000)
        self.late.append(LateExecution(key, due, outcome))
        if what == "pending":
            self.trace(f"PSP answered {key} PENDING; will be {outcome} at {due}")
            return PspCallResult(psp_said(S.PENDING_STATUS_CHECK_LATER), 1)
        self.trace(f"PSP slow on {key}: caller gives up; will be {outcome} at {due}")
        return PspCallResult(psp_said(S.TIMEOUT_EXCEEDED_1S_TRANSIENT), 1000, error_code="READ_TIMEOUT")

    async def charge_status(self, idempotency_key: str) -> PspStatusResult:
        return await self._status(idempotency_key)

    async def refund_status(self, idempotency_key: str) -> PspStatusResult:
        return await self._status(idempotency_key)

    async def _status(self, idempotency_key: str) -> PspStatusResult:
        faulty = self.faults()
        await checkpoint()
        if faulty and (self.status_outage or self.random.random() < 0.2):
            self.trace(f"PSP status query {idempotency_key}: could not ask")
            return PspStatusResult(PspAnswer(AnswerKind.OUTCOME_UNKNOWN), latency_ms=1000, error_code="TIMEOUT")
        known = self.keys.get(idempotency_key)
        if known is None:
            self.trace(f"PSP status {idempotency_key}: no such charge")
            return PspStatusResult(PspAnswer(AnswerKind.NOT_CHARGED), latency_ms=1)
        status = {
            IN_PROGRESS: S.PENDING_STATUS_CHECK_LATER,
            CHARGED: S.SUCCESSFUL_FINAL,
            DECLINED: S.DECLINED_FINAL,
            FAILED: S.FAILED_TRANSIENT_ERROR,
        }[known.state]
        self.trace(f"PSP status {idempotency_key}: {status}")
        return PspStatusResult(psp_said(status), latency_ms=1)
