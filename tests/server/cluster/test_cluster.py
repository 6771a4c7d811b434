"""Three real ``livedrag serve`` nodes on Redis and PostgreSQL: any node serves any client.

An editor on node B and a spectator on node C of a room node A owns see the ops and frames a
member on A sees (the frame messages byte for byte: encoded once, never re-encoded); late joiners
anywhere get the snapshot and the latest frame at once; downloads and deletion work through any
node; a new room goes to a node that serves its model.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterator

import httpx
import psycopg
import pytest
import redis
from websockets.exceptions import ConnectionClosed

from tests.browser.live import make_checkpoint
from tests.server.cluster.nodes import Cluster, join_raw, resynced
from tests.services import PostgresServer, RedisServer

pytestmark = pytest.mark.slow
_dbs = itertools.count(1)
ADD = {"t": "add_pair", "pair": "p1", "handle": [8.0, 8.0], "target": [20.0, 14.0]}


def placed(cluster: Cluster, room: dict) -> tuple[str, str, str]:
    """(the room's owner, another node, the third node): rooms go where there is most room."""
    owner = cluster.wait_owner(room["room"])
    b, c = sorted(set(cluster.nodes) - {owner})
    return owner, b, c


@pytest.fixture(scope="module")
def cluster(
    redis_server: RedisServer, postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Nodes A, B, C on one Redis and one fresh database; C alone also serves the model "other"."""
    tmp = tmp_path_factory.mktemp("cluster")
    with redis.Redis.from_url(redis_server.url) as r:
        r.flushall()
    name = f"cluster{next(_dbs)}"
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    (tmp / "other").mkdir()
    other = make_checkpoint(tmp / "other", res=32, seed=1, name="other")
    c = Cluster(tmp, redis_server, postgres_server.url.rsplit("/", 1)[0] + "/" + name, n=3)
    c.nodes["C"].extra_args += ("--checkpoint", str(other))
    with c:
        yield c


async def test_editor_on_b_and_spectator_on_c_see_what_a_member_on_a_sees(cluster: Cluster):
    """Room owned by A; editor on B, spectator on C, viewer on A (whichever node took the room is
    A): the same ops in the same order, the same final state, and every frame they all got
    identical to the byte."""
    room = cluster.create_room("A", seed=5)
    a, b, c = placed(cluster, room)
    ed = await join_raw(cluster, b, room, name="Bob")
    spec = await join_raw(cluster, c, room, "viewer", "Eve")
    ann = await join_raw(cluster, a, room, "viewer", "Ann")
    everyone = [ed, spec, ann]
    await ed.send(ADD)
    await ed.send({"t": "set_params", "params": {"max_steps": 10}})
    await ed.send({"t": "start"})
    await asyncio.gather(*(c.next("status", status="idle") for c in everyone))
    ops = [[(m["v"], m["op"], m["by"]) for m in c.messages if m["t"] == "op"] for c in everyone]
    assert ops[0] == ops[1] == ops[2] and ops[0][-1][1] == "finish"
    assert ed.state == spec.state == ann.state and ed.state["history"]["size"] == 2
    common = set(ed.raw_frames) & set(spec.raw_frames) & set(ann.raw_frames)
    assert len(common) >= 3, (sorted(ed.raw_frames), sorted(spec.raw_frames), sorted(ann.raw_frames))
    for seq in common:
        assert ed.raw_frames[seq] == spec.raw_frames[seq] == ann.raw_frames[seq]
    health = cluster.health(b)["cluster"]
    assert health["relayed"] == {room["room"]: 1} and health["owned"] == []
    for c in everyone:
        await c.close()


async def test_a_late_joiner_on_another_node_gets_the_snapshot_and_latest_frame_at_once(cluster: Cluster):
    """After a drag, a spectator joining through another node gets welcome, snapshot and the
    room's latest frame (the same bytes the editor got last) without waiting for a tick."""
    room = cluster.create_room("A", seed=6)
    a, _b, c = placed(cluster, room)
    ed = await join_raw(cluster, a, room)
    await ed.send(ADD)
    await ed.send({"t": "set_params", "params": {"max_steps": 4}})
    await ed.send({"t": "start"})
    await ed.next("status", status="idle")
    await ed.drain(0.5)
    late = await join_raw(cluster, c, room, "viewer", "Late")
    assert late.state == ed.state and late.welcome["role"] == "viewer"
    frame = await late.next("frame", timeout=5)
    assert frame["seq"] == max(ed.raw_frames) and late.raw_frames[frame["seq"]] == ed.raw_frames[frame["seq"]]
    await ed.close()
    await late.close()


async def test_downloads_and_deletion_work_through_any_node(cluster: Cluster):
    """image.png through the other nodes (forwarded to the owner) equals the owner's own; DELETE
    through a third node closes every member, on every node, with 4014 room_closed."""
    room = cluster.create_room("A", seed=7)
    a, b, c = placed(cluster, room)
    ed = await join_raw(cluster, b, room)
    ann = await join_raw(cluster, a, room, "viewer", "Ann")
    path = f"/api/rooms/{room['room']}/image.png?cap={room['view_token']}"
    pngs = [httpx.get(cluster.nodes[n].url + path, timeout=30) for n in (a, b, c)]
    assert [r.status_code for r in pngs] == [200, 200, 200]
    assert pngs[0].content == pngs[1].content == pngs[2].content
    assert (
        httpx.get(cluster.nodes[c].url + f"/api/rooms/{room['room']}/image.png?cap=wrong").status_code == 403
    )
    gone = httpx.delete(
        cluster.nodes[c].url + f"/api/rooms/{room['room']}", headers={"x-livedrag-cap": room["edit_token"]}
    )
    assert gone.status_code == 200, gone.text
    for who in (ann, ed):
        with pytest.raises(ConnectionClosed) as closed:
            await who.drain(10)
            try:
                await who.recv(5)
            except TimeoutError:
                raise AssertionError(f"{who.welcome} not closed\n{cluster.logs()}") from None
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4014
    assert httpx.get(cluster.nodes[b].url + path).status_code == 410


async def test_a_new_room_goes_to_a_node_that_serves_its_model(cluster: Cluster):
    """A room of the model only C serves, created through A, is owned by C; members on A and B
    are relayed to it and its frames reach them."""
    room = cluster.create_room("A", seed=8, model="other")
    assert room["model"] == "other"
    assert cluster.wait_owner(room["room"]) == "C"
    ed = await join_raw(cluster, "A", room)
    spec = await join_raw(cluster, "B", room, "viewer", "Eve")
    await ed.send(ADD)
    await ed.send({"t": "set_params", "params": {"max_steps": 3}})
    await ed.send({"t": "start"})
    await asyncio.gather(*(c.next("status", status="idle") for c in (ed, spec)))
    assert ed.frames and spec.frames and ed.state == spec.state
    for c in (ed, spec):
        with contextlib.suppress(Exception):
            await c.close()


def test_nodes_announce_device_capacity_and_models(cluster: Cluster):
    """Each node's announcement names its device, free capacity and models (C also "other")."""
    import json

    with cluster.r() as r:
        infos = {n: json.loads(r.get(f"ld:node:{n}")) for n in "ABC"}
    assert all(i["device"] == "cpu" and i["free"] > 0 for i in infos.values())
    assert "other" in infos["C"]["models"] and "other" not in infos["A"]["models"]
    assert infos["C"]["resolutions"]["other"] == 32


async def test_a_node_whose_epoch_is_stale_commits_nothing_and_gives_the_room_up(cluster: Cluster):
    """Another node has taken the room over in the database (its epoch is newer): the owner's
    next commit is refused (storage_failed), it gives the room up (its local member is closed
    with 4012 and reconnects), a node takes the room from its last commit, and the relayed editor
    carries on there."""
    room = cluster.create_room("A", seed=9)
    a, b, _c = placed(cluster, room)
    ed = await join_raw(cluster, b, room, client_id="ed-page-0001")
    ann = await join_raw(cluster, a, room, "viewer", "Ann")
    await ed.send(ADD)
    await ann.next("op", op="add_pair")
    with psycopg.connect(cluster.database_url, autocommit=True) as conn:
        conn.execute("UPDATE room_fence SET epoch = epoch + 1 WHERE room_id=%s", (room["room"],))
    await ed.send({"t": "move_point", "pair": "p1", "which": "target", "pos": [30.0, 30.0]})
    assert (await ed.next("error", timeout=10))["code"] == "storage_failed"
    with pytest.raises(ConnectionClosed) as closed:
        await ann.drain(15)
        await ann.recv(5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4012
    await resynced(ed, timeout=20)
    assert ed.state["pairs"][0]["target"] == [20.0, 14.0]  # the refused commit is not there
    await ed.send({"t": "move_point", "pair": "p1", "which": "target", "pos": [25.0, 25.0]})
    await ed.next("op", op="move_point", timeout=10)
    assert not [m for m in ed.messages[-3:] if m["t"] == "error"]
    await ed.close()


async def test_an_upload_through_another_node_projects_on_the_owner(cluster: Cluster):
    """A picture posted to a node that does not own the room is forwarded to the owner: 202, the
    room projects it, the relayed editor sees the projection's frames and its commit; its
    upload.png comes back through any node."""
    from tests.server.edge.test_real_images import picture

    room = cluster.create_room("A", seed=10)
    a, b, c = placed(cluster, room)
    ed = await join_raw(cluster, b, room)
    body = picture()
    r = httpx.post(
        cluster.nodes[c].url
        + f"/api/rooms/{room['room']}/upload?cap={room['edit_token']}&method=optimize&steps=3",
        content=body,
        headers={"content-type": "image/png"},
        timeout=60,
    )
    assert r.status_code == 202, r.text
    await ed.next("status", status="projecting", timeout=30)
    await ed.next("status", status="idle", timeout=60)
    assert ed.frames and ed.state["history"]["size"] == 2 and ed.state["upload"] is not None
    got = httpx.get(cluster.nodes[b].url + f"/api/rooms/{room['room']}/upload.png?cap={room['view_token']}")
    assert got.status_code == 200 and got.content.startswith(b"\x89PNG")
    await ed.close()


def _models(cluster: Cluster, node: str, path: str = "/api/models") -> dict[str, dict]:
    got = httpx.get(cluster.nodes[node].url + path, timeout=30)
    assert got.status_code == 200, got.text
    return {m["name"]: m for m in got.json()["models"]}


async def test_every_node_lists_and_shows_the_models_of_every_live_node(cluster: Cluster):
    """GET /api/models and /api/info on A and B list "other", which only C serves, with C's card;
    its samples.jpg through A is C's grid (forwarded); once C has it loaded, A and B say loaded
    within a heartbeat; one default (the answering node's); a model no node serves is still 404."""
    for _ in range(50):  # a node that just started is seen at the others' next heartbeat
        if all("other" in _models(cluster, n) for n in ("A", "B")):
            break
        await asyncio.sleep(0.1)
    for node in ("A", "B"):
        listed, info = _models(cluster, node), _models(cluster, node, "/api/info")
        assert "other" in listed and "other" in info, sorted(listed)
        assert set(listed) == set(_models(cluster, "C"))
        assert [n for n, m in listed.items() if m["default"]] == [listed_default(cluster, node)]
    through_a = httpx.get(cluster.nodes["A"].url + "/api/models/other/samples.jpg", timeout=60)
    assert through_a.status_code == 200, through_a.text
    assert through_a.headers["content-type"] == "image/jpeg" and through_a.content.startswith(b"\xff\xd8")
    on_c = httpx.get(cluster.nodes["C"].url + "/api/models/other/samples.jpg", timeout=60)
    assert on_c.content == through_a.content  # C drew it once and keeps it
    on_c_card = _models(cluster, "C")["other"]
    assert on_c_card["loaded"] is True
    for _ in range(60):  # the next announcements carry it
        cards = [_models(cluster, n)["other"] for n in ("A", "B")]
        if all(c["loaded"] for c in cards):
            break
        await asyncio.sleep(0.1)
    assert cards == [on_c_card, on_c_card]
    missing = httpx.get(cluster.nodes["A"].url + "/api/models/nosuch/samples.jpg", timeout=30)
    assert missing.status_code == 404 and "nosuch" in missing.text


def listed_default(cluster: Cluster, node: str) -> str:
    return httpx.get(cluster.nodes[node].url + "/api/models", timeout=30).json()["default"]
