"""Refunds that stopped moving are re-driven, and parked ones asked about again (docs/ledger.md, "Re-drives").

`psp_sent_at`: stamped (the database's now()) by the refund executor before each PSP call or status query of
the refund; a sign of progress, and the mark that a refund may have reached the PSP (a re-drive then asks for its
status first). `redriven_at`: the claim of the stale-refund sweeper (on REQUESTED refunds) or of the parked-refund
re-query (on NEEDS_RECONCILIATION ones); the two never claim the same row. The partial index holds the unsettled
refunds only, a handful. Nullable, no default: the catalogue changes, the table is not rewritten.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE refunds ADD COLUMN psp_sent_at TIMESTAMPTZ, ADD COLUMN redriven_at TIMESTAMPTZ")
    op.execute(
        "CREATE INDEX refunds_unsettled_idx ON refunds (updated_at) "
        "WHERE status IN ('REQUESTED', 'NEEDS_RECONCILIATION')"
    )


def downgrade() -> None:
    op.execute("DROP INDEX refunds_unsettled_idx")
    op.execute("ALTER TABLE refunds DROP COLUMN redriven_at, DROP COLUMN psp_sent_at")
