"""The web client in a cluster: a page relayed through one node keeps working when the room's
owner dies (kill -9). The relay joins its members again on the new owner, so the page gets a second
``welcome`` and ``snapshot`` on its open connection (shared/protocol.md section 3); it must take
them as a fresh start: the state resyncs, edits and drags go on, frames stream, nothing throws.

Two real ``livedrag serve`` nodes on real Redis and PostgreSQL (tests/services.py,
tests/server/cluster/nodes.py), the tiny 32 px generator, Debian's Chromium.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.conftest import canvas_point, image_checksum, js
from tests.browser.live import edit_path
from tests.server.cluster.nodes import Cluster
from tests.services import PostgresServer, RedisServer, postgres_missing, redis_missing

pytestmark = pytest.mark.slow

COUNT_MESSAGES = """() => {
    window.__seen = {welcome: 0, snapshot: 0};
    const model = livedrag.model, receive = model.receive.bind(model);
    model.receive = (m) => { if (m.t in window.__seen) window.__seen[m.t] += 1; return receive(m); };
}"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Nodes A and B on a Redis and a PostgreSQL of this module's own."""
    why = redis_missing() or postgres_missing()
    if why:
        pytest.skip(why)
    tmp: Path = tmp_path_factory.mktemp("cluster-browser")
    with RedisServer() as redis_server, PostgresServer() as pg, Cluster(tmp, redis_server, pg.url, n=2) as c:
        yield c


def test_a_relayed_page_survives_the_owner_being_killed(cluster: Cluster, open_page):
    """A page on the node that does not own the room adds a pair, runs a short drag (its frames
    are numbered up to 8 or so) and sets the next drag's parameters; the owner is killed (kill -9).
    The surviving node takes the room and the page, on the same websocket, gets a second welcome
    (its member id back) and snapshot: the committed pair, drag and parameters are there, it is not
    offline, and a drag started from its Run button streams frames (numbered from 1 again by the
    new owner) that it decodes and draws; stopping commits the drag. No uncaught error in the page."""
    room = cluster.create_room("A", seed=4)
    owner = cluster.wait_owner(room["room"])
    (relay,) = set(cluster.nodes) - {owner}
    page = open_page(cluster.nodes[relay].url + edit_path(room), name="Ada")
    page.wait_for_selector("#placeholder", state="hidden")
    assert cluster.health(relay)["cluster"]["relayed"] == {room["room"]: 1}
    page.evaluate("livedrag.app.edit(livedrag.protocol.msg.setParams({max_steps: 8, stop_dist: 0.1}))")
    page.mouse.move(*canvas_point(page, 0.25, 0.25))
    page.mouse.down()
    page.mouse.move(*canvas_point(page, 0.75, 0.75), steps=5)
    page.mouse.up()
    page.wait_for_function("livedrag.model.state.pairs.length === 1 && livedrag.model.pending.length === 0")
    page.click("#run")  # a first drag through the relay: the page's frame numbers go up to 8 or so
    page.wait_for_function(
        "livedrag.model.state.status === 'idle' && livedrag.model.state.history.size === 2", timeout=40_000
    )
    assert js(page, "livedrag.app.pipeline.lastSeq") >= 5
    page.evaluate("livedrag.app.edit(livedrag.protocol.msg.setParams({max_steps: 10000}))")
    page.wait_for_function(
        "livedrag.model.state.params.max_steps === 10000 && livedrag.model.pending.length === 0"
    )
    me, version = js(page, "livedrag.model.you"), js(page, "livedrag.model.version")
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))  # a reconnect would open a new one
    page.evaluate(COUNT_MESSAGES)

    cluster.nodes[owner].kill()
    page.wait_for_function("window.__seen.welcome >= 1 && window.__seen.snapshot >= 1", timeout=30_000)
    assert cluster.owner(room["room"]) == relay
    assert sockets == [] and js(page, "livedrag.conn.joined")
    assert js(page, "livedrag.model.you") == me and js(page, "livedrag.model.role") == "editor"
    assert js(page, "livedrag.model.version") == version
    assert js(page, "livedrag.model.state.pairs.length") == 1
    assert js(page, "livedrag.model.state.params.max_steps") == 10000
    assert not js(page, "document.body.classList.contains('offline')")
    assert page.locator("#run").is_enabled()

    assert js(page, "livedrag.model.state.history.size") == 2
    before = image_checksum(page)
    page.click("#run")  # the new owner numbers its frames from 1 again: the page must draw them
    page.wait_for_function(
        "livedrag.model.state.status === 'running' && livedrag.model.frame && livedrag.model.frame.seq >= 4"
        " && livedrag.app.pipeline.lastSeq === livedrag.model.frame.seq",
        timeout=40_000,
    )
    assert image_checksum(page) != before
    page.keyboard.press("Space")
    page.wait_for_function(
        "livedrag.model.state.status === 'idle' && livedrag.model.state.history.size === 3", timeout=20_000
    )
    assert js(page, "livedrag.model.lastEnd.reason") == "stopped"
    assert sockets == [] and js(page, "window.__seen.welcome") == 1
