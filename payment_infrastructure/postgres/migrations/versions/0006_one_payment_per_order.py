"""One payment per order: a unique index on payments (client_id, order_id).

A client's second create for an order it already has a payment for is refused by this index (and pointed at the
first payment), so a retry without an Idempotency-Key can never pay for an order twice, however the two requests
race. Built CONCURRENTLY: `payments` may be large and busy when this runs.

Rows written before this revision may already hold two payments for one order (nothing refused them). The upgrade
then stops and names some, rather than fail half-way through the build: which one stands is a decision about
money, not a migration's. A build that did fail half-way (a duplicate written during it) leaves an invalid index,
dropped before the next attempt.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

INDEX = "payments_client_order_key"


def upgrade() -> None:
    duplicates = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT client_id, order_id, string_agg(public_payment_id, ', ' ORDER BY payment_id) AS payments "
                "FROM payments GROUP BY client_id, order_id HAVING count(*) > 1 ORDER BY min(payment_id) LIMIT 5"
            )
        )
        .all()
    )
    if duplicates:
        named = "; ".join(f"client {r.client_id}, order {r.order_id}: {r.payments}" for r in duplicates)
        raise RuntimeError(
            "cannot enforce one payment per order: some orders already have more than one payment "
            f"(first ones: {named}). Decide which payment stands for each order (the others refunded or reconciled, "
            "and their order_id given a suffix that keeps them apart), then run the upgrade again."
        )
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
        op.execute(f"CREATE UNIQUE INDEX CONCURRENTLY {INDEX} ON payments (client_id, order_id)")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
