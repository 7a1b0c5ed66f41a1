"""The PSP-call claim's statement bounds and the status-check schedule are validated against the PSP call budget
at start-up, each bad combination refused with the settings named."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.payment_consumers.settings import ConsumersSettings


def test_the_defaults_bound_the_claim_and_leave_every_call_its_budget() -> None:
    settings = ConsumersSettings()

    assert settings.psp.call_budget_seconds == 1.5  # 500 ms timeout + 1 s cancelling backstop
    assert settings.process.psp_claim_lock_timeout_ms <= settings.process.psp_claim_statement_timeout_ms
    assert settings.process.psp_claim_statement_timeout_ms / 1000 + 1.5 < settings.process.psp_claim_lease_seconds
    assert settings.status_checks.delays_seconds[0] >= settings.psp.call_budget_seconds


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"status_checks": {"delays_seconds": (1, 30)}},
            r"status_checks\.delays_seconds\[0\] \(1\) must be at least the PSP call budget.*\(1500 ms\)",
        ),
        (
            {"psp": {"call_timeout_ms": 28_000}, "status_checks": {"delays_seconds": (60,)}},
            r"process\.psp_claim_lease_seconds \(30\) must exceed .* call budget.* \(29000 ms\)",
        ),
        (
            {"process": {"psp_claim_lease_seconds": 3}},
            r"process\.psp_claim_lease_seconds \(3\) must exceed process\.psp_claim_statement_timeout_ms \(2000\)",
        ),
        (
            {"process": {"psp_claim_lock_timeout_ms": 3_000}},
            r"process\.psp_claim_lock_timeout_ms \(3000\) must not exceed process\.psp_claim_statement_timeout_ms",
        ),
        ({"process": {"psp_claim_statement_timeout_ms": 0}}, "psp_claim_statement_timeout_ms"),
        ({"process": {"psp_claim_lock_timeout_ms": 0}}, "psp_claim_lock_timeout_ms"),
    ],
)
def test_a_combination_that_lets_a_call_outlive_its_bounds_is_refused(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ConsumersSettings.model_validate(values)


def test_a_shorter_call_budget_allows_an_earlier_first_check() -> None:
    settings = ConsumersSettings.model_validate(
        {"psp": {"call_timeout_ms": 200, "call_grace_ms": 100}, "status_checks": {"delays_seconds": (0.3, 1)}}
    )

    assert settings.psp.call_budget_seconds == pytest.approx(0.3)
