"""All rooms of one server: creation, capabilities, joining, persistence on commit (sans-I/O).

The app and the worker talk to rooms through a :class:`RoomManager`: it checks capabilities,
enforces the rooms cap, forwards to :class:`~server.core.room.Room` and saves a room to the store
after every call that changed persistent state. When the store fails (disk full...), the
in-memory state is kept, the room stays dirty (the next commit retries), and members get one
``storage_failed`` error. Nothing here awaits or touches a socket.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from server.core.ids import hash_token, new_room_id, new_token, token_matches
from server.core.jobs import EngineJob, FrameResult
from server.core.limits import RoomLimits
from server.core.mask import MaskGrid
from server.core.members import JoinRefused
from server.core.outgoing import ALL, Outgoing
from server.core.protocol import error_message
from server.core.room import Clock, Joined, Room
from server.core.state import HistoryEntry, ImageInfo, Params, RoomRecord, UploadInfo
from server.storage.store import Store, StoreError

log = logging.getLogger(__name__)


class RoomsFull(Exception):
    """The server holds ``RoomLimits.max_rooms`` rooms already (HTTP 503)."""


@dataclass(frozen=True)
class CreatedRoom:
    """A new room and its two capabilities (shown once; the server keeps only their hashes)."""

    room_id: str
    edit_token: str
    view_token: str

    @property
    def edit_path(self) -> str:
        return f"/r/{self.room_id}#edit={self.edit_token}"

    @property
    def view_path(self) -> str:
        return f"/r/{self.room_id}#view={self.view_token}"


class RoomManager:
    """Rooms by id, with their store. Call everything from the event loop (one thread)."""

    def __init__(
        self, store: Store | None = None, limits: RoomLimits | None = None, clock: Clock = time.monotonic
    ):
        self.store = store if store is not None else Store(None)
        self.limits = limits or RoomLimits()
        self.clock = clock
        self.rooms: dict[str, Room] = {}
        self._failing: set[str] = set()  # rooms whose last save failed

    def load(self) -> int:
        """Restore every stored room (status idle; a frame is rendered on demand). A run the last
        server left in progress (a crash) is reported as interrupted, and saved so. Returns the count."""
        for rec in self.store.load_rooms():
            try:
                room = self.rooms[rec.id] = Room(rec, self.limits, self.clock)
            except ValueError as e:
                log.error("room %s not restored: %s", rec.id, e)
                continue
            self.persist(room)  # an interrupted run's report and kept frame (no one to tell yet)
        try:
            gone = self.store.gc_latents()
            if gone:
                log.info("store: dropped %d unreferenced latents", gone)
            gone = self.store.gc_uploads()
            if gone:
                log.info("store: dropped %d unreferenced uploads", gone)
        except StoreError as e:
            log.warning("store: %s", e)
        return len(self.rooms)

    def create(self, image: ImageInfo, params: Params | None = None) -> CreatedRoom:
        """A new room showing ``image``. Raises RoomsFull, or StoreError (then no room exists)."""
        if len(self.rooms) >= self.limits.max_rooms:
            raise RoomsFull(f"{len(self.rooms)} rooms (the cap)")
        room_id = new_room_id()
        while room_id in self.rooms:
            room_id = new_room_id()
        created = CreatedRoom(room_id, new_token(), new_token())
        rec = RoomRecord(
            id=room_id,
            edit_hash=hash_token(created.edit_token),
            view_hash=hash_token(created.view_token),
            image=image,
            pairs=(),
            mask=MaskGrid.empty(image.w, image.h),
            params=params or Params(),
            history=(HistoryEntry("new_image", image, id=1),),
            history_index=0,
            created=time.time(),
        )
        self.store.save_room(rec, history=True)
        self.rooms[room_id] = Room(rec, self.limits, self.clock)
        log.info("room %s created (%s, seed %s)", room_id, image.model, image.seed)
        return created

    def get(self, room_id: str) -> Room | None:
        return self.rooms.get(room_id)

    def delete(self, room_id: str) -> Room | None:
        """Forget a room (memory and store). The app closes its connections with room_closed."""
        room = self.rooms.pop(room_id, None)
        self.store.delete_room(room_id)
        self._failing.discard(room_id)
        return room

    # --- connections --------------------------------------------------------------------------

    def join(self, room_id: str, hello: dict) -> Joined:
        """A validated hello (protocol.decode_hello) -> Joined, or raises JoinRefused with the
        close code (room_not_found, bad_capability, room_full)."""
        room = self.rooms.get(room_id)
        if room is None:
            raise JoinRefused("room_not_found")
        cap = hello["cap"]
        if token_matches(cap, room.edit_hash):
            role = "editor"
        elif token_matches(cap, room.view_hash):
            role = "viewer"
        else:
            raise JoinRefused("bad_capability")
        joined = room.join(role, hello["name"], hello.get("client_id"), hello.get("secret"))
        log.info(
            "room %s: %s %s joined as %s",
            room_id,
            joined.member_id,
            room.members[joined.member_id].name,
            role,
        )
        joined.messages += self.persist(room)
        return joined

    def receive(self, room_id: str, member_id: str, data: bytes) -> list[Outgoing]:
        """A message from a joined member -> messages to send (raises room.Disconnect)."""
        room = self.rooms.get(room_id)
        if room is None:
            return []
        return room.receive(member_id, data) + self.persist(room)

    def leave(self, room_id: str, member_id: str, session: int) -> list[Outgoing]:
        room = self.rooms.get(room_id)
        if room is None:
            return []
        out = room.leave(member_id, session)
        if out:
            log.info("room %s: %s left", room_id, member_id)
        return out

    def flush_presence(self) -> dict[str, list[Outgoing]]:
        """Throttled cursor updates now due, per room id (call every ~1/cursor_hz seconds)."""
        due = {}
        for room in self.rooms.values():
            out = room.flush_presence()
            if out:
                due[room.id] = out
        return due

    def start_upload(
        self, room_id: str, upload: UploadInfo, method: str, max_steps: int, by: str | None = None
    ) -> list[Outgoing]:
        """A stored upload: the room starts projecting it (see Room.start_upload; raises
        ProtocolError busy, KeyError for an unknown room). ``by``: the editor who sent it."""
        room = self.rooms[room_id]
        out = room.start_upload(upload, method, max_steps, by)
        log.info("room %s: projecting an upload (%s, %d steps)", room_id, method, room.task.max_steps)
        return out + self.persist(room)

    # --- the worker's side ------------------------------------------------------------------

    def engine_jobs(self) -> list[EngineJob]:
        """One job for every room that wants the engine now (running, stopping, or to be rendered)."""
        jobs = []
        for room in self.rooms.values():
            if room.wants_engine:
                job = room.engine_job()
                if job is not None:
                    jobs.append(job)
        return jobs

    def on_frame(self, job: EngineJob, frame: FrameResult) -> list[Outgoing]:
        room = self.rooms.get(job.room)
        if room is None:
            return []
        out = room.on_frame(job, frame)
        return out + self.persist(room) if frame.checkpoint is not None else out

    def on_finished(self, job: EngineJob, latent: str | None, message: str | None = None) -> list[Outgoing]:
        room = self.rooms.get(job.room)
        if room is None:
            return []
        out = room.on_finished(job, latent, message)
        if out:
            log.info("room %s: drag %d ended (%s) after %d steps", room.id, job.drag, job.reason, room.step)
        return out + self.persist(room)

    def on_error(self, job: EngineJob, message: str, latent: str | None = None) -> list[Outgoing]:
        room = self.rooms.get(job.room)
        return [] if room is None else room.on_error(job, message, latent) + self.persist(room)

    # --- persistence --------------------------------------------------------------------------

    def persist(self, room: Room) -> list[Outgoing]:
        """Save the room if it changed. On StoreError: log, keep it dirty, and tell its members once."""
        if not room.dirty:
            return []
        try:
            self.store.save_room(room.to_record(), history=room.history_dirty, members=room.members_dirty)
        except StoreError as e:
            log.error("room %s: %s", room.id, e)
            if room.id in self._failing:
                return []
            self._failing.add(room.id)
            return [Outgoing(error_message("storage_failed"), to=ALL)]
        room.dirty = room.history_dirty = room.members_dirty = False
        room.undo.dirty.clear()
        if room.id in self._failing:
            self._failing.discard(room.id)
            log.info("room %s: saved again", room.id)
        return []

    def persist_all(self) -> int:
        """Save every dirty room (at shutdown). Returns how many could not be saved."""
        failed = 0
        for room in self.rooms.values():
            self.persist(room)
            failed += room.dirty
        return failed
