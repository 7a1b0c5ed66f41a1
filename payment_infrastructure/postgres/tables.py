"""SQLAlchemy Core tables: the shape the adapters query. Migrations (alembic/) own the DDL, including the
outbox's range partitioning, which Core metadata cannot express."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import UUID

metadata = MetaData()

payments = Table(
    "payments",
    metadata,
    Column("payment_id", BigInteger, primary_key=True, autoincrement=False),
    Column("public_payment_id", String(64), nullable=False),
    Column("buyer_id", String(255), nullable=False),
    Column("order_id", String(255), nullable=False),
    Column("amount_value", BigInteger, nullable=False),
    Column("amount_currency", String(3), nullable=False),
    Column("status", String(32), nullable=False),
    Column("client_id", String(255), nullable=False),
    Column("trace_id", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

payment_orders = Table(
    "payment_orders",
    metadata,
    Column("payment_order_id", BigInteger, primary_key=True, autoincrement=False),
    Column("public_payment_order_id", String(64), nullable=False),
    Column("payment_id", BigInteger, ForeignKey("payments.payment_id"), nullable=False, index=True),
    Column("public_payment_id", String(64), nullable=False),
    Column("seller_id", String(255), nullable=False),
    Column("amount_value", BigInteger, nullable=False),
    Column("amount_currency", String(3), nullable=False),
    Column("status", String(64), nullable=False),
    Column("retry_count", Integer, nullable=False, default=0),
    Column("retry_reason", Text),
    Column("last_error_message", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("client_id", String(255), primary_key=True),
    Column("idempotency_key", String(255), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("response_status", Integer, nullable=False),
    Column("response_body", LargeBinary, nullable=False),
    Column("payment_id", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)

outbox_event = Table(
    "outbox_event",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("event_id", UUID(as_uuid=False), nullable=False),
    Column("event_type", Text, nullable=False),
    Column("topic", Text, nullable=False),
    Column("aggregate_id", Text, nullable=False),
    Column("trace_id", Text, nullable=False),
    Column("parent_event_id", UUID(as_uuid=False), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("status", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), primary_key=True),
    Column("lease_token", UUID(as_uuid=False)),
    Column("lease_expires_at", DateTime(timezone=True)),
    Column("publish_attempts", Integer, nullable=False),
    Column("sent_at", DateTime(timezone=True)),
    Column("traceparent", Text),
)
