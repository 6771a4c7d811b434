"""The cluster's Redis side: the connection, room leases, the node registry, and the two ordered
queues that write to Redis (the owner's publications, latest frame wins; the relays' stream entries).

Leases (``<prefix>:room:<id>:owner`` = node id, ``SET NX PX``): taken by one node, renewed by a
script that extends the lease only while it still names that node, re-takes it when Redis has
forgotten it (a restart), and reports a lease held by someone else as lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from server.cluster.config import ClusterConfig
from server.cluster.placement import NodeInfo

log = logging.getLogger(__name__)

RENEW = """
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 2 end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

HELD, RETAKEN, LOST = 1, 2, 0  # what a renewal found


def connect(url: str) -> aioredis.Redis:
    """A client with timeouts: a dead Redis fails calls within seconds instead of hanging."""
    return aioredis.Redis.from_url(
        url, socket_timeout=5.0, socket_connect_timeout=2.0, health_check_interval=10, decode_responses=False
    )


class Leases:
    """Room ownership leases of one node."""

    def __init__(self, r: aioredis.Redis, cfg: ClusterConfig) -> None:
        self.r, self.cfg = r, cfg
        self._renew = r.register_script(RENEW)
        self._release = r.register_script(RELEASE)

    @property
    def ms(self) -> int:
        return int(self.cfg.lease_s * 1000)

    async def owner(self, room: str) -> str | None:
        v = await self.r.get(self.cfg.lease_key(room))
        return None if v is None else v.decode()

    async def acquire(self, room: str) -> bool:
        return bool(await self.r.set(self.cfg.lease_key(room), self.cfg.node_id, nx=True, px=self.ms))

    async def renew(self, rooms: list[str]) -> dict[str, int]:
        """Renew each room's lease: HELD, RETAKEN (Redis had forgotten it) or LOST."""
        if not rooms:
            return {}
        async with self.r.pipeline(transaction=False) as p:
            for room in rooms:
                await self._renew(keys=[self.cfg.lease_key(room)], args=[self.cfg.node_id, self.ms], client=p)
            found = await p.execute()
        return {room: int(v) for room, v in zip(rooms, found, strict=True)}

    async def release(self, room: str) -> None:
        await self._release(keys=[self.cfg.lease_key(room)], args=[self.cfg.node_id])


class Registry:
    """Nodes announce themselves (a key that expires without heartbeats) and list each other."""

    def __init__(self, r: aioredis.Redis, cfg: ClusterConfig) -> None:
        self.r, self.cfg = r, cfg
        self.nodes: dict[str, NodeInfo] = {}  # the last listing

    async def announce(self, info: NodeInfo) -> None:
        async with self.r.pipeline(transaction=False) as p:
            p.set(self.cfg.node_key(info.id), info.to_json(), px=int(self.cfg.node_ttl_s * 1000))
            p.sadd(self.cfg.nodes_key, info.id)
            await p.execute()

    async def withdraw(self, node: str) -> None:
        async with self.r.pipeline(transaction=False) as p:
            p.delete(self.cfg.node_key(node))
            p.srem(self.cfg.nodes_key, node)
            await p.execute()

    def reserve(self, node: str) -> None:
        """A room was just given to ``node``: count it before its next announcement does, so that
        rooms placed in quick succession spread out."""
        info = self.nodes.get(node)
        if info is not None:
            self.nodes[node] = replace(info, rooms=info.rooms + 1, free=max(0, info.free - 1))

    async def refresh(self) -> dict[str, NodeInfo]:
        """The live nodes (announcements not expired); forgets the others."""
        ids = sorted(m.decode() for m in await self.r.smembers(self.cfg.nodes_key))
        raw = await self.r.mget([self.cfg.node_key(i) for i in ids]) if ids else []
        nodes, gone = {}, []
        for node, value in zip(ids, raw, strict=True):
            if value is None:
                gone.append(node)
                continue
            try:
                nodes[node] = NodeInfo.from_json(value)
            except (ValueError, TypeError) as e:
                log.warning("cluster: unreadable announcement of node %s: %s", node, e)
        if gone:
            await self.r.srem(self.cfg.nodes_key, *gone)
        self.nodes = nodes
        return nodes


class Outbox:
    """The owner's publications, in order, with the latest frame per channel winning: while a
    batch is on its way to Redis, a newer frame replaces the one still waiting (its envelope number
    is given when it is sent, so a dropped frame leaves no gap). A failed batch is dropped: the
    relays see the gap in the numbers and resync their members."""

    def __init__(self, r: aioredis.Redis) -> None:
        self.r = r
        self._queue: deque[list[Any]] = deque()  # [channel, epoch, build, alive]
        self._frames: dict[str, list[Any]] = {}  # channel -> its waiting frame
        self._seq: dict[str, tuple[int, int]] = {}  # channel -> (epoch, last seq)
        self._wake = asyncio.Event()
        self.sent = self.replaced = self.failed = 0
        self._failing = False

    def put(self, channel: str, epoch: int, build: Callable[[int, int], bytes], frame: bool = False) -> None:
        item = [channel, epoch, build, True]
        if frame:
            old = self._frames.get(channel)
            if old is not None:
                old[3] = False
                self.replaced += 1
            self._frames[channel] = item
        self._queue.append(item)
        self._wake.set()

    def _number(self, channel: str, epoch: int) -> int:
        last_epoch, seq = self._seq.get(channel, (epoch, 0))
        seq = seq + 1 if last_epoch == epoch else 1
        self._seq[channel] = (epoch, seq)
        return seq

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = []
                while self._queue and len(batch) < 256:
                    channel, epoch, build, alive = item = self._queue.popleft()
                    if self._frames.get(channel) is item:
                        del self._frames[channel]
                    if alive:
                        batch.append((channel, build(epoch, self._number(channel, epoch))))
                if batch:
                    await self._send(batch)

    async def _send(self, batch: list[tuple[str, bytes]]) -> None:
        try:
            async with self.r.pipeline(transaction=False) as p:
                for channel, payload in batch:
                    p.publish(channel, payload)
                await p.execute()
        except (RedisError, OSError) as e:
            self.failed += len(batch)
            if not self._failing:
                log.warning("cluster: publishing to Redis failed (%s); relays will resync", e)
            self._failing = True
            await asyncio.sleep(0.2)
            return
        if self._failing:
            log.info("cluster: publishing to Redis works again")
        self._failing = False
        self.sent += len(batch)


class Forwarder:
    """A relay's stream entries for the owners, in order; while Redis is down they wait (and are
    retried) up to ``max_forward`` entries, then are dropped and ``on_overflow`` resyncs."""

    def __init__(self, r: aioredis.Redis, cfg: ClusterConfig, on_overflow: Callable[[], None]) -> None:
        self.r, self.cfg, self.on_overflow = r, cfg, on_overflow
        self._queue: deque[tuple[str, dict[str, Any]]] = deque()
        self._wake = asyncio.Event()
        self.sent = 0
        self.down_since: float | None = None
        self._generation = 0  # bumped when the queue is dropped

    def put(self, stream: str, fields: dict[str, Any]) -> None:
        if len(self._queue) >= self.cfg.max_forward:
            log.warning("cluster: %d entries wait for Redis: dropping them, members resync", len(self._queue))
            self._queue.clear()
            self._generation += 1
            self.on_overflow()
        self._queue.append((stream, fields))
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = [self._queue[i] for i in range(min(256, len(self._queue)))]
                generation = self._generation
                try:
                    async with self.r.pipeline(transaction=False) as p:
                        for stream, fields in batch:
                            p.xadd(stream, fields, maxlen=self.cfg.stream_maxlen, approximate=True)
                        await p.execute()
                except (RedisError, OSError) as e:
                    if self.down_since is None:
                        self.down_since = time.monotonic()
                        log.warning("cluster: forwarding to Redis failed (%s); retrying", e)
                    await asyncio.sleep(0.25)
                    continue
                if self.down_since is not None:
                    log.info("cluster: forwarding works again")
                    self.down_since = None
                if generation == self._generation:
                    for _ in batch:
                        with contextlib.suppress(IndexError):
                            self._queue.popleft()
                self.sent += len(batch)
