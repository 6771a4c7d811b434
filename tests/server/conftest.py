"""Helpers for the sans-I/O server tests: a fake clock and a harness that plays members."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from server.core.outgoing import Outgoing
from server.core.protocol import PROTOCOL_VERSION, decode_hello, encode, validate_server
from server.core.room import Joined, Room, RoomLimits
from server.core.state import ImageInfo
from server.engine.generator import Generator
from server.storage.manager import CreatedRoom, RoomManager
from server.storage.store import Store

IMAGE = ImageInfo("synthfaces", 256, 256, seed=42, truncation=0.7)


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every server test runs with one torch thread (``tests/conftest.one_torch_thread``)."""
    yield


@pytest.fixture
def G() -> Generator:
    """The tiny 32 px generator the worker and app tests run on (seeded)."""
    from tests.conftest import tiny_config

    torch.manual_seed(0)
    return Generator(tiny_config(32)).eval().requires_grad_(False)


class FakeClock:
    """Monotonic time that only moves when a test says so."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


class Harness:
    """One manager with one room; members join and send messages by name."""

    def __init__(
        self, limits: RoomLimits | None = None, store: Store | None = None, clock: FakeClock | None = None
    ):
        self.clock = clock or FakeClock()
        self.manager = RoomManager(store, limits, self.clock)
        self.created = self.manager.create(IMAGE)
        self._setup()

    @classmethod
    def attach(cls, manager: RoomManager, created: CreatedRoom) -> Harness:
        """A harness over an existing manager and room (e.g. after a restart)."""
        h = cls.__new__(cls)
        h.clock, h.manager, h.created = manager.clock, manager, created
        h._setup()
        return h

    def _setup(self) -> None:
        self.room_id = self.created.room_id
        self.sessions: dict[str, int] = {}
        self.msg_id = 0

    @property
    def room(self) -> Room:
        return self.manager.rooms[self.room_id]

    def hello(self, role: str = "editor", name: str = "Ada", **kw: Any) -> dict:
        cap = self.created.edit_token if role == "editor" else self.created.view_token
        return decode_hello(encode({"t": "hello", "v": PROTOCOL_VERSION, "cap": cap, "name": name, **kw}))

    def join(self, role: str = "editor", name: str = "Ada", **kw: Any) -> Joined:
        joined = self.manager.join(self.room_id, self.hello(role, name, **kw))
        self.sessions[joined.member_id] = joined.session
        check(joined.messages, self.room)
        return joined

    def send(self, member: str, msg: dict[str, Any], with_id: bool = True) -> list[Outgoing]:
        if with_id and "id" not in msg and msg.get("t") not in ("cursor", "ack"):
            self.msg_id += 1
            msg = {**msg, "id": self.msg_id}
        out = self.manager.receive(self.room_id, member, encode(msg))
        check(out, self.room)
        return out

    def leave(self, member: str) -> list[Outgoing]:
        return self.manager.leave(self.room_id, member, self.sessions[member])


def check(out: list[Outgoing], room: Room) -> None:
    """Every message the core produces matches the protocol spec."""
    for o in out:
        validate_server(o.msg, room.bounds)
        assert isinstance(o.data, bytes)


def only(out: list[Outgoing], t: str) -> Outgoing:
    found = [o for o in out if o.msg["t"] == t]
    assert len(found) == 1, (t, out)
    return found[0]


def error_code(out: list[Outgoing]) -> str:
    return only(out, "error").msg["code"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def h() -> Harness:
    return Harness()
