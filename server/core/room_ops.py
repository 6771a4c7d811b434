"""A room's versioned operations: each change a member (or the server) makes to the room's state
gets the next room version and returns its patch, the wire values of the keys it changed.

Mixed into :class:`~server.core.room.Room`, which holds the state declared on :class:`RoomOps`;
``Room.handle`` calls ``_op_<name>`` for a validated client message. Points, mask and params change
at any time, a drag running or not; starting a drag or a projection, and a new image need the room
idle (``busy`` otherwise), and so do undo and redo (each editor's own, :mod:`server.core.room_undo`)
when they change the image. Projections are an uploaded picture
(:meth:`RoomOps.start_upload`, called by the app after it validated and stored the picture) or a
blend (the ``blend`` op).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from server.core.limits import RoomLimits
from server.core.mask import MaskGrid
from server.core.members import Member
from server.core.outgoing import Outgoing
from server.core.protocol import ProtocolError
from server.core.room_undo import RoomUndo
from server.core.state import (
    History,
    HistoryEntry,
    ImageInfo,
    Layout,
    Pair,
    Params,
    Status,
    Task,
    TaskKind,
    UploadInfo,
    pairs_to_wire,
)


class RoomOps(RoomUndo):
    """The operations on a room's state. Not thread-safe: call them from the event loop."""

    # the room's state (set by Room.__init__)
    limits: RoomLimits
    image: ImageInfo
    pairs: dict[str, Pair]
    mask: MaskGrid
    params: Params
    history: History
    version: int
    drag: int
    status: Status
    step: int
    finish_reason: str | None
    task: Task | None  # the projection running now (not persisted)
    upload: UploadInfo | None
    image_rev: int
    render_pending: bool
    latest_frame: Outgoing | None
    dirty: bool
    history_dirty: bool
    _drag_before: Layout  # points and mask when the running drag or projection started
    _drag_by: str | None  # the member who started it
    _run_started: float  # wall clock when it started
    _checkpoint: tuple[int, str, tuple[Pair, ...]] | None  # its latest (step, latent key, pairs)
    interrupted: dict[str, Any] | None  # the last run, cut short by a crash (room state key)
    original: ImageInfo  # the image the room was created with (reset)

    def _op(self, name: str, by: str | None, ref: int | None, patch: dict[str, Any]) -> Outgoing:
        self.version += 1
        self.dirty = True
        return Outgoing({"t": "op", "v": self.version, "op": name, "by": by, "ref": ref, "patch": patch})

    def _status_message(self, reason: str | None, message: str | None = None) -> Outgoing:
        msg = {
            "t": "status",
            "status": self.status.value,
            "reason": reason,
            "drag": self.drag,
            "step": self.step,
        }
        if message:
            msg["message"] = message[:512]
        return Outgoing(msg)

    # versioned operations: change state, return the patch (wire values of the changed keys)

    def _pair(self, pair_id: str) -> Pair:
        if pair_id not in self.pairs:
            raise ProtocolError("unknown_pair", f"no pair {pair_id!r} (removed by someone?)")
        return self.pairs[pair_id]

    def _pairs_patch(self) -> dict[str, Any]:
        return {"pairs": pairs_to_wire(list(self.pairs.values()))}

    def _op_add_pair(self, member: Member, msg: dict[str, Any]) -> dict[str, Any]:
        if msg["pair"] in self.pairs:
            raise ProtocolError("duplicate_pair", f"pair {msg['pair']!r} exists")
        if len(self.pairs) >= self.limits.max_pairs:
            raise ProtocolError("too_many_pairs", f"at most {self.limits.max_pairs} point pairs")
        self.pairs[msg["pair"]] = Pair(msg["pair"], msg["handle"], msg["target"], member.id, self.version + 1)
        return self._pairs_patch()

    def _op_move_point(self, member: Member, msg: dict[str, Any]) -> dict[str, Any]:
        p = self._pair(msg["pair"])
        if msg["which"] == "handle":
            p = replace(p, handle=msg["pos"], handle_rev=self.version + 1)
        else:
            p = replace(p, target=msg["pos"])
        self.pairs[p.id] = p
        return self._pairs_patch()

    def _op_remove_pair(self, member: Member, msg: dict[str, Any]) -> dict[str, Any]:
        del self.pairs[self._pair(msg["pair"]).id]
        return self._pairs_patch()

    def _op_clear_points(self, member: Member, msg: dict[str, Any]) -> dict[str, Any]:
        self.pairs.clear()
        return self._pairs_patch()

    def _op_paint_mask(self, member: Member, msg: dict[str, Any]) -> dict[str, Any]:
        self.mask = self.mask.painted(msg["mode"], msg["radius"], msg["points"])
        return {"mask": self.mask.to_wire()}

    def _op_clear_mask(self, member: Member, msg: dict[str, Any]) -> dict[str, Any]:
        self.mask = self.mask.cleared()
        return {"mask": self.mask.to_wire()}

    def _op_set_params(self, member: Member, msg: dict[str, Any]) -> dict[str, Any]:
        self.params = self.params.updated(msg["params"])
        return {"params": self.params.to_wire()}

    def _op_start(self, member: Member, msg: dict[str, Any]) -> dict[str, Any]:
        if self.task is not None:
            raise ProtocolError("busy", "a projection is running: wait for it or stop it")
        if self.status is not Status.IDLE:
            raise ProtocolError("already_running")
        if not self.pairs:
            raise ProtocolError("no_points")
        self.status, self.step, self.finish_reason = Status.RUNNING, 0, None
        self.drag += 1
        self._drag_before = Layout(tuple(self.pairs.values()), self.mask)
        self._drag_by = member.id
        return self._begin_run({"status": self.status.value, "step": 0, "drag": self.drag})

    def _begin_run(self, patch: dict[str, Any]) -> dict[str, Any]:
        """A drag or projection starts: no checkpoint yet; a crash report of the last run goes."""
        self._run_started, self._checkpoint = time.time(), None
        if self.interrupted is not None:
            self.interrupted = None
            patch["interrupted"] = None
        return patch

    def _op_stop(self, member: Member, msg: dict[str, Any]) -> dict[str, Any]:
        if self.status not in (Status.RUNNING, Status.PROJECTING):
            what = "projection" if self.task is not None else "drag"
            raise ProtocolError(
                "not_running", f"the {what} is already stopping" if self.status is Status.STOPPING else None
            )
        self.status, self.finish_reason = Status.STOPPING, "stopped"
        return {"status": self.status.value}

    def _require_idle(self) -> None:
        if self.status is not Status.IDLE:
            raise ProtocolError(
                "busy", "a projection is running: wait for it or stop it" if self.task is not None else None
            )

    # projections: an upload (started by the app) or a blend (an op)

    def _start_task(self, task: Task) -> dict[str, Any]:
        self._require_idle()
        self.status, self.step, self.finish_reason, self.task = Status.PROJECTING, 0, None, task
        self.drag += 1  # runs (drags and projections) share one counter: frames carry it
        self._drag_before = Layout(tuple(self.pairs.values()), self.mask)
        self._drag_by = task.by
        return self._begin_run(
            {"status": self.status.value, "step": 0, "drag": self.drag, "task": task.to_wire()}
        )

    def start_upload(
        self, upload: UploadInfo, method: str, max_steps: int, by: str | None = None
    ) -> list[Outgoing]:
        """A validated, stored upload: project it (status projecting). Returns the ``upload`` op and
        the ``status`` message. Raises ProtocolError ``busy`` (nothing changes) while not idle.
        ``by``: the editor who sent it (its commit is theirs to undo); None: nobody's."""
        if method not in ("encoder", "optimize"):
            raise ValueError(f"unknown projection method {method!r}")
        if (upload.w, upload.h) != (self.image.w, self.image.h):
            raise ValueError(
                f"the upload is {upload.w}x{upload.h}; the room's image {self.image.w}x{self.image.h}"
            )
        steps = 0 if method == "encoder" else max(1, min(max_steps, self.limits.max_project_steps))
        patch = self._start_task(Task(TaskKind.UPLOAD, method, steps, target=upload.key, by=by))
        self.upload = upload
        patch["upload"] = upload.to_wire()
        return [self._op("upload", by, None, patch), self._status_message(None)]

    def _op_blend(self, member: Member, msg: dict[str, Any]) -> dict[str, Any]:
        self._require_idle()
        if not self.mask.has_flexible:
            raise ProtocolError("no_region")
        steps = min(msg.get("steps", self.limits.blend_steps), self.limits.max_project_steps)
        if msg["source"] == "upload":
            if self.upload is None:
                raise ProtocolError("no_upload")
            task = Task(
                TaskKind.BLEND, "optimize", steps, target=self.upload.key, region=self.mask, by=member.id
            )
        else:
            truncation = msg.get("truncation", self.image.truncation)
            task = Task(
                TaskKind.BLEND,
                "optimize",
                steps,
                source_seed=msg["seed"],
                source_truncation=truncation,
                region=self.mask,
                by=member.id,
            )
        return self._start_task(task)

    def _op_new_image(self, member: Member, msg: dict[str, Any]) -> dict[str, Any]:
        self._require_idle()
        image = replace(
            self.image, seed=msg["seed"], truncation=msg.get("truncation", self.image.truncation), latent=None
        )
        return self.commit_image(image, "new_image", member.id)

    def _op_reset(self, member: Member, msg: dict[str, Any]) -> dict[str, Any]:
        self._require_idle()
        return self.commit_image(self.original, "reset", member.id)

    def _set_image(self, image: ImageInfo) -> None:
        self.image = image
        self.image_rev += 1
        self.render_pending = True
        self.latest_frame = None  # a late joiner must not see the old image

    def commit_image(self, image: ImageInfo, kind: str = "upload", by: str | None = None) -> dict[str, Any]:
        """Commit a new image to the history (new_image, or an upload/projection the app made),
        clearing points and mask. Returns the patch. Refused with ``busy`` while a drag runs.
        For a server-made commit, wrap it: ``room.server_op("commit", room.commit_image(...))``."""
        self._require_idle()
        if (image.w, image.h) != (self.image.w, self.image.h):
            raise ValueError("an image of another size needs a new room")
        before = Layout(tuple(self.pairs.values()), self.mask)
        self.pairs = {}
        self.mask = self.mask.cleared()
        self.step = 0
        self.history.commit(HistoryEntry(kind, image, before=before, after=Layout(), by=by))
        self.history_dirty = True
        self._set_image(image)
        return {
            "image": self.image.to_wire(),
            "pairs": [],
            "mask": self.mask.to_wire(),
            "step": 0,
            "history": self.history.to_wire(),
        }

    def server_op(self, name: str, patch: dict[str, Any]) -> list[Outgoing]:
        """Broadcast a state change the server made itself (by = null), e.g. ``commit``."""
        return [self._op(name, None, None, patch)]
