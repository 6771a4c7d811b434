"""Server settings: one frozen dataclass, filled from ``LIVEDRAG_*`` environment variables and then
from command-line flags (flags win).

Every field has a default that works on a laptop: ``livedrag serve`` with nothing set serves the
embedded model on 127.0.0.1:8000, on CUDA when present, keeping rooms in ``./data`` when run from
a source checkout and in ``$XDG_DATA_HOME/livedrag`` (``~/.local/share/livedrag``) otherwise.
Environment names are the field names upper-cased with the ``LIVEDRAG_`` prefix, e.g.
``LIVEDRAG_PORT=9000``, ``LIVEDRAG_ORIGINS="https://a.example,https://b.example"``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.core.protocol_types import LIMITS

ENV_PREFIX = "LIVEDRAG_"
LOG_LEVELS = ("debug", "info", "warning", "error")
REPO_ROOT = Path(__file__).resolve().parents[2]


def default_data_dir(cwd: Path | None = None) -> Path:
    """``./data`` inside a livedrag source checkout, else ``$XDG_DATA_HOME/livedrag``."""
    cwd = Path.cwd() if cwd is None else cwd
    pyproject = cwd / "pyproject.toml"
    try:
        if pyproject.is_file() and 'name = "livedrag"' in pyproject.read_text(encoding="utf-8"):
            return cwd / "data"
    except OSError:
        pass
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "livedrag"


@dataclass(frozen=True)
class Settings:
    """Everything the app, the worker and the fan-out read. Built once at start-up."""

    host: str = "127.0.0.1"  # listen address
    port: int = 8000  # listen port (0: any free port)
    checkpoint: str | None = None  # generator .safetensors; None: the embedded default model
    predictor: str | None = None  # predictor file for "predict" mode; None: the shipped one, if it fits
    encoder: str | None = None  # encoder file for projecting uploads; None: the shipped one, if it fits
    # more models rooms may choose (the first model, above, is the default; the embedded one is
    # always offered): generator files (--checkpoint again) and a model library folder (--models)
    extra_checkpoints: tuple[str, ...] = ()
    models_dir: Path | None = None
    model_idle_s: float = 600.0  # a model no live room uses is unloaded after this long (0: never)
    model_memory_mb: float = 0.0  # the loaded models' networks stay under this (0: no cap)
    device: str | None = None  # "cpu", "cuda", "cuda:1"...; None: cuda when available, else cpu
    data_dir: Path = field(default_factory=default_data_dir)  # SQLite room store lives here
    origins: tuple[str, ...] = ()  # extra allowed browser origins ("https://x.example"); "*": any
    web_dir: Path = REPO_ROOT / "web"  # the browser client (index.html, room.html, js/, css/)
    max_rooms: int = 100  # live rooms per server (at the cap the least recently used idle one is archived)
    max_editors: int = 16  # editors per room (close 4005 room_full beyond)
    max_viewers: int = 256  # spectators per room
    max_connections: int = 1024  # websocket connections per server (close 4006 server_full beyond)
    max_connections_per_ip: int = 256  # websocket connections per client address
    max_fps: float = 30.0  # tick rate cap: at most this many steps (frames) per room per second
    # a drag ends when point tracking loses a handle, match above this (server/engine/stop_rules.py);
    # None: the engine's calibrated value; 0: never (e.g. a model with random weights)
    lost_ratio: float | None = None
    tick_budget_s: float = 0.25  # estimated compute time one tick may take before rooms wait a turn
    jpeg_quality: int = 85  # frame JPEG quality (1..100)
    trajectory_frames: int = 120  # frames kept per room for trajectory.gif (decimated beyond)
    send_timeout_s: float = 10.0  # one websocket send may block this long before close 4011
    control_queue: int = 256  # control messages queued per connection before close 4011 too_slow
    frame_credits: int = int(LIMITS["frame_credits"])  # unacknowledged frames per connection
    hello_timeout_s: float = float(LIMITS["hello_timeout_s"])  # hello deadline (close 4008)
    idle_timeout_s: float = float(LIMITS["idle_timeout_s"])  # silence before close 4015
    rooms_per_minute: float = 30.0  # POST /api/rooms per client address (token bucket, burst 2x; 429)
    max_rooms_per_client: int = 20  # live rooms one client address created (0: no cap; 429 beyond)
    room_idle_archive_s: float = 300.0  # nobody in a room this long: it is archived (reopens on use)
    room_unjoined_archive_s: float = 60.0  # ... a room nobody has joined since it was created
    room_delete_after_s: float = 30 * 86400.0  # a room unused this long is deleted (0: never)
    room_delete_unjoined_s: float = 86400.0  # ... a room nobody ever joined (0: never)
    max_upload_bytes: int = 8 * 2**20  # largest picture POST /api/rooms/{room}/upload accepts (413)
    uploads_per_minute: float = 6.0  # uploads per room (token bucket, burst 2x; 429 beyond)
    project_steps: int = 100  # optimisation steps of an upload's projection when the request names none
    pti_steps: int = 0  # pivotal tuning steps after an upload's projection (method optimize); 0: off
    pti_max_rooms: int = 4  # rooms that may hold a tuned generator copy at once (memory cap)
    torch_threads: int | None = None  # intra-op CPU threads; None: all cores minus one for the loop
    log_level: str = "info"  # debug, info, warning, error
    access_log: bool = True  # uvicorn access log (query strings are always redacted)
    # a cluster (docs/cluster.md): both set, or neither (one node: SQLite, no Redis)
    redis_url: str | None = None  # redis://host:port/db: leases, announcements, relaying between nodes
    database_url: str | None = None  # postgresql://user@host:port/db: the rooms (instead of SQLite)
    node_id: str | None = None  # this node's name in the cluster; None: host-pid-random, new each start
    advertise_url: str | None = None  # how other nodes reach this one over HTTP; None: http://host:port

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser())
        object.__setattr__(self, "web_dir", Path(self.web_dir).expanduser())
        if self.models_dir is not None:
            object.__setattr__(self, "models_dir", Path(self.models_dir).expanduser())
        object.__setattr__(self, "extra_checkpoints", tuple(self.extra_checkpoints))
        if not (math.isfinite(self.model_idle_s) and self.model_idle_s >= 0):
            raise ValueError(f"model_idle_s must be >= 0, got {self.model_idle_s}")
        if not (math.isfinite(self.model_memory_mb) and self.model_memory_mb >= 0):
            raise ValueError(f"model_memory_mb must be >= 0, got {self.model_memory_mb}")
        object.__setattr__(self, "origins", tuple(o.strip().rstrip("/") for o in self.origins if o.strip()))
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        for name in ("max_rooms", "max_editors", "max_viewers", "max_connections", "max_connections_per_ip"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in (
            "max_fps",
            "tick_budget_s",
            "send_timeout_s",
            "hello_timeout_s",
            "idle_timeout_s",
            "room_idle_archive_s",
            "room_unjoined_archive_s",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if self.trajectory_frames < 2 or self.control_queue < 8 or self.frame_credits < 1:
            raise ValueError("trajectory_frames must be >= 2, control_queue >= 8 and frame_credits >= 1")
        if self.lost_ratio is not None and not (math.isfinite(self.lost_ratio) and self.lost_ratio >= 0):
            raise ValueError(f"lost_ratio must be a finite number >= 0 (0: off), got {self.lost_ratio}")
        if self.rooms_per_minute <= 0 or self.uploads_per_minute <= 0:
            raise ValueError("rooms_per_minute and uploads_per_minute must be > 0")
        if min(self.max_rooms_per_client, self.room_delete_after_s, self.room_delete_unjoined_s) < 0:
            raise ValueError("max_rooms_per_client and the room_delete_* durations must be >= 0")
        if self.max_upload_bytes < 1024:
            raise ValueError(f"max_upload_bytes must be >= 1024, got {self.max_upload_bytes}")
        if not 1 <= self.project_steps <= LIMITS["max_project_steps"]:
            raise ValueError(
                f"project_steps must be in 1..{LIMITS['max_project_steps']}, got {self.project_steps}"
            )
        if not 0 <= self.pti_steps <= LIMITS["max_project_steps"]:
            raise ValueError(f"pti_steps must be in 0..{LIMITS['max_project_steps']}, got {self.pti_steps}")
        if self.pti_max_rooms < 1:
            raise ValueError(f"pti_max_rooms must be >= 1, got {self.pti_max_rooms}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError(f"torch_threads must be >= 1, got {self.torch_threads}")
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        if (self.redis_url is None) != (self.database_url is None):
            raise ValueError("a cluster needs both --redis and --database (one node needs neither)")
        if self.database_url is not None and not self.database_url.startswith(
            ("postgresql://", "postgres://")
        ):
            raise ValueError("--database must be a postgresql:// URL")
        if self.redis_url is not None and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("--redis must be a redis:// URL")
        for o in self.origins:
            if o != "*" and "://" not in o:
                raise ValueError(f"origin {o!r} must look like scheme://host[:port] (or be *)")

    @property
    def ws_max_size(self) -> int:
        """uvicorn's message cap: above the protocol cap, so that messages between the two get an
        ``error`` and the close code 4009 from the app; uvicorn's parser closes larger ones, with
        4009 as well (``serve.WSProtocol``), never reading them whole."""
        return 4 * int(LIMITS["max_message_bytes"])

    @property
    def cluster(self) -> bool:
        """Whether this server is a node of a cluster (Redis and PostgreSQL)."""
        return self.redis_url is not None

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (None values are ignored: "not given")."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``LIVEDRAG_*`` variables, then ``overrides`` (e.g. parsed CLI flags)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            try:
                values[f.name] = _parse(f.name, raw)
            except ValueError as e:
                raise ValueError(f"{ENV_PREFIX}{f.name.upper()}={raw!r}: {e}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


_INTS = {
    "port",
    "max_rooms",
    "max_editors",
    "max_viewers",
    "max_connections",
    "max_connections_per_ip",
    "jpeg_quality",
    "trajectory_frames",
    "control_queue",
    "frame_credits",
    "torch_threads",
    "max_upload_bytes",
    "project_steps",
    "pti_steps",
    "pti_max_rooms",
    "max_rooms_per_client",
}
_FLOATS = {
    "max_fps",
    "lost_ratio",
    "tick_budget_s",
    "send_timeout_s",
    "hello_timeout_s",
    "idle_timeout_s",
    "rooms_per_minute",
    "uploads_per_minute",
    "model_memory_mb",
}
_DURATIONS = {
    "room_idle_archive_s",
    "room_unjoined_archive_s",
    "room_delete_after_s",
    "room_delete_unjoined_s",
    "model_idle_s",
}
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(raw: str) -> float:
    """Seconds from "90", "90s", "5m", "12h" or "30d"."""
    text = raw.strip().lower()
    scale = _UNITS.get(text[-1:])
    try:
        value = float(text[:-1] if scale else text) * (scale or 1.0)
    except ValueError:
        raise ValueError(f"expected a duration like 300, 5m, 12h or 30d, got {raw!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"expected a finite duration, got {raw!r}")
    return value


def _parse(name: str, raw: str) -> Any:
    if name in _INTS:
        return int(raw)
    if name in _FLOATS:
        return float(raw)
    if name in _DURATIONS:
        return parse_duration(raw)
    if name == "origins":
        return tuple(o for o in raw.split(",") if o.strip())
    if name in ("data_dir", "web_dir", "models_dir"):
        return Path(raw)
    if name == "extra_checkpoints":
        return tuple(p for p in raw.split(",") if p.strip())
    if name == "access_log":
        if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ValueError("expected a boolean (1/0, true/false, yes/no, on/off)")
        return raw.lower() in ("1", "true", "yes", "on")
    if name == "log_level":
        return raw.lower()
    return raw
