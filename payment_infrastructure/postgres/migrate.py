"""Run Alembic programmatically (start-up, tests, `python -m payment_infrastructure.postgres.migrate`)."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def sync_url(url: str) -> str:
    """Alembic runs synchronously: swap the asyncpg driver for psycopg, keep everything else."""
    return make_url(url).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", sync_url(url).replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def main() -> None:
    parser = argparse.ArgumentParser(description="Apply the payment database migrations.")
    parser.add_argument(
        "url",
        nargs="?",
        default=os.environ.get("PAYMENTS_DB__URL"),
        help="database URL (default: $PAYMENTS_DB__URL, which keeps a password out of the process arguments)",
    )
    parser.add_argument("revision", nargs="?", default="head")
    parser.add_argument("--create", action="store_true", help="create the database first if it is missing")
    parser.add_argument(
        "--url-from",
        metavar="WHERE",
        help="where PAYMENTS_DB__URL comes from (e.g. 'Secret payment-service-secrets, key MIGRATION_DB_URL'), "
        "named in the error when it is empty",
    )
    args = parser.parse_args()
    if not args.url:
        where = f" (from {args.url_from}: is the key there?)" if args.url_from else ""
        parser.error(f"no database URL: pass one or set PAYMENTS_DB__URL{where}")
    if args.create:
        from payment_infrastructure.postgres.database import create_database_if_missing

        asyncio.run(create_database_if_missing(args.url))
    upgrade(args.url, args.revision)


if __name__ == "__main__":
    main()
