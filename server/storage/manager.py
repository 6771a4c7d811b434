"""All rooms of one server: creation, capabilities, joining, persistence on commit, the rooms' life
cycle (sans-I/O).

The app and the worker talk to rooms through a :class:`RoomManager`: it checks capabilities,
enforces the rooms caps, forwards to :class:`~server.core.room.Room` and saves a room to the store
after every call that changed persistent state. When the store fails (disk full...), the
in-memory state is kept, the room stays dirty (the next commit retries), and members get one
``storage_failed`` error. Nothing here awaits or touches a socket.

Life cycle (:mod:`server.storage.lifecycle`): ``rooms`` holds the live rooms only. Idle rooms are
archived by :meth:`RoomManager.sweep` (the app calls it every few seconds) or to make space at a
cap, and come back through :meth:`RoomManager.open` (a join, a download); rooms unused for long
are deleted by :meth:`RoomManager.expire`, any room by :meth:`RoomManager.delete`. Life-cycle
times are wall-clock (``wall``, persisted); ``clock`` is the rooms' monotonic clock (rate limits).
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
from server.core.state import HistoryEntry, ImageInfo, Params, RoomRecord, Status, UploadInfo
from server.storage.lifecycle import Lifecycle, LiveRoom, least_recently_used
from server.storage.store import Store, StoreError

log = logging.getLogger(__name__)


class RoomsFull(Exception):
    """The server holds ``RoomLimits.max_rooms`` live rooms and someone is in each (HTTP 503,
    close ``server_full``)."""


class ClientRoomsFull(Exception):
    """This client created ``Lifecycle.max_rooms_per_client`` live rooms and someone is in each
    (HTTP 429)."""


class RoomGone(LookupError):
    """No such room; ``deleted``: there was one and it was deleted (HTTP 410, close ``room_closed``)."""

    def __init__(self, room_id: str, deleted: bool = False) -> None:
        self.room_id, self.deleted = room_id, deleted
        super().__init__(f"room {room_id} {'was deleted' if deleted else 'does not exist'}")


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
    """Live rooms by id, with their store. Call everything from the event loop (one thread)."""

    def __init__(
        self,
        store: Store | None = None,
        limits: RoomLimits | None = None,
        clock: Clock = time.monotonic,
        lifecycle: Lifecycle | None = None,
        wall: Clock = time.time,
    ):
        self.store = store if store is not None else Store(None)
        self.limits = limits or RoomLimits()
        self.lifecycle = lifecycle or Lifecycle()
        self.clock = clock  # the rooms' monotonic clock (rate limits, cursors, undo merges)
        self.wall = wall  # wall clock of the life cycle (persisted: last use, archiving, deletion)
        self.rooms: dict[str, Room] = {}  # the live rooms
        self.life: dict[str, LiveRoom] = {}  # ... and what the life cycle knows of each
        self._failing: set[str] = set()  # rooms whose last save failed
        self._next_expire = 0.0  # wall time of the next deletion pass

    def load(self) -> int:
        """Start-up: every stored room is archived (loaded when someone opens it: a run the last
        server left in progress, a crash, is then reported as interrupted), rooms unused for too
        long are deleted, unreferenced latents and uploads collected. Returns the stored rooms."""
        try:
            stored = self.store.archive_all(self.wall())
        except StoreError as e:
            log.error("store: %s", e)
            stored = 0
        return stored - len(self.expire())

    def create(
        self, image: ImageInfo, params: Params | None = None, client: str | None = None, live: bool = True
    ) -> CreatedRoom:
        """A new room showing ``image``, made by ``client`` (its address; None: not counted). At a
        cap the least recently used idle room is archived first. Raises ClientRoomsFull,
        RoomsFull, or StoreError (then no room exists). ``live=False`` (a cluster: the node that
        takes the room loads it) only stores it."""
        if live:
            self._make_space(client)
        room_id = new_room_id()
        while room_id in self.rooms or self.store.room_hashes(room_id) or self.store.deleted(room_id):
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
        now = self.wall()
        self._touch([room_id], now)
        if not live:
            log.info("room %s created (%s, seed %s), stored", room_id, image.model, image.seed)
            return created
        self.rooms[room_id] = Room(rec, self.limits, self.clock)
        self.life[room_id] = LiveRoom(idle_since=now, joined=False, creator=client)
        log.info("room %s created (%s, seed %s)", room_id, image.model, image.seed)
        return created

    def get(self, room_id: str) -> Room | None:
        """The live room (None: no such room, or it is archived: see :meth:`open`)."""
        return self.rooms.get(room_id)

    def open(self, room_id: str) -> Room:
        """The room, live: loaded from the store if it is archived (at the rooms cap, the least
        recently used idle room is archived first). Raises RoomGone, RoomsFull or StoreError."""
        room = self.rooms.get(room_id)
        if room is not None:
            return room
        rec = self.store.load_room(room_id)
        if rec is None:
            raise RoomGone(room_id, deleted=self.store.deleted(room_id))
        joined = self.store.room_joined(room_id)
        self._make_space(None)
        try:
            room = Room(rec, self.limits, self.clock)
        except ValueError as e:
            log.error("room %s cannot be restored: %s", room_id, e)
            raise RoomGone(room_id) from None
        now = self.wall()
        self.rooms[room_id] = room
        self.life[room_id] = LiveRoom(idle_since=now, joined=joined)
        self.persist(room)  # a crashed run's report and kept frame (no one to tell yet)
        self._touch([room_id], now)
        log.info("room %s reopened from the archive", room_id)
        return room

    def role(self, room_id: str, cap: str) -> str | None:
        """The role a capability gives in the room, "editor" or "viewer" (live or archived: the
        room is not loaded), None for a wrong one. Raises RoomGone, StoreError."""
        room = self.rooms.get(room_id)
        hashes = (room.edit_hash, room.view_hash) if room is not None else self.store.room_hashes(room_id)
        if hashes is None:
            raise RoomGone(room_id, deleted=self.store.deleted(room_id))
        if token_matches(cap, hashes[0]):
            return "editor"
        return "viewer" if token_matches(cap, hashes[1]) else None

    def delete(self, room_id: str, why: str = "editor") -> Room | None:
        """Delete a room, live or archived, with its history (``why``: "editor", for the logs and
        the store). Returns the live room it was (the app closes its connections with
        room_closed). Raises StoreError (then nothing changed)."""
        self.store.delete_room(room_id, why)
        room = self.rooms.pop(room_id, None)
        self.life.pop(room_id, None)
        self._failing.discard(room_id)
        log.info("room %s deleted (%s)", room_id, why)
        return room

    def unload(self, room_id: str) -> Room | None:
        """Forget a live room without saving it (a cluster node that no longer owns it)."""
        self.life.pop(room_id, None)
        self._failing.discard(room_id)
        return self.rooms.pop(room_id, None)

    # --- life cycle ---------------------------------------------------------------------------

    def touch(self, room_id: str) -> None:
        """The live room was used without a member (an HTTP download): its idle time starts again."""
        life = self.life.get(room_id)
        if life is not None and life.idle_since is not None:
            life.idle_since = self.wall()

    def sweep(self, now: float | None = None) -> list[str]:
        """Archive the live rooms idle for long enough, note the use of the others, and delete
        the rooms unused for too long when that pass is due. Returns the archived room ids."""
        now = self.wall() if now is None else now
        due = [rid for rid, life in self.life.items() if life.archive_due(now, self.lifecycle)]
        archived = [rid for rid in due if self.archive(rid, "idle", now)]
        self._touch([rid for rid, room in self.rooms.items() if room.members], now)
        if now >= self._next_expire:
            self.expire(now)
        return archived

    def archive(self, room_id: str, why: str = "idle", now: float | None = None) -> bool:
        """Save and unload a live room nobody is in and no run uses; False when it cannot be
        archived (someone is in it, it runs, or it could not be saved)."""
        room, life = self.rooms.get(room_id), self.life.get(room_id)
        if room is None or life is None or room.members or room.status is not Status.IDLE:
            return False
        self.persist(room)
        if room.dirty:
            log.warning("room %s stays loaded: it could not be saved", room_id)
            return False
        now = self.wall() if now is None else now
        try:
            self.store.archive_room(room_id, life.idle_since or now, now)
        except StoreError as e:  # its state is saved: it is archived in all but the flag
            log.warning("store: %s", e)
        del self.rooms[room_id], self.life[room_id]
        self._failing.discard(room_id)
        log.info("room %s archived (%s)", room_id, why)
        return True

    def expire(self, now: float | None = None) -> list[str]:
        """Delete the archived rooms unused for ``delete_after_s`` (nobody ever joined:
        ``delete_unjoined_s``), then collect unreferenced latents and uploads. Returns their ids."""
        now = self.wall() if now is None else now
        self._next_expire = now + self.lifecycle.expire_every_s
        unused, unjoined = self.lifecycle.delete_cutoffs(now)
        try:
            gone = self.store.expire_rooms(unused, unjoined, keep=set(self.rooms))
            if gone:
                log.info("deleted %d room(s) unused for too long: %s", len(gone), ", ".join(gone))
            n = self.store.gc_latents()
            if n:
                log.info("store: dropped %d unreferenced latents", n)
            n = self.store.gc_uploads()
            if n:
                log.info("store: dropped %d unreferenced uploads", n)
        except StoreError as e:
            log.warning("store: %s", e)
            return []
        return gone

    def _make_space(self, client: str | None) -> None:
        """Below the caps for one more live room (``client``'s, if not None): archive the least
        recently used idle rooms as needed. Raises ClientRoomsFull, RoomsFull."""
        cap = self.lifecycle.max_rooms_per_client
        if client is not None and cap:
            while len(mine := [rid for rid, life in self.life.items() if life.creator == client]) >= cap:
                if not self._archive_lru(mine):
                    raise ClientRoomsFull(f"{len(mine)} live rooms created by this client, all in use")
        while len(self.rooms) >= self.limits.max_rooms:
            if not self._archive_lru(list(self.rooms)):
                raise RoomsFull(f"{len(self.rooms)} live rooms (the cap), all in use")

    def _archive_lru(self, room_ids: list[str]) -> bool:
        idle = [
            (rid, self.life[rid])
            for rid in room_ids
            if not self.rooms[rid].members and self.rooms[rid].status is Status.IDLE
        ]
        while (victim := least_recently_used(idle)) is not None:
            if self.archive(victim, "to make space"):
                return True
            idle = [(rid, life) for rid, life in idle if rid != victim]
        return False

    def _touch(self, room_ids: list[str], now: float, joined: bool = False) -> None:
        if not room_ids:
            return
        try:
            self.store.touch_rooms(now, room_ids, joined)
        except StoreError as e:
            log.warning("store: %s", e)

    # --- connections --------------------------------------------------------------------------

    def join(self, room_id: str, hello: dict) -> Joined:
        """A validated hello (protocol.decode_hello) -> Joined, or raises JoinRefused with the
        close code (room_not_found, room_closed: deleted, bad_capability, room_full, server_full:
        archived and every live room in use). An archived room is opened."""
        try:
            role = self.role(room_id, hello["cap"])
            if role is None:
                raise JoinRefused("bad_capability")
            room = self.open(room_id)
        except RoomGone as e:
            raise JoinRefused("room_closed" if e.deleted else "room_not_found") from None
        except RoomsFull as e:
            raise JoinRefused("server_full", str(e)) from None
        except StoreError as e:
            log.error("room %s: %s", room_id, e)
            raise JoinRefused("internal_error", "the room store failed") from None
        joined = room.join(role, hello["name"], hello.get("client_id"), hello.get("secret"))
        log.info(
            "room %s: %s %s joined as %s",
            room_id,
            joined.member_id,
            room.members[joined.member_id].name,
            role,
        )
        life = self.life[room_id]
        life.idle_since = None
        if not life.joined:
            life.joined = True
            self._touch([room_id], self.wall(), joined=True)
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
        life = self.life.get(room_id)
        if life is not None and not room.members and life.idle_since is None:
            life.idle_since = self.wall()
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

    def retry_failed(self) -> list[str]:
        """Save again the live rooms whose last save failed (a store that was away). Returns the
        rooms saved now."""
        saved = []
        for room_id in list(self._failing):
            room = self.rooms.get(room_id)
            if room is None:
                self._failing.discard(room_id)
                continue
            self.persist(room)
            if not room.dirty:
                saved.append(room_id)
        return saved

    def persist_all(self) -> int:
        """Save every dirty room (at shutdown). Returns how many could not be saved."""
        failed = 0
        for room in self.rooms.values():
            self.persist(room)
            failed += room.dirty
        return failed
