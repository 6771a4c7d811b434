"""The room store's connection to PostgreSQL: one connection behind a lock (the event loop saves
rooms, the worker thread puts latents), with two rules that bound how long a slow, stopped or
unreachable database can hold up the thread that calls it, above all the event loop:

- **No connecting on the event loop.** A lost connection is opened again by a background thread.
  A call made on the event loop waits at most ``loop_connect_wait_s`` for that attempt and
  otherwise fails at once with StoreError ("database unavailable"); calls from other threads wait
  for the attempt (``connect_timeout_s``) before they take the lock, so the loop never waits
  behind them. After a failed attempt the next starts ``retry_s`` later.
- **A deadline per transaction.** A watchdog thread cuts the connection (shuts its socket down)
  when one transaction has run for ``call_timeout_s``: the server's ``statement_timeout`` never
  fires when the server hangs (stopped, swapping) or the network drops packets, and TCP alone would
  wait for many minutes. The call fails with StoreError (nothing is half-written: the transaction
  never committed) and the connection is opened again in the background.

So a call on the event loop blocks it for as long as the database takes to answer it (or the call
in flight on another thread), at most ``call_timeout_s``, and then at most
``loop_connect_wait_s`` per call until the database is back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from server.storage.store import StoreError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PgConfig:
    """How the store connects (the URL is ``postgresql://user[:password]@host:port/db``)."""

    url: str
    connect_timeout_s: float = 3.0  # a connection attempt gives up after this long
    statement_timeout_s: float = 10.0  # one statement gives up after this long (on the server)
    retry_s: float = 1.0  # after a failed connection attempt, the next waits this long
    call_timeout_s: float = 12.0  # a transaction still running after this long is cut off (here)
    loop_connect_wait_s: float = 0.05  # how long a call on the event loop waits for a connection


def redact(url: str) -> str:
    """The URL without its password (for logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class PgConnection:
    """The store's connection (see the module docstring); :meth:`transaction` is all it offers."""

    def __init__(self, config: PgConfig) -> None:
        self.config = config
        self.path = redact(config.url)
        self.cut = 0  # transactions the watchdog cut off
        self._lock = threading.Lock()  # one transaction at a time
        self._db: psycopg.Connection[Any] | None = None
        self._closed = False
        self._state = threading.Condition()  # the background attempt: _opener, _fresh, _failure
        self._opener: threading.Thread | None = None
        self._fresh: psycopg.Connection[Any] | None = None
        self._failure = ""
        self._next_try = 0.0
        self._wd = threading.Condition()  # the watchdog: _deadline, _running
        self._deadline: float | None = None
        self._running: psycopg.Connection[Any] | None = None
        threading.Thread(target=self._watch, name="pg watchdog", daemon=True).start()

    @contextmanager
    def transaction(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        """One transaction under the lock; database errors (and a cut-off) become StoreError
        naming ``what``."""
        if not _on_event_loop():
            self.wait_for_connection()  # without the lock: the event loop may go on meanwhile
        with self._lock:
            db = self._connect()
            self._arm(db)
            try:
                with db.transaction():
                    yield db
            except psycopg.OperationalError as e:  # the connection is gone: open a new one
                self._drop()
                raise StoreError(f"{what}: database unavailable: {self._why(e)}".strip()) from e
            except psycopg.Error as e:
                if db.closed or db.broken:
                    self._drop()
                raise StoreError(f"{what}: {self._why(e)}".strip()) from e
            finally:
                self._disarm()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop()
        with self._wd:
            self._wd.notify_all()
        with self._state:
            fresh, self._fresh = self._fresh, None
        if fresh is not None:
            fresh.close()

    # --- connecting ---------------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        """The open connection (the lock is held): a new one opened in the background, waited
        for at most ``loop_connect_wait_s``; else StoreError."""
        if self._closed:
            raise StoreError("the room store is closed")
        if self._db is not None and not self._db.closed:
            return self._db
        self._db = None
        with self._state:
            self._start_opening()
            self._state.wait_for(lambda: self._opener is None, timeout=self.config.loop_connect_wait_s)
            fresh, self._fresh = self._fresh, None
            failure = self._failure
        if fresh is None:
            why = f": {failure}" if failure else "; connecting"
            raise StoreError(f"database unavailable ({self.path}){why}")
        self._db = fresh
        return fresh

    def wait_for_connection(self) -> None:
        """When there is no connection, wait for an attempt to open one (``connect_timeout_s``),
        without holding the lock (calls off the event loop; opening the store)."""
        if self._closed or (self._db is not None and not self._db.closed):
            return
        with self._state:
            try:
                self._start_opening()
            except StoreError:
                return  # too soon after a failed attempt: _connect says so
            self._state.wait_for(lambda: self._opener is None)

    def _start_opening(self) -> None:
        """Start a background attempt unless one runs or has succeeded (``_state`` is held);
        StoreError when the last one failed less than ``retry_s`` ago."""
        if self._fresh is not None or self._opener is not None:
            return
        now = time.monotonic()
        if now < self._next_try:
            raise StoreError(f"database unavailable ({self.path}); retrying in {self._next_try - now:.1f} s")
        self._failure = ""
        self._opener = threading.Thread(target=self._open, name="pg connect", daemon=True)
        self._opener.start()

    def _open(self) -> None:
        """The background attempt to connect (one at a time)."""
        conn: psycopg.Connection[Any] | None = None
        failure = ""
        try:
            conn = psycopg.connect(
                self.config.url,
                autocommit=True,
                connect_timeout=max(1, round(self.config.connect_timeout_s)),
                options=f"-c statement_timeout={int(self.config.statement_timeout_s * 1000)}",
            )
        except psycopg.Error as e:
            failure = " ".join(str(e).split()) or type(e).__name__
        with self._state:
            self._opener = None
            if conn is not None and self._closed:
                conn.close()
                conn = None
            self._fresh, self._failure = conn, failure
            if conn is None:
                self._next_try = time.monotonic() + self.config.retry_s
            self._state.notify_all()

    def _drop(self) -> None:
        if self._db is not None:
            with suppress(psycopg.Error, OSError):
                self._db.close()
        self._db = None

    @staticmethod
    def _why(e: BaseException) -> str:
        return " ".join(str(e).split()) or type(e).__name__

    # --- the watchdog -------------------------------------------------------------------------

    def _arm(self, db: psycopg.Connection[Any]) -> None:
        with self._wd:
            self._deadline = time.monotonic() + self.config.call_timeout_s
            self._running = db
            self._wd.notify_all()

    def _disarm(self) -> None:
        with self._wd:
            self._deadline = self._running = None

    def _watch(self) -> None:
        with self._wd:
            while not self._closed:
                if self._deadline is None or self._running is None:
                    self._wd.wait()
                    continue
                left = self._deadline - time.monotonic()
                if left > 0:
                    self._wd.wait(left)
                    continue
                db, self._deadline, self._running = self._running, None, None
                self.cut += 1
                log.error(
                    "store: a database call ran for %.1f s: cutting the connection (%s)",
                    self.config.call_timeout_s,
                    self.path,
                )
                _shut(db)


def _shut(db: psycopg.Connection[Any]) -> None:
    """Shut the connection's socket down: the call blocked on it returns with an error at once."""
    with suppress(OSError, psycopg.Error):
        s = socket.socket(fileno=os.dup(db.pgconn.socket))
        try:
            s.shutdown(socket.SHUT_RDWR)
        finally:
            s.close()
