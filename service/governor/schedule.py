"""The fleet's one schedule in Redis: atomic Lua scripts that reserve slots by Redis's clock.

GCRA with a burst of 1: the schedule is a single time, the next free slot (`tat`), moved on by one
spacing (`period / rate`) per slot reserved. A slot is a time, not a token held: a replica that dies
leaves at most the few slots it reserved for its own waiters (never more than `horizon` ahead) unused,
and nothing to release. Every time is Redis's (`TIME`, in microseconds); replicas only ever see
offsets from "now", so their own clocks never enter the schedule.

The pacing rules (the learned margin, backoff and recovery) are `pacing.py`'s, the in-process
governor's too: the scripts are generated from its numbers.

Keys, under one hash tag so a cluster keeps them on one shard, all expiring when unused:
- `<prefix>{<budget>}:pace`   hash: tat, rate, changed (last rate change), itat (interactive schedule),
  margin, quiet (slots reserved since the margin last changed), floor (what the margin may not shrink
  below) and taught (the floor the last RequestLimitExceeded raised it to)
- `<prefix>{<budget>}:alive`  sorted set: replica id -> last heartbeat
- `<prefix>{<budget>}:batch`  sorted set: replica id -> when it last asked for batch slots
- `<prefix>{<budget>}:held:<replica>`  sorted set: the replica's batch slots not yet due
- `<prefix>{<budget>}:callers` sorted set: "caller|replica" -> when the caller last had batch items
  waiting on the replica (callers hashed)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import redis.asyncio as redis

from service.governor import pacing

__all__ = ["Heartbeat", "Reservation", "Schedule", "ScheduleParameters"]

KEY_PREFIX = "moderation:budget:"
MICROS = 1_000_000

# Shared by both scripts: Redis's clock, the learned margin (`pacing.LearnedMargin`: `quiet` counts the
# slots reserved since it last changed), then the pace after recovery (an increase of `step` of the
# budget per period without a rate-limit error, after one quiet period: `pacing.recovered`): linear, so
# it never overshoots.
_PACE = f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window, qps, step = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tat', 'rate', 'changed', 'itat', 'margin', 'quiet', 'floor',
  'taught')
local tat = tonumber(state[1]) or now
local rate = tonumber(state[2]) or qps
local changed = tonumber(state[3]) or 0
local itat = tonumber(state[4]) or now
-- Held within their bounds: a hash written by hand, or by an older replica, cannot stall the pace.
local margin_floor = tonumber(state[7]) or {pacing.LEAST!r}
margin_floor = math.min({pacing.MOST!r}, math.max({pacing.LEAST!r}, margin_floor))
local margin = math.min({pacing.MOST!r}, math.max(margin_floor, tonumber(state[5]) or {pacing.START!r}))
local quiet = tonumber(state[6]) or 0
local taught = tonumber(state[8]) or {pacing.NOT_TAUGHT!r}
taught = math.min({pacing.NOT_TAUGHT!r}, math.max({pacing.LEAST!r}, taught))
local horizon = tonumber(ARGV[9])
-- Times ahead of Redis's clock were read from a clock that has since stepped back (an NTP step, a VM
-- resume, a failover to a replica with another clock): held to now, or to what the schedule may hold.
changed = math.min(changed, now)
local period = window * (1 + margin)
-- Nothing is reserved further ahead than the horizon, and one period more.
local ahead = now + horizon + period
tat = math.min(tat, ahead)
itat = math.min(itat, ahead)
-- A replica back from its fallback share has sent on it until not_before: the schedule (fresh, after a
-- restart, or stale) starts no earlier, or IMS's sliding second would hold both.
tat = math.max(tat, tonumber(ARGV[7]))
if rate > qps then rate = qps end
if rate < qps and now - changed >= 2 * period then
  local periods = math.floor((now - changed) / period) - 1
  rate = math.min(qps, rate + step * qps * periods)
  changed = changed + periods * period
end
local ttl = tonumber(ARGV[4])
-- The replicas alive, and how many of them have gone silent: each of those may be cut off from Redis and
-- spending its fallback share, so the schedule holds that share back until it counts them dead.
local function alive(id, heartbeat, silent_after)
  redis.call('ZADD', KEYS[2], now, id)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - heartbeat)
  redis.call('PEXPIRE', KEYS[2], ttl)
  return redis.call('ZCARD', KEYS[2]), redis.call('ZCOUNT', KEYS[2], '-inf', now - silent_after)
end
"""

# ARGV: window_us, qps, step, ttl_ms, id, heartbeat_us, not_before_us, silent_us, horizon_us, count,
# class (0 batch, 1 interactive, 2 background), max_wait_us, interactive_share, then the callers with
# batch items waiting here.
# Returns {slots reserved, the first slot's time (none reserved: when one would fit), spacing, replicas,
# rate, now, this replica's part of the pace for batch items, margin, the margin the slots were spaced
# under (before this reservation's shrink, if any), then over how many replicas each caller's batch items
# wait}: Redis's times in microseconds, the rate in thousandths a second, the part and the margins in
# millionths.
_RESERVE = (
    _PACE
    + f"""
local replicas, silent = alive(ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[8]))
local count, interactive, background = tonumber(ARGV[10]), ARGV[11] == '1', ARGV[11] == '2'
local max_wait, share = tonumber(ARGV[12]), tonumber(ARGV[13])
local spacing = period / (rate * (replicas - silent) / replicas)
local spaced_under = margin
-- This replica's part of the pace for batch items, and over how many replicas each of its callers'
-- batch items wait (the batch branch below counts them).
local part, spread = nil, {{}}
local function answer(reserved, at)
  if part == nil then
    part = 1 / math.max(1, redis.call('ZCOUNT', KEYS[3], now - period, '+inf'))
  end
  local reply = {{reserved, math.ceil(at), math.floor(spacing), replicas, math.floor(rate * 1000), now,
    math.floor(part * 1000000), math.floor(margin * 1000000), math.floor(spaced_under * 1000000)}}
  for i = 14, #ARGV do
    reply[#reply + 1] = spread[ARGV[i]] or 1
  end
  return reply
end
local first = math.max(tat, now)
-- No slot is reserved further than `horizon` ahead: all a replica losing Redis must wait out.
local last = now + math.min(max_wait, horizon)
if background then
  -- Tasks take only slots nobody reserved: the schedule's free time within a quarter of the horizon
  -- while any replica has stream items waiting (they keep the schedule the whole horizon ahead, so no
  -- task gets a slot), within the horizon when none has.
  local lookahead = horizon / 4
  if redis.call('ZCOUNT', KEYS[3], now - period, '+inf') == 0 then
    lookahead = horizon
  end
  last = math.min(last, now + lookahead)
  if first > last then
    return answer(0, first - lookahead)
  end
elseif not interactive then
  -- Batch items reserve only what they will use soon, and each busy replica its part of that, so a
  -- replica far from Redis gets its turn too.
  redis.call('ZADD', KEYS[3], now, ARGV[5])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - period)
  redis.call('PEXPIRE', KEYS[3], ttl)
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  redis.call('ZREMRANGEBYSCORE', KEYS[4], string.format('(%.0f', ahead), '+inf')
  -- Every caller with batch items waiting anywhere gets an equal part of the pace, split evenly over the
  -- replicas it waits on: a replica's part is its callers' parts ("caller|replica", by last seen).
  for i = 14, #ARGV do
    redis.call('ZADD', KEYS[5], now, ARGV[i] .. '|' .. ARGV[5])
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - period)
  redis.call('PEXPIRE', KEYS[5], ttl)
  local callers = 0
  if #ARGV < 14 then
    part = 1 / redis.call('ZCARD', KEYS[3])
  end
  for _, entry in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do
    local caller = string.match(entry, '^(.*)|')
    if spread[caller] == nil then
      spread[caller] = 0
      callers = callers + 1
    end
    spread[caller] = spread[caller] + 1
  end
  if #ARGV >= 14 then
    part = 0
    for i = 14, #ARGV do
      part = part + 1 / spread[ARGV[i]]
    end
    part = part / callers
  end
  local quota = math.max(1, math.floor(horizon / spacing * part))
  count = math.min(count, quota - redis.call('ZCARD', KEYS[4]))
  if count <= 0 then
    local oldest = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
    return answer(0, tonumber(oldest[2]))
  end
elseif share < 1 and redis.call('ZCOUNT', KEYS[3], now - period, '+inf') > 0 then
  -- While batch items wait anywhere, interactive calls run ahead of them by their share only.
  local ispacing = spacing / math.max(share, 0.001)
  local allowed = math.floor((now + horizon - math.max(itat, now)) / ispacing) + 1
  if allowed <= 0 then
    return answer(0, itat - horizon)
  end
  count = math.min(count, allowed)
  itat = math.max(itat, now) + count * ispacing
end
local reserved = 0
while reserved < count and first + reserved * spacing <= last do
  reserved = reserved + 1
end
if reserved == 0 then
  -- Nothing fits yet: how long until the first free slot does.
  return answer(0, now + first - last)
end
quiet = quiet + reserved
if quiet >= math.max(1, math.ceil({pacing.SHRINK_AFTER!r} * qps)) then
  margin_floor = math.max({pacing.LEAST!r}, margin_floor - {pacing.FORGET!r})
  margin = math.max(margin_floor, margin - {pacing.SHRINK!r})
  quiet = 0
end
redis.call('HSET', KEYS[1], 'tat', first + reserved * spacing, 'rate', rate, 'changed', changed,
  'itat', itat, 'margin', margin, 'quiet', quiet, 'floor', margin_floor)
redis.call('PEXPIRE', KEYS[1], ttl)
if not interactive and not background then
  for i = 0, reserved - 1 do
    local slot = first + i * spacing
    redis.call('ZADD', KEYS[4], slot, slot)
  end
  redis.call('PEXPIRE', KEYS[4], math.ceil((first + reserved * spacing - now) / 1000) + 1000)
end
return answer(reserved, first)
"""
)

# ARGV: window_us, qps, step, ttl_ms, id, heartbeat_us, not_before_us, silent_us, horizon_us, decrease
# factor (0: only a heartbeat), the margin the refused request was sent under (millionths).
# At most one raise of the margin's floor (and decrease, if the margin cannot explain the refusal) per
# period, whichever replica reports it. Returns
# {replicas, rate * 1000, now, margin * 1e6}.
_HEARTBEAT = (
    _PACE
    + f"""
local replicas = alive(ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[8]))
local factor = tonumber(ARGV[10])
if factor > 0 and now - changed >= period then
  changed = now
  local sent_under = math.max(0, tonumber(ARGV[11]) / 1000000)
  -- `pacing.unexplained`: only a refusal the learned margin cannot explain lowers the pace too.
  if sent_under > taught - {pacing.SHRINK!r} then
    rate = math.max(1, rate * factor)
  end
  taught = math.min({pacing.MOST!r}, sent_under + {pacing.FLOOR_ABOVE!r})
  margin_floor = taught
  margin = math.max(margin, margin_floor)
  quiet = 0
end
redis.call('HSET', KEYS[1], 'tat', tat, 'rate', rate, 'changed', changed, 'itat', itat, 'margin', margin,
  'quiet', quiet, 'floor', margin_floor, 'taught', taught)
redis.call('PEXPIRE', KEYS[1], ttl)
return {{replicas, math.floor(rate * 1000), now, math.floor(margin * 1000000)}}
"""
)


@dataclass(frozen=True)
class ScheduleParameters:
    qps: int
    # The window IMS counts requests in (a second); the learned margin is added to it.
    window: float
    increase_step: float
    decrease_factor: float
    # A replica missing heartbeats this long is no longer counted alive.
    heartbeat_timeout: float
    # A replica not heard from this long may be spending its fallback share: the others' pace leaves it.
    silent_after: float
    # How far ahead batch items may reserve: what a killed replica can leave unused.
    horizon: float
    interactive_share: float

    def common(self, replica: str, not_before: float) -> list[Any]:
        ttl_ms = int((self.heartbeat_timeout + 60) * 1000)
        return [
            int(self.window * MICROS),
            self.qps,
            self.increase_step,
            ttl_ms,
            replica,
            int(self.heartbeat_timeout * MICROS),
            int(not_before * MICROS),
            int(self.silent_after * MICROS),
            int(self.horizon * MICROS),
        ]


@dataclass(frozen=True)
class Reservation:
    count: int
    # Redis's time of the first slot reserved (or of when to ask again if none was), in seconds.
    first: float
    spacing: float
    replicas: int
    rate: float
    # Redis's clock when it reserved.
    now: float
    # This replica's part of the pace for batch items: its callers' parts of it.
    part: float
    # The fleet's learned margin.
    margin: float
    # The margin these slots were spaced under: `margin` before this reservation shrank it, if it did.
    spaced_under: float
    # Over how many replicas each caller asked about has batch items waiting.
    spread: dict[str, int]


@dataclass(frozen=True)
class Heartbeat:
    replicas: int
    # The fleet's pace, requests a second.
    rate: float
    # Redis's clock, in seconds.
    now: float
    margin: float


class Schedule:
    """One budget's schedule in one Redis; a replica's calls to it. Raises redis' errors as they come."""

    def __init__(self, client: redis.Redis, budget_key: str, parameters: ScheduleParameters) -> None:
        self._client = client
        self.budget_key = budget_key
        self.parameters = parameters
        base = f"{KEY_PREFIX}{{{budget_key}}}"
        self._keys = [f"{base}:pace", f"{base}:alive", f"{base}:batch"]
        self._base = base
        self._reserve = client.register_script(_RESERVE)
        self._heartbeat = client.register_script(_HEARTBEAT)

    async def disconnect(self) -> None:
        """Drop pooled connections: after an outage, a restarted Redis would fail each one once."""
        await self._client.connection_pool.disconnect()

    async def clock(self) -> float:
        """Redis's clock, in seconds: a probe that leaves no trace in the schedule."""
        seconds, micros = await self._client.time()
        return seconds + micros / MICROS

    def slice(self, name: str, qps: int) -> Schedule:
        """A schedule of its own for a slice of this budget (a route's, a caller's)."""
        return Schedule(self._client, f"{self.budget_key}:{name}", replace(self.parameters, qps=qps))

    async def reserve(
        self,
        replica: str,
        count: int,
        *,
        interactive: bool,
        max_wait: float,
        not_before: float = 0.0,
        callers: Sequence[str] = (),
        background: bool = False,
    ) -> Reservation:
        """Slots for `count` waiters, none before `not_before` (Redis's time, in seconds); `callers`: the
        callers whose batch items wait on this replica (hashed: no name of theirs is written).
        `background`: tasks' slots, only from time nobody else reserved."""
        p = self.parameters
        args = [
            *p.common(replica, not_before),
            count,
            2 if background else int(interactive),
            max(0, int(max_wait * MICROS)),
            p.interactive_share,
        ]
        keys = [*self._keys, f"{self._base}:held:{replica}", f"{self._base}:callers"]
        (
            reserved,
            first,
            spacing,
            replicas,
            rate,
            now,
            part,
            margin,
            spaced_under,
            *spread,
        ) = await self._reserve(keys=keys, args=[*args, *callers])
        return Reservation(
            int(reserved),
            int(first) / MICROS,
            int(spacing) / MICROS,
            int(replicas),
            int(rate) / 1000,
            int(now) / MICROS,
            int(part) / MICROS,
            int(margin) / MICROS,
            int(spaced_under) / MICROS,
            dict(zip(callers, (int(replicas_of) for replicas_of in spread), strict=True)),
        )

    async def heartbeat(
        self, replica: str, *, sent_under: float | None = None, not_before: float = 0.0
    ) -> Heartbeat:
        """The fleet as Redis sees it, after a decrease (and a higher floor under the margin) if the
        backend said RequestLimitExceeded to a request sent under the margin `sent_under`; the schedule's
        next slot no earlier than `not_before`."""
        factor = 0 if sent_under is None else self.parameters.decrease_factor
        replicas, rate, now, margin = await self._heartbeat(
            keys=self._keys,
            args=[*self.parameters.common(replica, not_before), factor, int((sent_under or 0) * MICROS)],
        )
        return Heartbeat(int(replicas), int(rate) / 1000, int(now) / MICROS, int(margin) / MICROS)
