"""The money path: calls counted per attempt key, and a way out of NEEDS_RECONCILIATION.

`psp_call_count` counts the charge calls claimed under the current attempt's key (reset when the attempt changes):
a "not processed" answer opens the next attempt only when it came from the only call ever made under the key.
`reconcile_queried_at` paces the periodic re-query of parked orders; `reconciliation_audit` keeps one line per
order settled out of NEEDS_RECONCILIATION (by the re-query, a late PSP answer, or an operator), with no foreign
key so the audit outlives any archiving of orders. Existing rows get
0 calls on record, which is the safe reading: an answer about an attempt with no counted call is not trusted.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE payment_orders
            ADD COLUMN psp_call_count       INTEGER NOT NULL DEFAULT 0,
            ADD COLUMN reconcile_queried_at TIMESTAMPTZ
        """
    )
    op.execute(
        """
        CREATE TABLE reconciliation_audit (
            id               BIGSERIAL    PRIMARY KEY,
            payment_order_id BIGINT       NOT NULL,
            attempt          INTEGER      NOT NULL,
            from_status      VARCHAR(64)  NOT NULL,
            to_status        VARCHAR(64)  NOT NULL,
            source           VARCHAR(32)  NOT NULL,
            actor            VARCHAR(255) NOT NULL,
            note             TEXT,
            created_at       TIMESTAMPTZ  NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX reconciliation_audit_order_idx ON reconciliation_audit (payment_order_id)")


def downgrade() -> None:
    op.execute("DROP TABLE reconciliation_audit")
    op.execute("ALTER TABLE payment_orders DROP COLUMN psp_call_count, DROP COLUMN reconcile_queried_at")
