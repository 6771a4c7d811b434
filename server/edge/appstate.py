"""What the app holds from start-up to shutdown: the models, the store, the rooms, the fan-out hub
and the worker (:class:`AppState`), with the checks the handlers share (origin, creation and
upload rates).

The default model is loaded in the lifespan (:meth:`AppState.start`; the others when a room first
needs them: ``server/edge/models.py``, ``server/worker/models.py``), which also opens the store,
archives the stored rooms (they load when opened), starts the worker and the rooms' life cycle
(idle rooms archived, long-unused ones deleted: ``_life_loop``). All model work runs on the
worker's thread; handlers only await it. :meth:`AppState.drain` commits running drags and closes
every connection with 4012 ``shutting_down``; :meth:`AppState.shutdown` then saves every room and
closes the store.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import torch
from starlette.requests import Request
from starlette.websockets import WebSocket

from server.core.limits import RoomLimits
from server.core.ratelimit import TokenBucket
from server.edge.config import Settings
from server.edge.fanout import Hub
from server.edge.models import build_pool
from server.engine.generator import Generator
from server.storage.lifecycle import Lifecycle
from server.storage.manager import RoomManager
from server.storage.store import Store
from server.worker.loop import Worker
from server.worker.models import ModelPool
from server.worker.modes import EngineMode
from server.worker.projector import Projector

log = logging.getLogger(__name__)


def pick_device(name: str | None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class AppState:
    """Everything the handlers share (one per app, built in the lifespan)."""

    settings: Settings
    G: Generator
    model: str
    device: torch.device
    store: Store
    manager: RoomManager
    hub: Hub
    worker: Worker
    started: float = field(default_factory=time.time)
    closing: bool = False
    connections: int = 0
    per_ip: dict[str, int] = field(default_factory=dict)
    create_buckets: OrderedDict[str, TokenBucket] = field(default_factory=OrderedDict)
    upload_buckets: dict[str, TokenBucket] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    samples: dict[str, bytes] = field(default_factory=dict)  # model -> its sample grid (JPEG)
    cluster: Any = None  # the cluster node (server.cluster.node.ClusterNode); None: one node
    _drained: bool = False
    _closed: bool = False

    @classmethod
    async def start(
        cls,
        settings: Settings,
        generator: Generator | None = None,
        modes: dict[str, EngineMode] | None = None,
        room_limits: RoomLimits | None = None,
        projector: Projector | None = None,
    ) -> AppState:
        device = pick_device(settings.device)
        store = await asyncio.to_thread(open_store, settings)
        pool = await build_pool(settings, device, store, generator, modes, projector)
        default = pool.get(pool.default)
        limits = room_limits or RoomLimits(
            max_rooms=settings.max_rooms, max_editors=settings.max_editors, max_viewers=settings.max_viewers
        )
        manager = RoomManager(store, limits, lifecycle=lifecycle_of(settings))
        stored = await asyncio.to_thread(manager.load)
        hub = Hub()
        worker = Worker(
            None,
            manager,
            hub,
            max_fps=settings.max_fps,
            tick_budget_s=settings.tick_budget_s,
            jpeg_quality=settings.jpeg_quality,
            trajectory_frames=settings.trajectory_frames,
            pti_steps=settings.pti_steps,
            pti_max_rooms=settings.pti_max_rooms,
            pool=pool,
        )
        state = cls(settings, default.G, default.name, device, store, manager, hub, worker)
        worker.start()
        if settings.cluster:
            from server.edge.cluster import start_cluster

            try:
                state.cluster = await start_cluster(state)
            except BaseException:
                await worker.stop(commit=False)
                store.close()
                raise
        loop = asyncio.get_running_loop()
        state.tasks.append(loop.create_task(state._presence_loop(), name="presence"))
        state.tasks.append(loop.create_task(state._life_loop(), name="room life cycle"))
        log.info(
            "model %s (%dx%d) on %s; %d room(s) stored in %s (each loads when opened); modes: %s",
            default.name,
            default.resolution,
            default.resolution,
            device,
            stored,
            store.path,
            ", ".join(default.available_modes),
        )
        return state

    @property
    def unavailable(self) -> dict[str, str]:
        """The default model's modes it lacks, and why (``predict`` only: what /api/info said)."""
        why = self.worker.default_model.unavailable
        return {k: v for k, v in why.items() if k != "encoder"}

    @property
    def models(self) -> ModelPool:
        return self.worker.models

    async def _presence_loop(self) -> None:
        """Throttled cursor positions whose turn has come (the latest always goes out)."""
        interval = 1.0 / float(self.manager.limits.cursor_hz)
        while True:
            await asyncio.sleep(interval)
            for room_id, outs in self.manager.flush_presence().items():
                room = self.manager.get(room_id)
                if room is not None:
                    self.hub.dispatch(room, outs)

    async def _life_loop(self) -> None:
        """Every few seconds: archive the rooms idle long enough, delete the long-unused ones
        (``RoomManager.sweep``), and let the worker drop what it held for them."""
        rules = self.manager.lifecycle
        interval = min(30.0, max(1.0, min(rules.idle_archive_s, rules.unjoined_archive_s) / 4))
        while True:
            await asyncio.sleep(interval)
            try:
                self.manager.sweep()
            except Exception:  # a bug: log it, the next sweep tries again
                log.exception("the rooms' life cycle sweep failed")
            self.worker.forget_gone()  # also rooms archived to make space since the last sweep

    async def drain(self) -> None:
        """Commit running drags, then close every connection with 4012 (idempotent)."""
        if self._drained:
            return
        self._drained = True
        self.closing = True
        try:
            await self.worker.stop(commit=True)
        except Exception:
            log.exception("stopping the worker failed")
        senders = self.hub.senders()
        for s in senders:
            s.close("shutting_down")
        await asyncio.gather(*(s.wait(timeout=3.0) for s in senders), return_exceptions=True)
        if senders:
            log.info("closed %d connection(s) with 4012 shutting_down", len(senders))

    async def shutdown(self) -> None:
        await self.drain()
        if self._closed:
            return
        self._closed = True
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        failed = self.manager.persist_all()
        if failed:
            log.error("%d room(s) could not be saved at shutdown", failed)
        if self.cluster is not None:
            await self.cluster.stop()  # leases released: other nodes take the rooms at once
        self.store.close()
        log.info("stopped")

    # --- checks -----------------------------------------------------------------------------

    def origin_allowed(self, origin: str | None, host: str | None) -> bool:
        if origin is None:
            return True  # not a browser: the capability decides
        allowed = self.settings.origins
        if "*" in allowed:
            return True
        origin = origin.strip().rstrip("/").lower()
        if origin in (o.lower() for o in allowed):
            return True
        netloc = urlsplit(origin).netloc
        return bool(netloc) and host is not None and netloc == host.strip().lower()

    def allow_create(self, client: str) -> float:
        """Spend one of ``client``'s room creations: 0 when allowed, else the seconds until the
        next one is (its token bucket: ``rooms_per_minute``, burst twice that)."""
        bucket = self.create_buckets.get(client)
        if bucket is None:
            rate = self.settings.rooms_per_minute / 60.0
            burst = max(1.0, 2 * self.settings.rooms_per_minute)
            bucket = self.create_buckets[client] = TokenBucket(rate, burst)
            while len(self.create_buckets) > 4096:
                self.create_buckets.popitem(last=False)
        self.create_buckets.move_to_end(client)
        if bucket.take():
            return 0.0
        return max(1.0, math.ceil((1.0 - bucket.tokens) / bucket.rate))

    def allow_upload(self, room_id: str) -> bool:
        bucket = self.upload_buckets.get(room_id)
        if bucket is None:
            rate = self.settings.uploads_per_minute
            bucket = self.upload_buckets[room_id] = TokenBucket(rate / 60.0, max(1.0, 2 * rate))
            for gone in [r for r in self.upload_buckets if r not in self.manager.rooms]:
                del self.upload_buckets[gone]
        return bucket.take()


def app_state(request: Request | WebSocket) -> AppState:
    return request.app.state.livedrag


def client_ip(conn: Request | WebSocket) -> str:
    return conn.client.host if conn.client else "unknown"


def client_key(ip: str) -> str:
    """Whom per-client limits count: the IPv4 address, or an IPv6 address's /64 network (one
    host usually holds a whole /64); anything else as it is."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)


def open_store(settings: Settings) -> Any:
    """The room store: SQLite in the data directory, or in a cluster PostgreSQL (fenced per room)."""
    if settings.database_url is not None:
        from server.cluster.pgstore import PgStore

        return PgStore(settings.database_url, fenced=True)
    return Store(settings.data_dir)


def lifecycle_of(settings: Settings) -> Lifecycle:
    """The rooms' life cycle rules from the settings."""
    return Lifecycle(
        idle_archive_s=settings.room_idle_archive_s,
        unjoined_archive_s=settings.room_unjoined_archive_s,
        delete_after_s=settings.room_delete_after_s,
        delete_unjoined_s=settings.room_delete_unjoined_s,
        max_rooms_per_client=settings.max_rooms_per_client,
    )
