"""The outbox row keeps the W3C traceparent of the create that wrote it, so the dispatcher's publish continues the
payment's trace (docs/operations.md, "Tracing"). Nullable, no default: adding it changes only the catalogue (no
table rewrite, on the partitioned table and every partition), and a row written without a span keeps NULL.

Revision ID: 0009
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE outbox_event ADD COLUMN traceparent TEXT")


def downgrade() -> None:
    op.execute("ALTER TABLE outbox_event DROP COLUMN traceparent")
