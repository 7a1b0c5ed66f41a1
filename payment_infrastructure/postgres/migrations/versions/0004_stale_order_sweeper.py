"""The stale-order sweeper: when a sweeper last claimed an order, and an index of the orders still in flight.

The index holds only orders that are neither terminal nor parked for reconciliation, so it stays as small as the
work in flight however large `payment_orders` grows; the sweeper reads it oldest `updated_at` first. Its predicate
must stay the sweeper query's own (`payment_infrastructure/postgres/stale_orders.py`), or the planner cannot use
it; a test checks the plan. Built CONCURRENTLY: `payment_orders` may be large and busy when this runs.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE payment_orders ADD COLUMN swept_at TIMESTAMPTZ")
    with op.get_context().autocommit_block():
        op.execute(
            "CREATE INDEX CONCURRENTLY payment_orders_in_flight_idx ON payment_orders (updated_at) "
            "WHERE status NOT IN "
            "('DECLINED_FINAL', 'FAILED_FINAL', 'NEEDS_RECONCILIATION', 'SUCCESSFUL_FINAL', 'UNKNOWN_FINAL')"
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY payment_orders_in_flight_idx")
    op.execute("ALTER TABLE payment_orders DROP COLUMN swept_at")
