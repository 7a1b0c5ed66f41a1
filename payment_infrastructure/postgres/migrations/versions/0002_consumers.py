"""payment-consumers: the PSP-attempt claim, the inbox of processed events, scheduled status checks.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The executor's claim on an attempt: a duplicate request for the same attempt does nothing while the lease
    # runs; the same delivery (an in-place retry or a redelivery) may take it again; PSP keys make that safe.
    op.execute(
        """
        ALTER TABLE payment_orders
            ADD COLUMN psp_claim_token      TEXT,
            ADD COLUMN psp_claim_expires_at TIMESTAMPTZ,
            ADD COLUMN status_check_number  INTEGER NOT NULL DEFAULT 0
        """
    )
    op.execute(
        """
        CREATE TABLE processed_events (
            consumer_group VARCHAR(255) NOT NULL,
            event_id       UUID         NOT NULL,
            processed_at   TIMESTAMPTZ  NOT NULL,
            PRIMARY KEY (consumer_group, event_id)
        )
        """
    )
    op.execute("CREATE INDEX processed_events_processed_at_idx ON processed_events (processed_at)")
    op.execute(
        """
        CREATE TABLE payment_order_status_checks (
            id               BIGSERIAL    PRIMARY KEY,
            payment_order_id BIGINT       NOT NULL REFERENCES payment_orders (payment_order_id),
            attempt          INTEGER      NOT NULL,
            check_number     INTEGER      NOT NULL,
            scheduled_at     TIMESTAMPTZ  NOT NULL,
            status           VARCHAR(16)  NOT NULL DEFAULT 'SCHEDULED' CHECK (status IN ('SCHEDULED', 'PUBLISHED')),
            lease_token      UUID,
            lease_expires_at TIMESTAMPTZ,
            trace_id         VARCHAR(64)  NOT NULL,
            created_at       TIMESTAMPTZ  NOT NULL,
            updated_at       TIMESTAMPTZ  NOT NULL,
            UNIQUE (payment_order_id, attempt, check_number)
        )
        """
    )
    op.execute(
        "CREATE INDEX payment_order_status_checks_due_idx ON payment_order_status_checks (scheduled_at) "
        "WHERE status = 'SCHEDULED'"
    )
    # Operators and the alert gauge look these up often; there should be very few.
    op.execute(
        "CREATE INDEX payment_orders_needs_reconciliation_idx ON payment_orders (payment_order_id) "
        "WHERE status = 'NEEDS_RECONCILIATION'"
    )


def downgrade() -> None:
    op.execute("DROP INDEX payment_orders_needs_reconciliation_idx")
    op.execute("DROP TABLE payment_order_status_checks")
    op.execute("DROP TABLE processed_events")
    op.execute(
        """
        ALTER TABLE payment_orders
            DROP COLUMN psp_claim_token,
            DROP COLUMN psp_claim_expires_at,
            DROP COLUMN status_check_number
        """
    )
