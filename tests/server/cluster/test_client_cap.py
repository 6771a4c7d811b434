"""The per-client live-room cap (``max_rooms_per_client``) holds across the nodes of a cluster:
rooms created through any node count (in Redis), a client whose rooms are all in use gets 429 with
Retry-After through every node, and otherwise its least recently used idle room is archived by its
owner to make space, as on one node (tests/server/edge/test_lifecycle.py)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import httpx
import psycopg
import pytest
import redis

from tests.server.cluster.nodes import Cluster, join_raw
from tests.services import PostgresServer, RedisServer

pytestmark = pytest.mark.slow
_dbs = itertools.count(1)


@pytest.fixture(scope="module")
def cluster(
    redis_server: RedisServer, postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Nodes A and B, each allowing 2 live rooms per client."""
    tmp = tmp_path_factory.mktemp("cap")
    with redis.Redis.from_url(redis_server.url) as r:
        r.flushall()
    name = f"cap{next(_dbs)}"
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    url = postgres_server.url.rsplit("/", 1)[0] + "/" + name
    with Cluster(tmp, redis_server, url, n=2, extra_args=("--max-rooms-per-client", "2")) as c:
        yield c


def create(cluster: Cluster, on: str) -> httpx.Response:
    url = cluster.nodes[on].url
    return httpx.post(url + "/api/rooms", json={}, headers={"origin": url}, timeout=30)


async def test_a_clients_rooms_on_every_node_count_against_its_cap(cluster: Cluster):
    """Two rooms created through A and B, someone in each: a third is refused with 429 and
    Retry-After through either node. Once one room is left, the next creation archives it (its
    owner lets it go) and succeeds; so does the next, archiving the new room nobody joined rather
    than the one in use; the archived room still opens, history intact."""
    first, second = create(cluster, "A").json(), create(cluster, "B").json()
    cluster.wait_owner(first["room"]), cluster.wait_owner(second["room"])
    ed1 = await join_raw(cluster, "B", first)
    await ed1.send({"t": "add_pair", "pair": "p1", "handle": [8.0, 8.0], "target": [20.0, 14.0]})
    await ed1.next("op", op="add_pair")
    ed2 = await join_raw(cluster, "A", second)
    for node in ("A", "B"):
        refused = create(cluster, node)
        assert refused.status_code == 429, (refused.status_code, refused.text, cluster.logs())
        assert int(refused.headers["retry-after"]) >= 1 and "in use" in refused.json()["error"]
    await ed1.close()
    for _ in range(50):  # the owner applies the relayed leave within moments
        third = create(cluster, "B")
        if third.status_code != 429:
            break
        await asyncio.sleep(0.1)
    assert third.status_code == 201, (third.text, cluster.logs())
    assert cluster.owner(first["room"]) is None  # archived: no node holds it
    cluster.wait_owner(third.json()["room"])
    fourth = create(cluster, "A")  # archives the third room (nobody ever joined it), not the second
    assert fourth.status_code == 201, fourth.text
    assert cluster.owner(third.json()["room"]) is None and cluster.owner(second["room"]) is not None
    again = await join_raw(cluster, "A", first)
    assert [p["id"] for p in again.state["pairs"]] == ["p1"]
    for c in (again, ed2):
        await c.close()


async def test_concurrent_creations_cannot_pass_the_cap_together(redis_server: RedisServer):
    """Ten reservations at once for a cap of 3 (real Redis, one script each): three places, the
    others refused after trying to archive a room (none can be); another client is not affected.
    Past the placing window a room counts only while a node holds its lease."""
    from server.cluster.config import ClusterConfig
    from server.cluster.quota import ClientRooms
    from server.cluster.redisio import connect

    prefix = f"quota{next(_dbs)}"  # keys of its own: the module's cluster shares this Redis
    cfg = ClusterConfig(redis_server.url, "postgresql://unused/db", node_id="N", prefix=prefix)
    r = connect(redis_server.url)
    asked: list[str] = []

    async def archive(room_id: str) -> bool:
        asked.append(room_id)
        return False

    rooms = ClientRooms(r, cfg, life=lambda ids: {}, archive=archive)
    tokens = await asyncio.gather(*(rooms.reserve("10.0.0.1", 3) for _ in range(10)))
    placed = [t for t in tokens if t is not None]
    assert len(placed) == 3 and asked == []  # pending places are never asked to archive
    for i, token in enumerate(placed):
        await rooms.confirm("10.0.0.1", token, f"room{i}")
    assert await rooms.reserve("10.0.0.2", 3) is not None
    assert await rooms.reserve("10.0.0.1", 3) is None and sorted(asked) == ["room0", "room1", "room2"]
    rooms.pending_ms = 0  # the rooms were placed long ago
    await r.set(cfg.lease_key("room0"), "N")
    token = await rooms.reserve("10.0.0.1", 3)
    assert token is not None
    assert {m.decode() for m in await r.zrange(rooms.key("10.0.0.1"), 0, -1)} == {"room0", token}
    await r.delete(*[k async for k in r.scan_iter(f"{prefix}:*")])
    await r.aclose()
