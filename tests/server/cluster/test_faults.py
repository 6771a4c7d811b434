"""Faults, with real processes: three ``livedrag serve`` nodes, a Redis and a PostgreSQL of the
test's own, killed and restarted.

- kill -9 of a room's owner mid-drag: within 10 s another node owns the room, members on the
  surviving nodes stay connected (a fresh welcome and snapshot), those on the dead node reconnect,
  the room continues from its last commit (the drag's checkpoint kept), nothing committed is lost;
- a Redis restart: nodes reconnect, the owner keeps its rooms, edits and frames flow again;
- PostgreSQL stopped for a while: edits are applied and fail to save clearly (storage_failed),
  are saved once it is back, and survive the owner's death afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from websockets.exceptions import ConnectionClosed

from tests.server.cluster.nodes import Cluster, RawClient, join_raw, resynced, until
from tests.services import PostgresServer, RedisServer

pytestmark = pytest.mark.slow
SECRET = "bobs-browser-secret-0123456789"
ADD = {"t": "add_pair", "pair": "p1", "handle": [8.0, 8.0], "target": [20.0, 14.0]}
FAILOVER_S = 10.0


@pytest.fixture
def cluster(tmp_path: Path, fresh_redis: RedisServer, fresh_postgres: PostgresServer) -> Iterator[Cluster]:
    with Cluster(tmp_path, fresh_redis, fresh_postgres.url, n=3, max_fps=10) as c:
        yield c


def others(cluster: Cluster, owner: str) -> tuple[str, str]:
    b, c = sorted(set(cluster.nodes) - {owner})
    return b, c


async def a_finished_drag(ed: RawClient, everyone: list[RawClient], steps: int = 3) -> None:
    await ed.send({"t": "set_params", "params": {"max_steps": steps}})
    await ed.send({"t": "start"})
    await asyncio.gather(*(c.next("status", status="idle") for c in everyone))


def stored_pairs(url: str, room: str) -> list[str]:
    import json

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pairs FROM rooms WHERE id=%s", (room,)).fetchone()
    return sorted(p["id"] for p in json.loads(row[0]))


async def test_kill_9_of_the_owner_mid_drag(cluster: Cluster):
    """The owner dies mid-drag: another node owns the room within 10 s; the editor (node B) and the
    spectator (node C) stay connected and get the room again from its last commit, with the drag's
    last checkpoint kept and reported; the viewer on the dead node reconnects elsewhere; the next
    drag's frames reach everyone."""
    room = cluster.create_room("A", seed=21)
    owner = cluster.wait_owner(room["room"])
    b, c = others(cluster, owner)
    ed = await join_raw(cluster, b, room, name="Bob", client_id="bob-page-0001", secret=SECRET)
    spec = await join_raw(cluster, c, room, "viewer", "Eve")
    ann = await join_raw(cluster, owner, room, "viewer", "Ann")
    await ed.send(ADD)
    await a_finished_drag(ed, [ed, spec, ann])
    committed = ed.state["history"]["size"]
    assert committed == 2
    await ed.send({"t": "set_params", "params": {"max_steps": 10000}})
    await ed.send({"t": "start"})
    await asyncio.gather(*(cl.next("status", status="running") for cl in (ed, spec)))
    await asyncio.gather(ed.drain(3.0), spec.drain(3.0), ann.drain(3.0))  # past a 2 s checkpoint
    assert len(spec.frames) > 2

    cluster.nodes[owner].kill()
    t0 = time.monotonic()
    new_owner = cluster.wait_owner(room["room"], not_=owner, timeout=FAILOVER_S + 2)
    took = time.monotonic() - t0
    assert new_owner in (b, c) and took <= FAILOVER_S, f"failover took {took:.1f} s"

    await asyncio.wait_for(asyncio.gather(resynced(ed), resynced(spec)), FAILOVER_S + 5)
    assert ed.welcome["you"] == "m1"  # the same member (its browser secret)
    for cl in (ed, spec):
        assert cl.state["status"] == "idle" and [p["id"] for p in cl.state["pairs"]] == ["p1"]
        assert cl.state["history"]["size"] == committed + 1  # the drag's checkpoint, committed
        assert cl.state["interrupted"] and cl.state["interrupted"]["kind"] == "drag", cl.state
        assert cl.state["interrupted"]["step"] > 0
    with pytest.raises((ConnectionClosed, TimeoutError)):
        await ann.drain(2.0)
        await ann.recv(5.0)
    ann2 = await join_raw(cluster, b, room, "viewer", "Ann")  # the dead node's member reconnects
    assert ann2.state == ed.state
    frames_before = len(spec.frames)
    await ed.send({"t": "set_params", "params": {"max_steps": 3}})
    await ed.send({"t": "start"})
    await asyncio.gather(*(cl.next("status", status="idle", timeout=30) for cl in (ed, spec, ann2)))
    assert len(spec.frames) > frames_before and ann2.frames
    assert ed.state == spec.state == ann2.state and ed.state["history"]["size"] == committed + 2
    for cl in (ed, spec, ann2, ann):
        with contextlib.suppress(Exception):
            await cl.close()


async def test_a_redis_restart_and_the_rooms_carry_on(cluster: Cluster, fresh_redis: RedisServer):
    """Redis restarts (its memory empty): the nodes reconnect, the owner keeps the room, relayed
    members are resynced, and edits and frames flow between the nodes again."""
    room = cluster.create_room("A", seed=22)
    owner = cluster.wait_owner(room["room"])
    b, c = others(cluster, owner)
    ed = await join_raw(cluster, b, room, name="Bob", client_id="bob-page-0002")
    spec = await join_raw(cluster, c, room, "viewer", "Eve")
    await ed.send(ADD)
    await spec.next("op", op="add_pair")
    fresh_redis.restart(down_s=1.0)
    await until(lambda: cluster.owner(room["room"]) is not None, timeout=15)
    assert cluster.owner(room["room"]) == owner  # it re-took its lease; nobody else claimed the room
    cluster.wait_nodes(set(cluster.nodes), timeout=15)

    await asyncio.wait_for(asyncio.gather(resynced(ed), resynced(spec)), 20)
    await ed.send({"t": "move_point", "pair": "p1", "which": "target", "pos": [24.0, 18.0]})
    await spec.next("op", op="move_point", timeout=15)
    frames_before = len(spec.frames)
    await a_finished_drag(ed, [ed, spec])
    assert len(spec.frames) > frames_before and ed.state == spec.state
    assert ed.state["pairs"][0]["target"] == [24.0, 18.0]
    for cl in (ed, spec):
        await cl.close()


async def test_postgres_stopped_briefly_fails_clearly_and_loses_nothing(
    cluster: Cluster, fresh_postgres: PostgresServer
):
    """While PostgreSQL is down an edit still applies (everyone sees it) and everyone is told once
    that it could not be saved; when the database is back the node saves it by itself; after the
    owner is then killed the next owner has it."""
    room = cluster.create_room("A", seed=23)
    owner = cluster.wait_owner(room["room"])
    b, c = others(cluster, owner)
    ed = await join_raw(cluster, b, room, name="Bob", client_id="bob-page-0003")
    spec = await join_raw(cluster, c, room, "viewer", "Eve")
    await ed.send(ADD)
    await spec.next("op", op="add_pair")
    fresh_postgres.stop()
    try:
        await ed.send({"t": "add_pair", "pair": "p2", "handle": [4.0, 4.0], "target": [6.0, 6.0]})
        await spec.next("op", op="add_pair")
        err = await spec.next("error", timeout=15)
        assert err["code"] == "storage_failed"
        await ed.next("error", code="storage_failed", timeout=15)
    finally:
        fresh_postgres.start()
    await until(lambda: stored_pairs(fresh_postgres.url, room["room"]) == ["p1", "p2"], timeout=15, every=0.3)
    cluster.nodes[owner].kill()
    cluster.wait_owner(room["room"], not_=owner, timeout=FAILOVER_S + 2)

    await asyncio.wait_for(asyncio.gather(resynced(ed), resynced(spec)), FAILOVER_S + 10)
    assert sorted(p["id"] for p in spec.state["pairs"]) == ["p1", "p2"]
    for cl in (ed, spec):
        with contextlib.suppress(Exception):
            await cl.close()


async def test_the_members_of_a_dead_relay_node_leave_the_room(cluster: Cluster):
    """A node relaying a spectator is killed: the owner removes that spectator from the room
    (everyone else sees the count drop) within about two announcement lifetimes."""
    room = cluster.create_room("A", seed=24)
    owner = cluster.wait_owner(room["room"])
    b, c = others(cluster, owner)
    ann = await join_raw(cluster, owner, room, "viewer", "Ann")
    await join_raw(cluster, b, room, "viewer", "Eve")
    await ann.next("presence", ev="spectators", count=2, timeout=10)
    cluster.nodes[b].kill()
    t0 = time.monotonic()
    await ann.next("presence", ev="spectators", count=1, timeout=20)
    assert time.monotonic() - t0 <= 15
    await ann.close()
