"""The test servers themselves: real Redis and PostgreSQL start on loopback, answer, restart."""

from __future__ import annotations

import os

import psycopg
import redis

from tests.services import PostgresServer, RedisServer


def test_redis_answers_and_a_restart_empties_it(fresh_redis: RedisServer):
    """redis-server answers on its port; after a restart on the same port it is empty."""
    r = redis.Redis.from_url(fresh_redis.url)
    r.set("k", "v")
    assert r.get("k") == b"v"
    fresh_redis.restart()
    r = redis.Redis.from_url(fresh_redis.url)
    assert r.get("k") is None and r.ping()
    r.close()


def test_postgres_runs_as_an_unprivileged_user_and_keeps_data_across_restarts(fresh_postgres: PostgresServer):
    """PostgreSQL starts (as a user other than root when the tests run as root) and keeps a
    committed row across a stop and start on the same port."""
    with psycopg.connect(fresh_postgres.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (7)")
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        if os.geteuid() == 0:  # while connected: the backend process ends with its connection
            assert os.stat(f"/proc/{pid}").st_uid != 0
    fresh_postgres.stop()
    fresh_postgres.start()
    with psycopg.connect(fresh_postgres.url) as conn:
        assert conn.execute("SELECT x FROM t").fetchone() == (7,)


def test_each_test_gets_its_own_database(pg_url: str, redis_url: str):
    """pg_url is an empty database; redis_url an empty Redis."""
    with psycopg.connect(pg_url) as conn:
        n = conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema='public'")
        assert n.fetchone() == (0,)
    with redis.Redis.from_url(redis_url) as r:
        assert r.dbsize() == 0
