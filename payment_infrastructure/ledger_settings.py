"""The ledger's numbers: the platform's commission and each seller's own (PAYMENTS_LEDGER__...)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from payment_domain.ledger import BPS_PER_UNIT, CommissionSchedule


class LedgerSettings(BaseModel):
    """Basis points; `commission_bps_by_seller` is JSON in the environment:
    PAYMENTS_LEDGER__COMMISSION_BPS_BY_SELLER='{"seller-1": 250}'."""

    commission_default_bps: int = Field(default=1_000, ge=0, le=BPS_PER_UNIT)
    commission_bps_by_seller: dict[str, Annotated[int, Field(ge=0, le=BPS_PER_UNIT)]] = Field(default_factory=dict)

    def commission(self) -> CommissionSchedule:
        return CommissionSchedule(self.commission_default_bps, dict(self.commission_bps_by_seller))
