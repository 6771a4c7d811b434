"""The per-client cap on live rooms (``max_rooms_per_client``) across the cluster.

On one node the room manager counts the live rooms each client (an address) created. In a
cluster a room is created on one node and loaded by another (its owner), so the count lives in
Redis: ``<prefix>:client:<client>:rooms``, a sorted set of the client's room ids by creation time.
A room counts while some node holds its lease (it is live) or for ``pending_ms`` after its creation
(it is being placed); the others (archived, deleted, orphaned) are dropped from the set when it is
next read. One script reads, prunes and reserves a place atomically, so concurrent creations
through several nodes cannot pass the cap together: a creation first reserves a place with a
token, then confirms it with the room's id (or cancels it when the room could not be created).

At the cap, as on one node, the client's least recently used idle room is archived to make space
(never joined first, then the longest unused, from the store's life-cycle rows): its owner is
asked to archive it (:meth:`ClientRooms.make_space`; a room in use, someone in it or a run, is
not archived); only when none can be is the creation refused (429).

Redis keeps no durable state: a Redis restart forgets the counts (rooms created before it no
longer count), and a client's set expires ``ttl_ms`` after its last creation.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from server.cluster.config import ClusterConfig

log = logging.getLogger(__name__)

RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local pending, cap = tonumber(ARGV[1]), tonumber(ARGV[2])
local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local live = {}
for i = 1, #entries, 2 do
  local id, at = entries[i], tonumber(entries[i + 1])
  if now - at < pending or redis.call('EXISTS', ARGV[4] .. id .. ARGV[5]) == 1 then
    live[#live + 1] = id
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
if #live >= cap then return live end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return {}
"""
CONFIRM = """
local at = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
if at then redis.call('ZADD', KEYS[1], at, ARGV[2]) end
return at and 1 or 0
"""


class ClientRooms:
    """Live rooms per client, counted in Redis (see the module docstring). ``life`` gives the
    store's (joined, last used) of rooms (the order in which they are archived to make space);
    ``archive`` asks a room's owner to archive it (True: it did)."""

    def __init__(
        self,
        r: aioredis.Redis,
        cfg: ClusterConfig,
        life: Callable[[list[str]], dict[str, tuple[int, float]]],
        archive: Callable[[str], Awaitable[bool]],
        ttl_ms: int = 86_400_000,
    ) -> None:
        self.r, self.cfg, self.life, self.archive = r, cfg, life, archive
        self.pending_ms = int((cfg.lease_s + cfg.claim_wait_s + 5.0) * 1000)  # as long as placing may take
        self.ttl_ms = ttl_ms
        self._reserve = r.register_script(RESERVE)
        self._confirm = r.register_script(CONFIRM)
        lease = cfg.lease_key("\0")
        self._lease_prefix, self._lease_suffix = lease.split("\0")

    def key(self, client: str) -> str:
        return f"{self.cfg.prefix}:client:{client}:rooms"

    async def reserve(self, client: str, cap: int) -> str | None:
        """A place for one more live room of ``client`` (a token for :meth:`confirm` or
        :meth:`cancel`); None: ``cap`` live rooms, all in use. Raises RedisError, OSError."""
        token = "+" + secrets.token_hex(8)  # never a room id (those are URL-safe base64)
        deadline = time.monotonic() + self.cfg.claim_wait_s
        for _ in range(3):  # a place made may be taken by a concurrent creation: try again
            args = [self.pending_ms, cap, token, self._lease_prefix, self._lease_suffix, self.ttl_ms]
            live = await self._reserve(keys=[self.key(client)], args=args)
            if not live:
                return token
            rooms = [x.decode() for x in live if not x.startswith(b"+")]
            if not await self.make_space(client, rooms, deadline):
                return None
        return None

    async def confirm(self, client: str, token: str, room_id: str) -> None:
        """The reserved place is ``room_id``'s now."""
        await self._confirm(keys=[self.key(client)], args=[token, room_id])

    async def cancel(self, client: str, token: str) -> None:
        await self.r.zrem(self.key(client), token)

    async def make_space(self, client: str, rooms: list[str], deadline: float) -> bool:
        """Archive one of ``rooms`` (the client's live ones), the least recently used idle one
        first, and stop counting it. False: every one is in use (or being placed), or time ran
        out."""
        life = await asyncio.to_thread(self.life, rooms)
        order = sorted(rooms, key=lambda rid: _lru_key(life.get(rid)))
        for room_id in order:
            if time.monotonic() > deadline:
                log.info("cluster: no room archived in time to make space for a new one")
                return False
            if await self.archive(room_id):
                await self.r.zrem(self.key(client), room_id)  # even while young enough to count
                log.info("cluster: room %s archived to make space for its client's new room", room_id)
                return True
        return False


def _lru_key(life: Any) -> tuple[int, float]:
    """Never joined first, then the longest unused; rooms the store does not know last."""
    if life is None:
        return (2, math.inf)
    joined, used = life
    return (1 if joined else 0, float(used))
