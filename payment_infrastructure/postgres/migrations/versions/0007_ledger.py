"""The money book: ledger accounts, journal entries and their postings, balanced and append-only.

A posting names its account by (kind, owner, currency); the account row is created on first use. A deferred
constraint trigger refuses, at commit, a transaction that leaves any entry with debits and credits differing in a
currency (or an entry without postings); other triggers refuse every UPDATE, DELETE and TRUNCATE of
entries and postings. One charge entry per payment order (a partial unique index). Balances are sums of postings
(no balance row: a row per account would serialise every charge on the PSP receivable account). docs/ledger.md.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE ledger_accounts (
            kind       VARCHAR(32)  NOT NULL,
            owner      VARCHAR(255) NOT NULL,
            currency   CHAR(3)      NOT NULL,
            created_at TIMESTAMPTZ  NOT NULL DEFAULT now(),
            PRIMARY KEY (kind, owner, currency)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE journal_entries (
            entry_id         BIGINT       GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            kind             VARCHAR(32)  NOT NULL,
            payment_order_id BIGINT       NOT NULL,
            seller_id        VARCHAR(255) NOT NULL,
            posted_at        TIMESTAMPTZ  NOT NULL
        )
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX journal_entries_one_charge_per_order ON journal_entries (payment_order_id) "
        "WHERE kind = 'CHARGE'"
    )
    op.execute(
        """
        CREATE TABLE postings (
            posting_id    BIGINT       GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            entry_id      BIGINT       NOT NULL REFERENCES journal_entries (entry_id),
            account_kind  VARCHAR(32)  NOT NULL,
            account_owner VARCHAR(255) NOT NULL,
            currency      CHAR(3)      NOT NULL,
            side          VARCHAR(6)   NOT NULL CHECK (side IN ('DEBIT', 'CREDIT')),
            amount        BIGINT       NOT NULL CHECK (amount > 0),
            FOREIGN KEY (account_kind, account_owner, currency) REFERENCES ledger_accounts (kind, owner, currency)
        )
        """
    )
    op.execute("CREATE INDEX postings_entry_idx ON postings (entry_id)")
    op.execute("CREATE INDEX postings_account_idx ON postings (account_kind, account_owner, posting_id)")
    # An entry with a posting is checked by its postings' trigger; the entry's own only asks that it has one (a
    # single posting of a positive amount never balances).
    op.execute(
        """
        CREATE FUNCTION ledger_entry_must_balance() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            off RECORD;
        BEGIN
            SELECT currency, sum(CASE side WHEN 'DEBIT' THEN amount ELSE -amount END) AS net INTO off
              FROM postings WHERE entry_id = NEW.entry_id
             GROUP BY currency
            HAVING sum(CASE side WHEN 'DEBIT' THEN amount ELSE -amount END) <> 0
             LIMIT 1;
            IF FOUND THEN
                RAISE EXCEPTION 'journal entry % does not balance in %: debits minus credits = %',
                    NEW.entry_id, off.currency, off.net USING ERRCODE = 'check_violation';
            END IF;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION ledger_entry_must_have_postings() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM postings WHERE entry_id = NEW.entry_id) THEN
                RAISE EXCEPTION 'journal entry % has no postings', NEW.entry_id USING ERRCODE = 'check_violation';
            END IF;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        """
        CREATE CONSTRAINT TRIGGER postings_balance AFTER INSERT ON postings
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_entry_must_balance()
        """
    )
    op.execute(
        """
        CREATE CONSTRAINT TRIGGER journal_entries_have_postings AFTER INSERT ON journal_entries
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_entry_must_have_postings()
        """
    )
    op.execute(
        """
        CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'restrict_violation';
        END $$
        """
    )
    for table in ("ledger_accounts", "journal_entries", "postings"):
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION ledger_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only()"
        )


def downgrade() -> None:
    op.execute("DROP TABLE postings")
    op.execute("DROP TABLE journal_entries")
    op.execute("DROP TABLE ledger_accounts")
    op.execute("DROP FUNCTION ledger_append_only()")
    op.execute("DROP FUNCTION ledger_entry_must_balance()")
    op.execute("DROP FUNCTION ledger_entry_must_have_postings()")
