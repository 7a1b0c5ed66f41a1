"""The PSP's record of what it charged and refunded, read from the PSP simulator's `GET /admin/summary` (a real
PSP's settlement report would stand behind the same port)."""

from __future__ import annotations

from typing import Any

import httpx

from payment_application.ports.ledger_audit import PspCharged


class PspRecordUnavailable(RuntimeError):
    """The PSP's record could not be read (unreachable, an error status, or not the expected document)."""


class SimulatorSummaryRecord:
    def __init__(self, base_url: str, *, timeout_seconds: float = 10) -> None:
        self._url = base_url.rstrip("/") + "/admin/summary"
        self._timeout = timeout_seconds

    async def charged(self) -> PspCharged:
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as client:
                response = await client.get(self._url)
                response.raise_for_status()
            summary = response.json()
            by_currency = {str(c): int(n) for c, n in summary["charged_minor_by_currency"].items()}
            by_seller = _by_seller(summary["charged_minor_by_seller"])
            refunded_by_currency = {str(c): int(n) for c, n in summary.get("refunded_minor_by_currency", {}).items()}
            refunded_by_seller = _by_seller(summary.get("refunded_minor_by_seller", {}))
        except (httpx.HTTPError, ValueError, KeyError, AttributeError, TypeError) as error:
            raise PspRecordUnavailable(f"cannot read the PSP's record at {self._url}: {error!r}") from error
        return PspCharged(
            by_currency=by_currency,
            by_seller=by_seller,
            refunded_by_currency=refunded_by_currency,
            refunded_by_seller=refunded_by_seller,
        )


def _by_seller(document: Any) -> dict[tuple[str, str], int]:
    return {
        (str(seller), str(currency)): int(n)
        for seller, currencies in document.items()
        for currency, n in currencies.items()
    }
