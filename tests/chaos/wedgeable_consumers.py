"""payment-consumers exactly as `python -m services.payment_consumers` runs it, plus one fault a test can set off from
outside: SIGUSR1 wedges every Kafka poll loop of the process (its next `getmany` never returns, as a hung fetch or a
callback that never ends would). Everything else goes on: the heartbeats keep the member in its group, the management
server answers, so only the consumers' liveness (`/health/live`) can tell, and only a restart frees it."""

from __future__ import annotations

import asyncio
import signal
from types import FrameType
from typing import Any

from aiokafka import AIOKafkaConsumer

from services.payment_consumers.process import main


async def _never_returns(_self: AIOKafkaConsumer, *_args: Any, **_kwargs: Any) -> dict[Any, Any]:
    await asyncio.Event().wait()
    return {}


def _wedge(_signum: int, _frame: FrameType | None) -> None:
    AIOKafkaConsumer.getmany = _never_returns


if __name__ == "__main__":
    signal.signal(signal.SIGUSR1, _wedge)
    main()
