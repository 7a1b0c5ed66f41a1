"""RedisRetryQueue: the retry queue as two sorted sets and a hash, every multi-step change one Lua script.

Keys (the original's two ZSETs plus one hash):
* `payment_retry_queue`     ZSET member → due time (epoch ms)
* `payment_retry_inflight`  ZSET member → claim time (epoch ms)
* `payment_retry_payloads`  HASH member → the serialized envelope

Members are `<paymentOrderId>:<attempt>`, small and deterministic; the envelope lives in the hash. Fixes against
the original: the claim is one script (it was ZPOPMIN then separate ZADDs, so a crash in between lost items, and
not-due items were popped and re-added on every tick); due and claim times come from Redis `TIME` inside the
scripts (one clock for every pod, not each pod's wall clock); an attempt can be queued once only.
For Redis Cluster, give the three keys one hash tag (e.g. `{payment_retry}_queue`) through the settings.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from payment_application.errors import DependencyUnavailable
from payment_application.ports.publisher import EventHeaders, OutboundMessage
from payment_application.ports.retry_queue import ClaimedRetry, retry_member
from payment_domain.events import EventEnvelope, PspCallRequested
from payment_infrastructure.redis.retry_metrics import redis_retry_dropped_total
from payment_infrastructure.redis.retry_settings import RetrySettings
from payment_infrastructure.serialization import EnvelopeDecodeError, envelope_from_bytes, envelope_to_bytes

log = structlog.get_logger(__name__)

RECLAIM_BATCH = 1_000
"""Items reclaimed per script call, so one call never blocks Redis for long."""

# Shared by every script. Lua 5.1's unpack() is bounded by the C stack (~8000 values), so multi-member commands
# go in chunks of CHUNK.
_PRELUDE = """
local CHUNK = 500
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# KEYS: queue, inflight, payloads. ARGV: member, payload, delay ms. Returns 1 if queued, 0 if already known.
_SCHEDULE = (
    _PRELUDE
    + """
if redis.call('ZSCORE', KEYS[2], ARGV[1]) or redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now_ms() + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
return 1
"""
)

# KEYS: queue, inflight, payloads. ARGV: limit. Returns {members, payloads} (a payload may be nil).
# The due members are exactly ranks 0..n-1 of the queue, so one ZREMRANGEBYRANK removes them.
_CLAIM = (
    _PRELUDE
    + """
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local n = #due
if n == 0 then
  return {{}, {}}
end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - 1)
local payloads = {}
for first = 1, n, CHUNK do
  local last = math.min(first + CHUNK - 1, n)
  local scored, names = {}, {}
  for i = first, last do
    scored[#scored + 1] = now
    scored[#scored + 1] = due[i]
    names[#names + 1] = due[i]
  end
  redis.call('ZADD', KEYS[2], unpack(scored))
  local got = redis.call('HMGET', KEYS[3], unpack(names))
  for i = 1, #names do
    payloads[first + i - 1] = got[i]
  end
end
return {due, payloads}
"""
)

# KEYS: queue, inflight, payloads. ARGV: members. The work of these members is done: forget them everywhere.
_ACK = (
    _PRELUDE
    + """
for first = 1, #ARGV, CHUNK do
  local names = {}
  for i = first, math.min(first + CHUNK - 1, #ARGV) do
    names[#names + 1] = ARGV[i]
  end
  redis.call('ZREM', KEYS[2], unpack(names))
  redis.call('ZREM', KEYS[1], unpack(names))
  redis.call('HDEL', KEYS[3], unpack(names))
end
return #ARGV
"""
)

# KEYS: queue, inflight. ARGV: visibility timeout ms, limit. Claims older than the timeout go back, due now.
_RECLAIM = (
    _PRELUDE
    + """
local now = now_ms()
local expired = redis.call(
  'ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - tonumber(ARGV[1])), 'LIMIT', 0, tonumber(ARGV[2]))
local n = #expired
if n == 0 then
  return 0
end
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, n - 1)
for first = 1, n, CHUNK do
  local scored = {}
  for i = first, math.min(first + CHUNK - 1, n) do
    scored[#scored + 1] = now
    scored[#scored + 1] = expired[i]
  end
  redis.call('ZADD', KEYS[1], 'NX', unpack(scored))
end
return n
"""
)

# KEYS: queue. Returns ms until the earliest item is due (0 if overdue), or -1 when the queue is empty.
_NEXT_DUE = (
    _PRELUDE
    + """
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #first == 0 then
  return -1
end
local wait = tonumber(first[2]) - now_ms()
if wait < 0 then
  return 0
end
return wait
"""
)


class RedisRetryQueue:
    """`RetryQueue` on one Redis. Safe to share between tasks and between pods."""

    def __init__(
        self,
        redis: Redis,
        *,
        queue_key: str = "payment_retry_queue",
        inflight_key: str = "payment_retry_inflight",
        payloads_key: str = "payment_retry_payloads",
    ) -> None:
        self._redis = redis
        self._keys = [queue_key, inflight_key, payloads_key]
        self._schedule = redis.register_script(_SCHEDULE)
        self._claim = redis.register_script(_CLAIM)
        self._ack = redis.register_script(_ACK)
        self._reclaim = redis.register_script(_RECLAIM)
        self._next_due = redis.register_script(_NEXT_DUE)

    @classmethod
    def from_settings(cls, redis: Redis, settings: RetrySettings) -> RedisRetryQueue:
        return cls(
            redis, queue_key=settings.queue_key, inflight_key=settings.inflight_key, payloads_key=settings.payloads_key
        )

    async def schedule(self, envelope: EventEnvelope[PspCallRequested], *, delay_ms: int) -> bool:
        if delay_ms < 0:
            raise ValueError("delay_ms must be >= 0")
        if not isinstance(envelope.payload, PspCallRequested):
            raise ValueError(f"only a PSP call request can be retried, not {envelope.event_type.value}")
        member = retry_member(envelope)
        try:
            queued = await self._schedule(keys=self._keys, args=[member, envelope_to_bytes(envelope), int(delay_ms)])
        except (RedisError, OSError) as error:
            raise DependencyUnavailable("redis", f"cannot schedule retry {member}: {error}") from error
        return bool(queued)

    async def claim_due(self, limit: int) -> list[ClaimedRetry]:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        try:
            members, payloads = await self._claim(keys=self._keys, args=[limit])
        except (RedisError, OSError) as error:
            raise DependencyUnavailable("redis", f"cannot claim due retries: {error}") from error
        claimed: list[ClaimedRetry] = []
        unreadable: list[str] = []
        for raw_member, payload in zip(members, payloads, strict=True):
            member = _text(raw_member)
            message = _message_of(member, payload)
            if message is None:
                unreadable.append(member)
            else:
                claimed.append(ClaimedRetry(member=member, message=message))
        if unreadable:
            # Never publishable; left in flight they would come back forever. Our own writes cannot produce them,
            # so this means a foreign writer or a format change: drop loudly.
            redis_retry_dropped_total.inc(len(unreadable))
            await self.ack(unreadable)
        return claimed

    async def ack(self, members: Sequence[str]) -> None:
        if not members:
            return
        try:
            await self._ack(keys=self._keys, args=list(members))
        except (RedisError, OSError) as error:
            raise DependencyUnavailable("redis", f"cannot ack {len(members)} retries: {error}") from error

    async def reclaim_expired(self, visibility_timeout_ms: int) -> int:
        if visibility_timeout_ms < 0:
            raise ValueError("visibility_timeout_ms must be >= 0")
        total = 0
        try:
            while True:
                moved = int(await self._reclaim(keys=self._keys[:2], args=[visibility_timeout_ms, RECLAIM_BATCH]))
                total += moved
                if moved < RECLAIM_BATCH:
                    return total
        except (RedisError, OSError) as error:
            raise DependencyUnavailable("redis", f"cannot reclaim retries (moved {total}): {error}") from error

    async def next_due_in_ms(self) -> int | None:
        try:
            wait = int(await self._next_due(keys=self._keys[:1]))
        except (RedisError, OSError) as error:
            raise DependencyUnavailable("redis", f"cannot read the next due retry: {error}") from error
        return None if wait < 0 else wait

    async def sizes(self) -> tuple[int, int]:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zcard(self._keys[0])
                pipe.zcard(self._keys[1])
                queued, inflight = await pipe.execute()
        except (RedisError, OSError) as error:
            raise DependencyUnavailable("redis", f"cannot read retry queue sizes: {error}") from error
        return int(queued), int(inflight)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _message_of(member: str, payload: bytes | str | None) -> OutboundMessage | None:
    """The stored envelope, published unchanged, addressed to its topic and keyed by its paymentOrderId."""
    if payload is None:
        log.error("retry_payload_missing", member=member)
        return None
    raw = payload.encode() if isinstance(payload, str) else payload
    try:
        envelope = envelope_from_bytes(raw)
    except EnvelopeDecodeError as error:
        log.error("retry_payload_unreadable", member=member, error=str(error))
        return None
    return OutboundMessage(
        topic=envelope.topic.value, key=envelope.aggregate_id, value=raw, headers=EventHeaders.of(envelope)
    )
