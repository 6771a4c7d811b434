"""The PostgreSQL connection bounds how long a call can hold its thread (server/cluster/pgconn.py):
a transaction still running after ``call_timeout_s`` is cut off (also when the server hangs and
its own statement_timeout cannot fire), nothing of it is written, and a call on the event loop
never waits for a connection attempt longer than ``loop_connect_wait_s``."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import pytest

from server.cluster.pgstore import PgConfig, PgStore
from server.storage.store import StoreError
from tests.server.conftest import Harness, error_code
from tests.services import PostgresServer

ADD = {"t": "add_pair", "pair": "p1", "handle": [10.5, 20.5], "target": [30.5, 40.5]}


def test_a_transaction_past_its_deadline_is_cut_off_and_the_store_goes_on(pg_url: str):
    """A statement that outlives call_timeout_s (the server's statement_timeout is longer) fails
    with StoreError after about call_timeout_s; the next call opens a new connection and works."""
    store = PgStore(PgConfig(pg_url, call_timeout_s=1.0, statement_timeout_s=30.0))
    t0 = time.monotonic()
    with pytest.raises(StoreError, match="unavailable"), store._tx("sleeping") as db:
        db.execute("SELECT pg_sleep(5)")
    assert 0.9 < time.monotonic() - t0 < 3.0 and store.conn.cut == 1
    with store._tx("sleeping briefly") as db:
        db.execute("SELECT pg_sleep(0.2)")  # well within the deadline: not cut
    assert store.count_rooms() == 0 and store.conn.cut == 1
    store.close()


@contextmanager
def hung(server: PostgresServer) -> Iterator[None]:
    """The database server stopped (SIGSTOP: it accepts TCP connections and answers nothing)."""
    assert server.proc is not None
    pids = [server.proc.pid, *_children(server.proc.pid)]  # each backend is a session of its own
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def _children(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(entry))
    return found


def _quietly(fn: Callable[..., object], *args: object) -> None:
    with suppress(StoreError):
        fn(*args)


async def _timed_call(store: PgStore) -> tuple[float, bool]:
    t0 = time.monotonic()
    try:
        store.count_rooms()
        ok = True
    except StoreError:
        ok = False
    return time.monotonic() - t0, ok


def test_a_hung_server_holds_the_event_loop_once_per_call_timeout_then_never(fresh_postgres):
    """The server hangs mid-session: an edit's commit fails after call_timeout_s (storage_failed,
    the edit kept in memory, nothing written); from then on each call on the event loop fails within
    a few tens of milliseconds instead of waiting for a connection (also while another thread
    waits for one); once the server answers again
    a call on the loop reconnects and the next commit saves everything."""
    cfg = PgConfig(fresh_postgres.url, connect_timeout_s=1.0, call_timeout_s=1.5, retry_s=0.2)
    store = PgStore(cfg)
    h = Harness(store=store)
    a = h.join().member_id
    with hung(fresh_postgres):
        t0 = time.monotonic()
        out = h.send(a, ADD)
        assert error_code(out) == "storage_failed" and h.room.dirty
        assert 1.4 < time.monotonic() - t0 < 4.0 and store.conn.cut == 1
        for _ in range(5):  # e.g. the cluster's retry of dirty rooms every second
            took, ok = asyncio.run(_timed_call(store))
            assert not ok and took < 0.5, took
            time.sleep(0.3)
        worker = threading.Thread(target=_quietly, args=(store.get_latent, "k"))  # waits to connect
        while store.conn._opener is not None:  # the loop's calls started an attempt: let it end
            time.sleep(0.05)
        time.sleep(cfg.retry_s + 0.1)
        worker.start()
        time.sleep(0.1)
        assert store.conn._opener is not None  # an attempt runs (2 s); the worker waits for it
        took, ok = asyncio.run(_timed_call(store))
        assert not ok and took < 0.5, took  # not behind the worker thread's wait
        worker.join(5)
    deadline = time.monotonic() + 10
    while not asyncio.run(_timed_call(store))[1]:
        assert time.monotonic() < deadline, "the store never came back"
        time.sleep(0.1)
    h.send(a, {"t": "clear_mask"})
    assert not h.room.dirty
    again = PgStore(fresh_postgres.url)
    rec = again.load_room(h.room_id)
    assert rec is not None and [p.id for p in rec.pairs] == ["p1"]
    again.close()
    store.close()
