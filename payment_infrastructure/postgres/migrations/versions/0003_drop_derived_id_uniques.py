"""Drop the unique indexes on the public ids: they are derived from the primary keys ('payment-' || id), so the
primary keys already guarantee them, and every payment paid for two more index insertions.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE payments DROP CONSTRAINT payments_public_payment_id_key")
    op.execute("ALTER TABLE payment_orders DROP CONSTRAINT payment_orders_public_payment_order_id_key")
    op.execute(
        "ALTER TABLE payments ADD CONSTRAINT payments_public_id_derived "
        "CHECK (public_payment_id = 'payment-' || payment_id)"
    )
    op.execute(
        "ALTER TABLE payment_orders ADD CONSTRAINT payment_orders_public_id_derived "
        "CHECK (public_payment_order_id = 'paymentorder-' || payment_order_id)"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE payment_orders DROP CONSTRAINT payment_orders_public_id_derived")
    op.execute("ALTER TABLE payments DROP CONSTRAINT payments_public_id_derived")
    op.execute(
        "ALTER TABLE payment_orders ADD CONSTRAINT payment_orders_public_payment_order_id_key "
        "UNIQUE (public_payment_order_id)"
    )
    op.execute("ALTER TABLE payments ADD CONSTRAINT payments_public_payment_id_key UNIQUE (public_payment_id)")
