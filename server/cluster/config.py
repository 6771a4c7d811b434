"""The cluster's settings (one frozen dataclass) and the names of its Redis keys."""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass, field


def default_node_id() -> str:
    """A name for this process, new at every start (a restarted node is a new node)."""
    return f"{socket.gethostname()[:24]}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class ClusterConfig:
    """How a node joins the cluster."""

    redis_url: str  # redis://host:port/db
    database_url: str  # postgresql://user@host:port/db
    node_id: str = field(default_factory=default_node_id)
    advertise_url: str = ""  # how the other nodes reach this one over HTTP (downloads, uploads)
    prefix: str = "ld"  # every Redis key starts with this
    lease_s: float = 5.0  # a room's owner lease; another node may take the room this long after a death
    renew_s: float = 1.0  # the owner renews its leases this often
    node_ttl_s: float = 4.0  # a node's announcement expires after this long without a heartbeat
    heartbeat_s: float = 1.0  # announcements and the relays' owner checks run this often
    claim_wait_s: float = 3.0  # a node asked to take a room gets this long before another tries
    join_timeout_s: float = 10.0  # a relay's join waits this long for the owner's answer
    redis_grace_s: float = 2.0  # after Redis comes back, owners re-take their leases before others may
    stream_maxlen: int = 5000  # entries kept per room stream (approximate trimming)
    read_block_ms: int = 200  # the owner's blocking stream read; new rooms join its read this fast
    max_forward: int = 10000  # messages a relay queues for Redis while it is down; then members resync

    def __post_init__(self) -> None:
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"--redis needs a redis:// URL, got {self.redis_url!r}")
        if not self.database_url.startswith(("postgresql://", "postgres://")):
            raise ValueError("--database needs a postgresql:// URL")
        if not 0 < self.renew_s < self.lease_s:
            raise ValueError("renew_s must be > 0 and shorter than lease_s")

    # --- keys ---------------------------------------------------------------------------------

    def lease_key(self, room: str) -> str:
        return f"{self.prefix}:room:{room}:owner"

    def room_channel(self, room: str) -> str:
        return f"{self.prefix}:room:{room}:out"

    def room_stream(self, room: str) -> str:
        return f"{self.prefix}:room:{room}:in"

    def node_key(self, node: str) -> str:
        return f"{self.prefix}:node:{node}"

    def node_stream(self, node: str) -> str:
        return f"{self.prefix}:node:{node}:in"

    @property
    def nodes_key(self) -> str:
        return f"{self.prefix}:nodes"
