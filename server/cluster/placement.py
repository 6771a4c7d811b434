"""Which node takes a room (sans-I/O): each node announces what it can serve and how much room it
has left; a new or orphaned room goes to a live node that can serve its model, the one with the
most free capacity (ties: the model already loaded, then the asking node, then the name)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class NodeInfo:
    """One node's announcement (``<prefix>:node:<id>``, refreshed every heartbeat)."""

    id: str
    url: str = ""  # its HTTP address for the other nodes
    device: str = "cpu"
    models: tuple[str, ...] = ()  # the models it can serve
    resolutions: dict[str, int] = field(default_factory=dict)  # ... and their image sizes
    loaded: tuple[str, ...] = ()  # ... of which loaded now
    rooms: int = 0  # live rooms it ticks
    free: int = 0  # rooms it can still take (its max_rooms minus its live rooms)
    connections: int = 0
    started: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)  # e.g. the worker's busy share
    cards: tuple[dict[str, Any], ...] = ()  # its models' cards, as its GET /api/models lists them

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> NodeInfo:
        d = json.loads(raw)
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}  # a newer node may announce more
        d["models"], d["loaded"] = tuple(d.get("models", ())), tuple(d.get("loaded", ()))
        d["cards"] = tuple(d.get("cards", ()))
        return cls(**d)


def choose_node(nodes: Iterable[NodeInfo], model: str, me: str) -> NodeInfo | None:
    """The node that should take a room of ``model`` (None: no live node serves it)."""
    able = [n for n in nodes if model in n.models and n.free > 0]
    if not able:
        return None
    return min(able, key=lambda n: (-n.free, model not in n.loaded, n.id != me, n.id))
