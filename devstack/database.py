"""The development database role of `make run` and the tests, created by infra/scripts/ensure-services.sh.

DEV ONLY: the password is written here, in that script and in the docs, and protects nothing; it is for this
machine's own Postgres on 127.0.0.1. Never give the role or its password to a shared or production server. The role
owns the `payments` database and may create databases (each test session makes its own); it is not a superuser.
"""

from __future__ import annotations

DEV_ROLE = "payments"
DEV_PASSWORD = "payments-dev-only"
SERVER_URL = f"postgresql+asyncpg://{DEV_ROLE}:{DEV_PASSWORD}@127.0.0.1:5432"
"""The local Postgres server, as the development role (a database name goes after it)."""
DATABASE_URL = f"{SERVER_URL}/payments"
"""`make run`'s database."""
