"""One node of the cluster: joins Redis, announces itself, owns rooms (leases), relays the others.

What the edge uses (:class:`ClusterNode`): :meth:`~ClusterNode.place` (where a room lives: here,
or which node; an orphaned or new room is given to the node that should take it),
:meth:`~ClusterNode.relay_join` / :meth:`~ClusterNode.relay_send` / :meth:`~ClusterNode.relay_leave`
for a connection to a room owned elsewhere, :meth:`~ClusterNode.publish` (the fan-out's remote
hook), :meth:`~ClusterNode.joined_locally`, :meth:`~ClusterNode.prepare` (a new room),
:meth:`~ClusterNode.reserve_room` / :meth:`~ClusterNode.confirm_room` (the per-client room cap,
``server.cluster.quota``), :meth:`~ClusterNode.models` / :meth:`~ClusterNode.model_url` (every
node's models, ``server.cluster.catalog``) and :meth:`~ClusterNode.stop`. It asks the node for
the rest through :class:`~server.cluster.owner.LocalNode`.

Loops: lease renewal (``renew_s``: a lost lease unloads the room and closes its local
connections with ``shutting_down``, whose clients reconnect; a lease Redis forgot is re-taken when
the database still names this node's epoch), the heartbeat (``heartbeat_s``: the announcement,
the relays' owner checks, members of vanished nodes, rooms whose saves failed saved again).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from server.cluster.catalog import merge_models, node_for_model
from server.cluster.config import ClusterConfig
from server.cluster.owner import LocalNode, Owner
from server.cluster.pgstore import PgStore
from server.cluster.placement import NodeInfo, choose_node
from server.cluster.quota import ClientRooms
from server.cluster.redisio import LOST, RETAKEN, Forwarder, Leases, Outbox, Registry, connect
from server.cluster.relay import LocalSender, Relay, RelaySession
from server.cluster.wire import archive_entry, claim_entry
from server.core.members import JoinRefused
from server.core.outgoing import Outgoing
from server.core.room import Joined, Room
from server.storage.manager import RoomGone, RoomManager, RoomsFull
from server.storage.store import StoreError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placement:
    """Where a room lives: on this node (``local``) or on ``owner`` (reachable at ``url``)."""

    local: bool
    owner: str
    url: str = ""


class ClusterNode:
    """This process as a node of the cluster (see the module docstring)."""

    def __init__(self, cfg: ClusterConfig, manager: RoomManager, store: PgStore, local: LocalNode) -> None:
        self.cfg, self.manager, self.store, self.local = cfg, manager, store, local
        self.r = connect(cfg.redis_url)
        self.leases = Leases(self.r, cfg)
        self.registry = Registry(self.r, cfg)
        self.outbox = Outbox(self.r)
        self.forwarder = Forwarder(self.r, cfg, on_overflow=lambda: self.relay.resync_all("queue overflow"))
        self.owner = Owner(
            cfg, self.r, manager, local, self.outbox, self._asked_to_claim, self._asked_to_archive
        )
        self.client_rooms = ClientRooms(self.r, cfg, store.rooms_life, self.archive_room)
        self.relay = Relay(cfg, self.r, self.forwarder, self.leases.owner, self.place)
        self._claims: dict[str, asyncio.Task[bool]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._missing: dict[str, float] = {}  # node -> since when its members' node is gone
        self._redis_run: str | None = None  # Redis' run id (a new one: it restarted)
        self.started = time.time()

    @property
    def id(self) -> str:
        return self.cfg.node_id

    async def start(self) -> None:
        """Announce this node and start its loops (Redis must answer: else ConnectionError)."""
        await self.r.ping()
        self.owner._node_last = await self._now_id()
        await self._heartbeat()
        loop = asyncio.get_running_loop()
        for name, coro in (
            ("outbox", self.outbox.run()),
            ("forwarder", self.forwarder.run()),
            ("owner streams", self.owner.run()),
            ("relay", self.relay.run()),
            ("leases", self._every(self.cfg.renew_s, self._renew)),
            ("heartbeat", self._every(self.cfg.heartbeat_s, self._heartbeat)),
        ):
            self._tasks.append(loop.create_task(coro, name=f"cluster {name}"))
        log.info(
            "cluster: node %s joined (Redis %s, database %s)",
            self.id,
            _redact(self.cfg.redis_url),
            self.store.path,
        )

    async def stop(self) -> None:
        """Leave: release every lease (the rooms are saved already) so that others take them at once."""
        deadline = time.monotonic() + 2.0
        while self.forwarder._queue and time.monotonic() < deadline:  # relayed leaves go out
            await asyncio.sleep(0.05)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            for room_id in list(self.owner.rooms):
                await self.leases.release(room_id)
            await self.registry.withdraw(self.id)
        except (RedisError, OSError) as e:
            log.warning("cluster: leaving cleanly failed (%s); leases expire in %.0f s", e, self.cfg.lease_s)
        await self.r.aclose()
        log.info("cluster: node %s left", self.id)

    # --- the edge's interface -----------------------------------------------------------------

    def publish(self, room: Room, outs: list[Outgoing]) -> None:
        self.owner.publish(room, outs)

    def joined_locally(self, room_id: str, joined: Joined) -> None:
        self.owner.joined_locally(room_id, joined)

    def owns(self, room_id: str) -> bool:
        return room_id in self.owner.rooms and self.manager.get(room_id) is not None

    async def relay_join(self, room_id: str, owner: str, hello: bytes, sender: LocalSender) -> RelaySession:
        return await self.relay.join(room_id, owner, hello, sender)

    def relay_send(self, s: RelaySession, data: bytes) -> None:
        self.relay.send(s, data)

    def relay_leave(self, s: RelaySession) -> None:
        self.relay.leave(s)

    def deleted(self, room_id: str) -> None:
        """An editor deleted the room (here): members on other nodes are closed, the lease goes."""
        owned = self.owner.rooms.get(room_id)
        if owned is None:
            return
        for member, rm in list(owned.remote.items()):
            self.owner._close_remote(room_id, member, rm, "room_closed")
        self.owner.remove(room_id)
        self.store.drop_fence(room_id)
        self._spawn(self.leases.release(room_id))

    def summary(self) -> dict[str, Any]:
        """For /healthz: this node, the rooms it owns, the rooms it relays (members per room)."""
        return {
            "node": self.id,
            "owned": sorted(self.owner.rooms),
            "relayed": {r.id: len(r.sessions) for r in self.relay.rooms.values()},
            "nodes": sorted(self.registry.nodes),
            "published": self.outbox.sent,
            "frames_replaced": self.outbox.replaced,
            "relayed_messages": self.relay.delivered,
            "resyncs": self.relay.resyncs,
        }

    def _spawn(self, aw: Any) -> None:
        task = asyncio.get_running_loop().create_task(self._quietly(aw))
        self._tasks.append(task)
        task.add_done_callback(lambda t: t in self._tasks and self._tasks.remove(t))

    def prepare(self, room_id: str) -> None:
        """A room was just created (stored, not loaded): place it now, so the first join is quick."""
        self._spawn(self.place(room_id))

    # --- the per-client room cap (server.cluster.quota) ----------------------------------------

    async def reserve_room(self, client: str, cap: int) -> str | None:
        """A place for one more live room of ``client`` (a token for :meth:`confirm_room`);
        None: its ``cap`` live rooms are all in use (HTTP 429). With Redis away the room is not
        counted ("": the creation goes on, as placing it waits for Redis anyway)."""
        try:
            return await self.client_rooms.reserve(client, cap)
        except (RedisError, OSError) as e:
            log.warning("cluster: counting the rooms of a client failed (%s): not counted", e)
            return ""

    async def confirm_room(self, client: str, token: str, room_id: str | None) -> None:
        """The reserved place is ``room_id``'s (None: the room could not be created)."""
        if not token:
            return
        try:
            if room_id is None:
                await self.client_rooms.cancel(client, token)
            else:
                await self.client_rooms.confirm(client, token, room_id)
        except (RedisError, OSError) as e:
            log.warning("cluster: counting a new room failed (%s)", e)

    async def archive_room(self, room_id: str) -> bool:
        """Have the room's owner archive it if nobody is in it and no run uses it (to make space
        for its client's new room). True: it is archived (its lease released)."""
        owner = await self.leases.owner(room_id)
        if owner is None:
            return False  # archived already, or being placed: nothing to archive
        if owner == self.id:
            return await self._archive_here(room_id)
        reply = f"{self.cfg.prefix}:reply:{self.id}:{secrets.token_hex(8)}"
        await self.r.xadd(
            self.cfg.node_stream(owner), archive_entry(room_id, reply), maxlen=1000, approximate=True
        )
        got = await self.r.blpop([reply], timeout=self.cfg.claim_wait_s)
        return got is not None and got[1] == b"1"

    def _asked_to_archive(self, room_id: str, reply: str) -> None:
        async def answer() -> None:
            done = await self._archive_here(room_id)
            async with self.r.pipeline(transaction=False) as p:
                p.lpush(reply, b"1" if done else b"0")
                p.pexpire(reply, 10_000)
                await p.execute()

        self._spawn(answer())

    async def _archive_here(self, room_id: str) -> bool:
        """Archive a room this node owns, unless someone is in it or it runs; then let it go."""
        if not self.owns(room_id) or not self.manager.archive(room_id, "to make space"):
            return False
        self.owner.remove(room_id)
        self.store.drop_fence(room_id)
        self.local.forget_gone()
        await self.leases.release(room_id)
        self._spawn(self._announce())
        return True

    def model_resolution(self, model: str) -> int | None:
        """The image size of a model some live node serves (None: no node serves it)."""
        for info in self.registry.nodes.values():
            if model in info.resolutions:
                return int(info.resolutions[model])
        return None

    def models(self, local: list[dict[str, Any]], default: str) -> list[dict[str, Any]]:
        """The models of every live node (``GET /api/models``): this node's cards (``local``)
        merged with the others' announcements (``server.cluster.catalog``)."""
        return merge_models(local, self.registry.nodes.values(), default, self.id)

    def model_url(self, model: str) -> str:
        """The HTTP address of another live node that serves ``model`` ("": none does)."""
        node = node_for_model(self.registry.nodes.values(), model, self.id)
        return node.url if node is not None else ""

    def url_of(self, node: str) -> str:
        info = self.registry.nodes.get(node)
        return info.url if info is not None else ""

    async def place(self, room_id: str) -> Placement:
        """Where the room lives, taking it here or asking the right node to when nobody has it.
        Raises RoomGone (no such room), JoinRefused (no node could take it in time)."""
        deadline = time.monotonic() + self.cfg.lease_s + self.cfg.claim_wait_s + 5.0
        asked: set[str] = set()
        while True:
            if self.owns(room_id):
                return Placement(True, self.id)
            if time.monotonic() > deadline:
                raise JoinRefused("server_full", "no node could take the room")
            claim = self._claims.get(room_id)
            if claim is not None:
                await asyncio.shield(claim)
                continue
            try:
                owner = await self.leases.owner(room_id)
            except (RedisError, OSError) as e:
                raise JoinRefused("internal_error", f"Redis: {e}") from None
            if owner == self.id:  # a lease without the room (a failed claim): give it back
                await self.leases.release(room_id)
                continue
            if owner is None and asyncio.get_running_loop().time() < self.relay.grace_until:
                await asyncio.sleep(0.1)  # Redis just restarted: the owner is re-taking its lease
                continue
            if owner is not None:
                if owner in self.registry.nodes:
                    return Placement(False, owner, self.url_of(owner))
                await asyncio.sleep(0.1)  # its node is gone: wait for the lease to expire
                continue
            model = await asyncio.to_thread(self._room_model, room_id)
            target = choose_node(self.registry.nodes.values(), model, self.id)
            if target is not None:
                self.registry.reserve(target.id)
            if target is None or target.id == self.id or target.id in asked:
                if not await self.claim(room_id):
                    await asyncio.sleep(0.05)
                continue
            asked.add(target.id)
            await self._ask(target.id, room_id)

    def _room_model(self, room_id: str) -> str:
        model = self.store.room_model(room_id)
        if model is None:
            raise RoomGone(room_id, deleted=self.store.deleted(room_id))
        return model

    async def _ask(self, node: str, room_id: str) -> None:
        """Ask ``node`` to take the room; wait until someone has (at most ``claim_wait_s``)."""
        await self.r.xadd(self.cfg.node_stream(node), claim_entry(room_id), maxlen=1000, approximate=True)
        deadline = time.monotonic() + self.cfg.claim_wait_s
        while time.monotonic() < deadline:
            if await self.leases.owner(room_id) is not None:
                return
            await asyncio.sleep(0.05)
        log.warning("cluster: node %s did not take room %s in time", node, room_id)

    def _asked_to_claim(self, room_id: str) -> None:
        self._spawn(self.claim(room_id))

    async def claim(self, room_id: str) -> bool:
        """Take the room: its lease, a new epoch, its state from the database. False: another
        node was quicker, or this one cannot hold it."""
        task = self._claims.get(room_id)
        if task is None:
            task = self._claims[room_id] = asyncio.get_running_loop().create_task(self._claim(room_id))
            task.add_done_callback(lambda _t: self._claims.pop(room_id, None))
        return await asyncio.shield(task)

    async def _claim(self, room_id: str) -> bool:
        if self.owns(room_id):
            return True
        start = await self._now_id()  # read the stream from here: nothing sent after the lease is missed
        if not await self.leases.acquire(room_id):
            return False
        try:
            epoch = await asyncio.to_thread(self.store.take_fence, room_id)
            self.manager.unload(room_id)  # a stale copy from an earlier ownership, if any
            self.manager.open(room_id)
        except (RoomGone, RoomsFull, StoreError) as e:
            log.warning("cluster: node %s cannot take room %s: %s", self.id, room_id, e)
            self.store.drop_fence(room_id)
            await self.leases.release(room_id)
            if isinstance(e, RoomGone):
                raise
            if isinstance(e, StoreError):  # the database is away: nobody can take rooms now
                raise JoinRefused("internal_error", "the room store is unavailable") from None
            return False
        self.owner.add(room_id, epoch, start)
        self.local.wake()
        self._spawn(self._announce())  # the others see this node's new load at once
        log.info("cluster: node %s took room %s (epoch %d)", self.id, room_id, epoch)
        return True

    # --- loops --------------------------------------------------------------------------------

    async def _every(self, seconds: float, fn: Any) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await fn()
            except (RedisError, OSError) as e:
                log.debug("cluster: %s: Redis: %s", fn.__name__, e)
            except Exception:
                log.exception("cluster: %s failed", fn.__name__)

    async def _renew(self) -> None:
        """Renew the leases of the rooms this node owns; give up those it lost; release those it
        no longer holds live (archived, deleted)."""
        for room_id in list(self.store.fenced_out & set(self.owner.rooms)):
            self.drop(room_id, "another node holds a newer epoch")
            await self.leases.release(room_id)  # whoever holds the newer epoch may take it now
        for room_id in [r for r in self.owner.rooms if self.manager.get(r) is None]:  # archived, deleted
            self.owner.remove(room_id)
            self.store.drop_fence(room_id)
            await self.leases.release(room_id)
            log.info("cluster: node %s released room %s", self.id, room_id)
        found = await self.leases.renew(list(self.owner.rooms))
        for room_id, state in found.items():
            if state == LOST:
                self.drop(room_id, "its lease is held by another node")
            elif state == RETAKEN:
                owned = self.owner.rooms.get(room_id)
                current = await asyncio.to_thread(self.store.fence_of, room_id)
                if owned is not None and current != owned.epoch:
                    self.drop(room_id, "another node took it while Redis was away")
                    await self.leases.release(room_id)

    def drop(self, room_id: str, why: str) -> None:
        """Stop owning a room at once (nothing is saved: another node owns it now)."""
        self.owner.remove(room_id)
        self.store.drop_fence(room_id)
        self.manager.unload(room_id)
        self.local.close_room(room_id, "shutting_down")  # its clients reconnect, through the new owner
        self.local.forget_gone()
        log.warning("cluster: node %s gave room %s up: %s", self.id, room_id, why)

    async def _check_restart(self) -> None:
        """A Redis that restarted (a new run id) forgot every lease, announcement and stream:
        owners re-take their leases at once, and for ``redis_grace_s`` no node claims an
        orphaned-looking room (its owner is about to re-take it)."""
        run_id = (await self.r.info("server")).get("run_id")
        if self._redis_run is not None and run_id != self._redis_run:
            log.warning("cluster: Redis restarted (its memory is empty): re-taking leases")
            self.relay.grace_until = asyncio.get_running_loop().time() + self.cfg.redis_grace_s
            await self._renew()
        self._redis_run = run_id

    async def _heartbeat(self) -> None:
        await self._check_restart()
        await self._announce()
        nodes = await self.registry.refresh()
        now = time.monotonic()
        members_of = {rm.node for owned in self.owner.rooms.values() for rm in owned.remote.values()}
        for node in members_of - set(nodes):
            self._missing.setdefault(node, now)
        self._missing = {n: t for n, t in self._missing.items() if n not in nodes}
        gone = {n for n, t in self._missing.items() if now - t >= self.cfg.node_ttl_s}
        if gone:
            self.owner.drop_nodes(set(nodes) | (set(self._missing) - gone))
            self._missing = {n: t for n, t in self._missing.items() if n not in gone}
        await self.relay.watch(asyncio.get_running_loop().time())
        self.manager.retry_failed()  # rooms whose saves failed while the database was away

    async def _announce(self) -> None:
        info = self.local.info()
        await self.registry.announce(
            NodeInfo(
                id=self.id,
                url=self.cfg.advertise_url,
                device=str(info.get("device", "cpu")),
                models=tuple(info.get("models", ())),
                resolutions=dict(info.get("resolutions", {})),
                loaded=tuple(info.get("loaded", ())),
                rooms=len(self.manager.rooms),
                free=int(info.get("free", 0)),
                connections=int(info.get("connections", 0)),
                started=self.started,
                cards=tuple(info.get("cards", ())),
            )
        )

    async def _now_id(self) -> str:
        sec, usec = await self.r.time()
        return f"{int(sec) * 1000 + int(usec) // 1000 - 1}-0"

    @staticmethod
    async def _quietly(aw: Any) -> None:
        try:
            await aw
        except (RoomGone, JoinRefused, RedisError, OSError, StoreError) as e:
            log.info("cluster: placing a room: %s", e)


def _redact(url: str) -> str:
    from server.cluster.pgconn import redact

    return redact(url)
