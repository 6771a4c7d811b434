"""Real Redis and PostgreSQL servers for the cluster tests and benchmarks: each on a free loopback
port in a temporary folder of its own, started and stopped (and restarted on the same port and
data, for the fault tests) by the test.

Debian's packages: ``redis-server`` and PostgreSQL 15 (``initdb``, ``postgres`` under
``/usr/lib/postgresql/<version>/bin``). PostgreSQL refuses to run as root: when the tests run as
root, ``initdb`` and ``postgres`` run as an unprivileged user (``postgres`` if it exists, else
``nobody``) through ``setpriv``, and the temporary folder is given to that user. When a binary is
missing, :func:`redis_missing` / :func:`postgres_missing` say why (the fixtures skip with it).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REDIS_SERVER = os.environ.get("LIVEDRAG_REDIS_SERVER", "/usr/bin/redis-server")
PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _port_open(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            text = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            raise RuntimeError(f"{what} did not start on port {port}:\n{text}")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes] | None, sig: int, timeout: float = 20.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


# --- Redis -----------------------------------------------------------------------------------------


def redis_missing() -> str | None:
    """Why a Redis server cannot be started here (None: it can)."""
    if not os.access(REDIS_SERVER, os.X_OK) and shutil.which("redis-server") is None:
        return f"redis-server not installed ({REDIS_SERVER}; Debian: apt-get install redis-server)"
    return None


class RedisServer:
    """``redis-server`` on 127.0.0.1 and a free port, no persistence (a restart empties it, as a
    crash of a cache-only Redis would)."""

    def __init__(self, directory: Path | None = None, port: int | None = None) -> None:
        self.dir = Path(directory or tempfile.mkdtemp(prefix="livedrag-redis-"))
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = REDIS_SERVER if os.access(REDIS_SERVER, os.X_OK) else shutil.which("redis-server")
        assert binary, redis_missing()
        cmd = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(self.dir), "--daemonize", "no", "--protected-mode", "no", "--logfile", "",
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_port(self.port, self.proc, "redis-server", self.log_path)
        return self

    def stop(self) -> None:
        _stop(self.proc, signal.SIGTERM)
        self.proc = None

    def kill(self) -> None:
        _stop(self.proc, signal.SIGKILL)
        self.proc = None

    def restart(self, down_s: float = 0.0) -> None:
        """Stop it (its data goes: nothing is saved), wait ``down_s``, start it on the same port."""
        self.stop()
        time.sleep(down_s)
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- PostgreSQL -------------------------------------------------------------------------------------


def pg_bin() -> Path | None:
    """The folder holding ``initdb`` and ``postgres`` (the newest Debian version), if any."""
    env = os.environ.get("LIVEDRAG_PG_BIN")
    candidates = [env] if env else sorted(glob.glob(PG_BIN_GLOB), key=_version_key, reverse=True)
    for d in candidates:
        if d and os.access(Path(d) / "initdb", os.X_OK) and os.access(Path(d) / "postgres", os.X_OK):
            return Path(d)
    initdb = shutil.which("initdb")
    if initdb and shutil.which("postgres"):
        return Path(initdb).resolve().parent
    return None


def _version_key(path: str) -> tuple[int, ...]:
    part = Path(path).parent.name
    return tuple(int(x) for x in part.split(".") if x.isdigit())


def postgres_missing() -> str | None:
    """Why a PostgreSQL server cannot be started here (None: it can)."""
    if pg_bin() is None:
        return "PostgreSQL not installed (initdb/postgres; Debian: apt-get install postgresql)"
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        return "running as root and setpriv (util-linux) is missing: cannot start postgres as a user"
    return None


def _run_as() -> pwd.struct_passwd | None:
    """The user postgres runs as when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and neither a postgres nor a nobody user exists")


class PostgresServer:
    """A PostgreSQL cluster in a temporary folder, listening on 127.0.0.1 and a free port (trust
    authentication, superuser ``livedrag``, database ``livedrag``)."""

    user = "livedrag"
    database = "livedrag"

    def __init__(self, directory: Path | None = None, port: int | None = None) -> None:
        self.bin = pg_bin()
        assert self.bin is not None, postgres_missing()
        # not under pytest's tmp_path: that folder is private to root, the server's user must enter it
        self.dir = Path(directory or tempfile.mkdtemp(prefix="livedrag-pg-"))
        self.data = self.dir / "data"
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / "postgres.log"
        self.owner = _run_as()
        self._initialised = False

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def _cmd(self, *args: str) -> list[str]:
        if self.owner is None:
            return list(args)
        return [
            "setpriv", f"--reuid={self.owner.pw_uid}", f"--regid={self.owner.pw_gid}", "--clear-groups",
            "--", *args,
        ]  # fmt: skip

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        if self.owner is not None:
            env.update(HOME=str(self.dir), USER=self.owner.pw_name, LOGNAME=self.owner.pw_name)
        return env

    def _initdb(self) -> None:
        if self.owner is not None:
            os.chown(self.dir, self.owner.pw_uid, self.owner.pw_gid)
        os.chmod(self.dir, 0o700)
        cmd = self._cmd(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust",
            "--no-locale", "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        done = subprocess.run(cmd, env=self._env(), capture_output=True, cwd=self.dir, timeout=120)
        if done.returncode != 0:
            out = done.stdout.decode() + done.stderr.decode()
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{out}")
        self._initialised = True

    def start(self) -> PostgresServer:
        if not self._initialised:
            self._initdb()
            first = True
        else:
            first = False
        cmd = self._cmd(
            str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.dir}",
            "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "max_connections=100",
            "-c", "shared_buffers=32MB",
        )  # fmt: skip
        log = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:  # its own session: a ^C to the tests does not stop it before the tests do
            self.proc = subprocess.Popen(
                cmd, env=self._env(), stdout=log, stderr=log, cwd=self.dir, start_new_session=True
            )
        finally:
            os.close(log)
        _wait_port(self.port, self.proc, "postgres", self.log_path)
        # an open port is not a ready server: after a restart it may still say "the database
        # system is starting up" for a while (slower on a loaded machine)
        self._wait_ready(create=first)
        return self

    def _wait_ready(self, create: bool = True) -> None:
        """The server accepts connections to the livedrag database (created on first start)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        psql = self.bin / "psql"
        sql = f"CREATE DATABASE {self.database}" if create else "SELECT 1"
        while True:
            done = subprocess.run(
                [str(psql), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-d", "postgres",
                 "-c", sql],
                env=self._env(), capture_output=True, timeout=30,
            )  # fmt: skip
            if done.returncode == 0 or b"already exists" in done.stderr:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres never accepted connections: {done.stderr.decode()}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Fast shutdown (SIGINT: open transactions are rolled back, connections closed)."""
        _stop(self.proc, signal.SIGINT)
        self.proc = None

    def kill(self) -> None:
        _stop(self.proc, signal.SIGKILL)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
