"""Payments, payment orders, idempotency keys and the time-partitioned outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE payments (
            payment_id        BIGINT       PRIMARY KEY,
            public_payment_id VARCHAR(64)  NOT NULL UNIQUE,
            buyer_id          VARCHAR(255) NOT NULL,
            order_id          VARCHAR(255) NOT NULL,
            amount_value      BIGINT       NOT NULL CHECK (amount_value > 0),
            amount_currency   VARCHAR(3)   NOT NULL,
            status            VARCHAR(32)  NOT NULL,
            client_id         VARCHAR(255) NOT NULL,
            trace_id          VARCHAR(64)  NOT NULL,
            created_at        TIMESTAMPTZ  NOT NULL,
            updated_at        TIMESTAMPTZ  NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX payments_buyer_order_idx ON payments (buyer_id, order_id)")
    op.execute(
        """
        CREATE TABLE payment_orders (
            payment_order_id        BIGINT       PRIMARY KEY,
            public_payment_order_id VARCHAR(64)  NOT NULL UNIQUE,
            payment_id              BIGINT       NOT NULL REFERENCES payments (payment_id),
            public_payment_id       VARCHAR(64)  NOT NULL,
            seller_id               VARCHAR(255) NOT NULL,
            amount_value            BIGINT       NOT NULL CHECK (amount_value > 0),
            amount_currency         VARCHAR(3)   NOT NULL,
            status                  VARCHAR(64)  NOT NULL,
            retry_count             INTEGER      NOT NULL DEFAULT 0,
            retry_reason            TEXT,
            last_error_message      TEXT,
            created_at              TIMESTAMPTZ  NOT NULL,
            updated_at              TIMESTAMPTZ  NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX payment_orders_payment_id_idx ON payment_orders (payment_id)")
    op.execute(
        """
        CREATE TABLE idempotency_keys (
            client_id       VARCHAR(255) NOT NULL,
            idempotency_key VARCHAR(255) NOT NULL,
            request_hash    VARCHAR(64)  NOT NULL,
            response_status INTEGER      NOT NULL,
            response_body   BYTEA        NOT NULL,
            payment_id      BIGINT       NOT NULL,
            created_at      TIMESTAMPTZ  NOT NULL,
            expires_at      TIMESTAMPTZ  NOT NULL,
            PRIMARY KEY (client_id, idempotency_key)
        )
        """
    )
    op.execute("CREATE INDEX idempotency_keys_expires_at_idx ON idempotency_keys (expires_at)")
    op.execute("CREATE SEQUENCE outbox_event_id_seq")
    op.execute(
        """
        CREATE TABLE outbox_event (
            id               BIGINT      NOT NULL DEFAULT nextval('outbox_event_id_seq'),
            event_id         UUID        NOT NULL,
            event_type       TEXT        NOT NULL,
            topic            TEXT        NOT NULL,
            aggregate_id     TEXT        NOT NULL,
            trace_id         TEXT        NOT NULL,
            parent_event_id  UUID        NOT NULL,
            payload          BYTEA       NOT NULL,
            status           TEXT        NOT NULL DEFAULT 'NEW' CHECK (status IN ('NEW', 'SENT')),
            created_at       TIMESTAMPTZ NOT NULL,
            lease_token      UUID,
            lease_expires_at TIMESTAMPTZ,
            publish_attempts INTEGER     NOT NULL DEFAULT 0,
            sent_at          TIMESTAMPTZ,
            PRIMARY KEY (id, created_at)
        ) PARTITION BY RANGE (created_at)
        """
    )
    op.execute("ALTER SEQUENCE outbox_event_id_seq OWNED BY outbox_event.id")
    op.execute("CREATE INDEX outbox_event_pending_idx ON outbox_event (created_at, id) WHERE status = 'NEW'")
    op.execute(
        "CREATE INDEX outbox_event_aggregate_pending_idx ON outbox_event (aggregate_id, id) WHERE status = 'NEW'"
    )
    # A missing window must never fail an insert: the DEFAULT partition catches it and maintenance moves it out.
    op.execute("CREATE TABLE outbox_event_default PARTITION OF outbox_event DEFAULT")
    # One wake-up per inserting statement, delivered at commit, lets the dispatcher sleep instead of polling.
    op.execute(
        """
        CREATE FUNCTION outbox_event_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('outbox_event_new', '');
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER outbox_event_notify AFTER INSERT ON outbox_event
        FOR EACH STATEMENT EXECUTE FUNCTION outbox_event_notify()
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE outbox_event")
    op.execute("DROP FUNCTION outbox_event_notify()")
    op.execute("DROP TABLE idempotency_keys")
    op.execute("DROP TABLE payment_orders")
    op.execute("DROP TABLE payments")
