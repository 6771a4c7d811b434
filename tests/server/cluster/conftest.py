"""Fixtures for the cluster tests: real Redis and PostgreSQL servers on loopback (``tests/services.py``).

``redis_server`` and ``postgres_server`` live for the whole session (skipped, with the reason, only
where the binaries are missing); ``redis_url`` flushes Redis for each test and ``pg_url`` gives each
test a database of its own. Fault tests that stop or restart a server start their own
(``fresh_redis``, ``fresh_postgres``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests.services import PostgresServer, RedisServer, postgres_missing, redis_missing

_db_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    why = redis_missing()
    if why:
        pytest.skip(why)
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    why = postgres_missing()
    if why:
        pytest.skip(why)
    with PostgresServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test."""
    import redis

    with redis.Redis.from_url(redis_server.url) as r:
        r.flushall()
    return redis_server.url


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    """A new, empty database on the session's PostgreSQL, for this test."""
    import psycopg

    name = f"t{next(_db_numbers)}"
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_server.url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
def fresh_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own (to stop and restart)."""
    why = redis_missing()
    if why:
        pytest.skip(why)
    with RedisServer() as server:
        yield server


@pytest.fixture
def fresh_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of this test's own (to stop and restart)."""
    why = postgres_missing()
    if why:
        pytest.skip(why)
    with PostgresServer() as server:
        yield server
