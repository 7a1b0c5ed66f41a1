"""GET /sellers/{sellerId}/balance and GET /sellers/{sellerId}/entries: a seller's account in the ledger.

Readable by the seller's own client (its token's `seller_id` claim) and by holders of the finance role; amounts
are integer minor units. The statement pages newest first by an opaque cursor (`nextCursor`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel
from starlette.responses import Response

from payment_application.get_seller_statement import MAX_PAGE
from payment_domain.ids import PaymentOrderId
from services.payment_service.api.problems import UNAUTHENTICATED, UNAVAILABLE, problem_responses
from services.payment_service.api.schemas import PRINTABLE
from services.payment_service.api.security import require_seller_reader
from services.payment_service.api.strict_query import refuse_unknown_query

router = APIRouter(dependencies=[Depends(refuse_unknown_query)])


def _json(document: BaseModel) -> Response:
    """The document as its model serializes it (the models above are also what OpenAPI publishes)."""
    return Response(document.model_dump_json(), media_type="application/json")


SellerId = Annotated[
    str, Path(min_length=1, max_length=255, pattern=PRINTABLE, description="the seller's id, as in sellerId")
]
_PROBLEMS = problem_responses(
    {
        401: UNAUTHENTICATED,
        403: "The caller is neither this seller's own client nor a holder of the role finance:read",
        422: "A query parameter is invalid (listed in `errors`)",
        503: UNAVAILABLE,
        504: "The database did not answer in time",
    }
)


class CurrencyBalance(BaseModel):
    currency: str
    balance: int  # credited - debited: what the platform owes the seller (negative: the seller owes)
    credited: int
    debited: int
    postings: int


class SellerBalanceDocument(BaseModel):
    sellerId: str
    balances: list[CurrencyBalance]


class StatementEntry(BaseModel):
    postingId: int
    entryId: int
    kind: str
    paymentOrderId: str
    postedAt: str
    currency: str
    side: str
    amount: int  # minor units, > 0, on `side` of the seller's account


class SellerStatementDocument(BaseModel):
    sellerId: str
    entries: list[StatementEntry]
    nextCursor: str | None  # pass as `cursor` for the next (older) page; null on the last page


@router.get(
    "/sellers/{seller_id}/balance",
    response_model=SellerBalanceDocument,
    responses=_PROBLEMS,
    openapi_extra={"security": [{"bearerAuth": ["finance:read"]}]},
    summary="A seller's balance per currency, summed from the ledger's postings",
)
async def seller_balance(seller_id: SellerId, request: Request) -> Response:
    await require_seller_reader(request, seller_id)
    balances = await request.app.state.container.get_seller_balance(seller_id)
    return _json(
        SellerBalanceDocument(
            sellerId=seller_id,
            balances=[
                CurrencyBalance(
                    currency=b.currency.value,
                    balance=b.balance,
                    credited=b.credited,
                    debited=b.debited,
                    postings=b.postings,
                )
                for b in balances
            ],
        )
    )


@router.get(
    "/sellers/{seller_id}/entries",
    response_model=SellerStatementDocument,
    responses=_PROBLEMS,
    openapi_extra={"security": [{"bearerAuth": ["finance:read"]}]},
    summary="A seller's statement: the postings on its account, newest first, a page at a time",
)
async def seller_entries(
    seller_id: SellerId,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="entries per page")] = 50,
    cursor: Annotated[
        str | None, Query(pattern=r"^[0-9]{1,19}$", description="`nextCursor` of the previous page")
    ] = None,
) -> Response:
    await require_seller_reader(request, seller_id)
    page = await request.app.state.container.get_seller_statement(
        seller_id, limit=limit, before=int(cursor) if cursor is not None else None
    )
    return _json(
        SellerStatementDocument(
            sellerId=seller_id,
            entries=[
                StatementEntry(
                    postingId=line.posting_id,
                    entryId=line.entry_id,
                    kind=line.kind.value,
                    paymentOrderId=PaymentOrderId(line.payment_order_id).public,
                    postedAt=line.posted_at.isoformat(),
                    currency=line.currency.value,
                    side=line.side.value,
                    amount=line.amount,
                )
                for line in page.lines
            ],
            nextCursor=str(page.next_before) if page.next_before is not None else None,
        )
    )
