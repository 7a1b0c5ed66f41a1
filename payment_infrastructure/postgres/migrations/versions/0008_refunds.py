"""Refunds per payment order, and refund entries in the ledger.

`payment_orders.refunded_value` is the total of the order's refunds not failed: a refund is accepted in the
transaction that raises it, under the order's row lock, and the CHECK refuses any total above the amount charged
(the database's own guard beside the domain's). `refunds` holds each refund with its caller's idempotency key
(unique per client). A journal entry may name its refund (one REFUND entry per refund). docs/ledger.md.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE payment_orders ADD COLUMN refunded_value BIGINT NOT NULL DEFAULT 0")
    op.execute(
        "ALTER TABLE payment_orders ADD CONSTRAINT payment_orders_refunds_within_charge "
        "CHECK (refunded_value >= 0 AND refunded_value <= amount_value)"
    )
    op.execute(
        """
        CREATE TABLE refunds (
            refund_id        BIGINT       GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            payment_order_id BIGINT       NOT NULL REFERENCES payment_orders (payment_order_id),
            payment_id       BIGINT       NOT NULL,
            seller_id        VARCHAR(255) NOT NULL,
            amount_value     BIGINT       NOT NULL CHECK (amount_value > 0),
            amount_currency  CHAR(3)      NOT NULL,
            status           VARCHAR(32)  NOT NULL,
            client_id        VARCHAR(255) NOT NULL,
            idempotency_key  VARCHAR(255) NOT NULL,
            request_hash     VARCHAR(64)  NOT NULL,
            trace_id         VARCHAR(64)  NOT NULL,
            created_at       TIMESTAMPTZ  NOT NULL,
            updated_at       TIMESTAMPTZ  NOT NULL,
            CONSTRAINT refunds_one_per_key UNIQUE (client_id, idempotency_key)
        )
        """
    )
    op.execute("CREATE INDEX refunds_payment_order_idx ON refunds (payment_order_id)")
    # No foreign key, as for the entries' payment order: the book stands on its own; `payments ledger verify` checks
    # every refund entry against its refund.
    op.execute("ALTER TABLE journal_entries ADD COLUMN refund_id BIGINT")
    op.execute(
        "ALTER TABLE journal_entries ADD CONSTRAINT journal_entries_refund_names_its_refund "
        "CHECK ((kind = 'REFUND') = (refund_id IS NOT NULL))"
    )
    op.execute(
        "CREATE UNIQUE INDEX journal_entries_one_entry_per_refund ON journal_entries (refund_id) WHERE kind = 'REFUND'"
    )


def downgrade() -> None:
    op.execute("DROP INDEX journal_entries_one_entry_per_refund")
    op.execute("ALTER TABLE journal_entries DROP CONSTRAINT journal_entries_refund_names_its_refund")
    op.execute("ALTER TABLE journal_entries DROP COLUMN refund_id")
    op.execute("DROP TABLE refunds")
    op.execute("ALTER TABLE payment_orders DROP CONSTRAINT payment_orders_refunds_within_charge")
    op.execute("ALTER TABLE payment_orders DROP COLUMN refunded_value")
