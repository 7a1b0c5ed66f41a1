"""LISTEN outbox_event_new: wakes an idle dispatcher the moment an outbox insert commits.

A hint only: the dispatcher still polls with a backoff, so a lost connection or a missed notification delays
publishing (by at most the idle backoff) but never loses a row. One dedicated asyncpg connection, reconnected
in the background after a failure; every (re)connect wakes the dispatcher once in case it missed something.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import structlog
from sqlalchemy.engine import make_url

from payment_infrastructure.postgres.settings import SslMode

log = structlog.get_logger(__name__)


def asyncpg_dsn(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresOutboxNotifications:
    """`NewOutboxRowSignal` fed by Postgres NOTIFY."""

    def __init__(
        self,
        database_url: str,
        *,
        ssl: SslMode = "prefer",
        channel: str = "outbox_event_new",
        reconnect_delay_seconds: float = 1.0,
    ) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self._ssl = ssl  # as the pools have it: a verify-full deployment verifies this connection too
        self._channel = channel
        self._reconnect_delay = reconnect_delay_seconds
        self._woken = asyncio.Event()
        self._lost = asyncio.Event()
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def start(self, *, connect_within: float = 5.0) -> None:
        """Start listening; wait up to `connect_within` s for a first connection (dispatching works without one)."""
        self._task = asyncio.create_task(self._listen_forever(), name="outbox-notify-listener")
        try:
            await asyncio.wait_for(self._connected.wait(), connect_within)
        except TimeoutError:
            log.warning("outbox_listener_not_connected", channel=self._channel)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def reset(self) -> None:
        self._woken.clear()

    async def wait(self, max_seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._woken.wait(), max_seconds)
        except TimeoutError:
            return False
        return True

    def _notified(self, *_args: object) -> None:
        self._woken.set()

    def _terminated(self, *_args: object) -> None:
        self._lost.set()

    async def _listen_forever(self) -> None:
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._dsn, ssl=self._ssl, timeout=5.0)
                self._lost.clear()
                conn.add_termination_listener(self._terminated)
                await conn.add_listener(self._channel, self._notified)
                self._connected.set()
                self._woken.set()
                log.info("outbox_listener_connected", channel=self._channel)
                await self._lost.wait()
                log.warning("outbox_listener_disconnected", channel=self._channel)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("outbox_listener_connect_failed", channel=self._channel, error=repr(error))
            finally:
                self._connected.clear()
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 2.0)
            await asyncio.sleep(self._reconnect_delay)
