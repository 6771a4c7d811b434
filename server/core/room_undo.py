"""A room's per-person undo and redo: recording each editor's actions and taking them back.

Mixed into :class:`~server.core.room_ops.RoomOps` (so into :class:`~server.core.room.Room`).
``Room.handle`` snapshots the state before every versioned op and records what the op changed as
the author's action (:meth:`RoomUndo._record_action`); the end of a drag or projection records its
commit for the member who started it (:meth:`RoomUndo._record_run`, :meth:`RoomUndo._record_since`).
``undo`` and ``redo`` take back the author's own newest action where it still holds, by the rules
in :mod:`server.core.undo` (shared/protocol.md section 7). Each member whose stacks changed gets an
``undo_state`` message (:meth:`RoomUndo._undo_messages`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from server.core.limits import RoomLimits
from server.core.mask import MaskGrid
from server.core.members import Member
from server.core.outgoing import Outgoing
from server.core.protocol import ProtocolError
from server.core.state import History, ImageInfo, Pair, Params, Status, pairs_to_wire
from server.core.undo import (
    Action,
    Change,
    ImageChange,
    MaskChange,
    PairChange,
    ParamChange,
    Snapshot,
    UndoBook,
    diff,
    mask_step,
    pair_holds,
    pair_result,
)

# what an action is called in a refusal's message
WHAT = {
    "add_pair": "added point pair",
    "move_point": "point move",
    "remove_pair": "removed point pair",
    "clear_points": "cleared points",
    "paint_mask": "mask stroke",
    "clear_mask": "cleared mask",
    "set_params": "parameter change",
    "new_image": "new image",
    "reset": "reset",
    "drag": "drag",
    "upload": "upload",
    "blend": "blend",
}


class RoomUndo:
    """Each editor's own undo and redo. Not thread-safe: call it from the event loop."""

    # the room's state (set by Room.__init__; RoomOps declares the rest)
    undo: UndoBook
    limits: RoomLimits
    clock: Callable[[], float]
    members: dict[str, Member]
    pairs: dict[str, Pair]
    mask: MaskGrid
    params: Params
    history: History
    image: ImageInfo
    status: Status
    version: int
    step: int
    interrupted: dict[str, Any] | None
    dirty: bool
    history_dirty: bool

    def _set_image(self, image: ImageInfo) -> None:  # RoomOps
        raise NotImplementedError

    def _require_idle(self) -> None:  # RoomOps
        raise NotImplementedError

    # --- recording -----------------------------------------------------------------------------

    def _undo_snapshot(self) -> Snapshot:
        return Snapshot(dict(self.pairs), self.mask.cells, self.params.to_wire(), self.history.current.id)

    def _record_action(self, member_id: str, kind: str, msg: dict[str, Any], before: Snapshot) -> None:
        """What an op of ``member_id`` changed since ``before`` becomes (or extends) their newest action."""
        self.undo.record(member_id, kind, diff(before, self._undo_snapshot()), self.clock(), msg)
        if member_id in self.undo.dirty:
            self.dirty = True

    def _record_since(self, member_id: str | None, kind: str, before: Snapshot) -> None:
        """A commit the server made for ``member_id`` (a projection's end): their action."""
        if member_id is not None:
            self._record_action(member_id, kind, {}, before)

    def _record_run(self, member_id: str | None, start: tuple[Pair, ...]) -> None:
        """A drag of ``member_id`` committed the current history entry: their action is that entry
        and the handles it moved (pairs present at its start, not placed anew by an editor since)."""
        if member_id is None:
            return
        changes: list[Change] = []
        at_start = {p.id: p for p in start}
        for p in self.pairs.values():
            s = at_start.get(p.id)
            if s is not None and s.handle_rev == p.handle_rev and s.handle != p.handle:
                changes.append(PairChange(p.id, replace(p, handle=s.handle), p))
        changes.append(ImageChange(self.history.current.id))
        self.undo.record(member_id, "drag", changes, self.clock(), {})
        self.dirty = True

    def _undo_messages(self) -> list[Outgoing]:
        """``undo_state`` for every connected member whose stacks changed."""
        notify = [mid for mid in self.undo.take_notify() if mid in self.members]
        return [Outgoing(self.undo.state_message(mid), to=mid) for mid in notify]

    # --- undo and redo -------------------------------------------------------------------------

    def _op_undo(self, member: Member, msg: dict[str, Any]) -> dict[str, Any]:
        return self._undo_step(member, redo=False)

    def _op_redo(self, member: Member, msg: dict[str, Any]) -> dict[str, Any]:
        return self._undo_step(member, redo=True)

    def _undo_step(self, member: Member, redo: bool) -> dict[str, Any]:
        word = "redo" if redo else "undo"
        action = self.undo.peek(member.id, redo)
        if action is None:
            raise ProtocolError(f"nothing_to_{word}", f"you have nothing to {word}")
        image = action.image
        if image is not None:
            self._require_idle()  # busy: the action stays for later
        holds = [c for c in action.changes if self._holds(c, redo)]
        what = WHAT.get(action.kind, action.kind.replace("_", " "))
        image_moved = image is not None and image not in holds
        if image_moved or not holds:
            self.undo.drop(member.id, redo)
            self.dirty = True
            since = "someone else changed the image since" if image_moved else "it was changed since"
            raise ProtocolError(
                "undo_conflict",
                f"cannot {word} your {what}: {since}, so it is skipped; "
                f"{word} again for your action before it",
            )
        applied = self._apply(holds, redo)
        self.undo.moved(member.id, redo, Action(action.kind, tuple(applied)))
        self.dirty = True
        patch: dict[str, Any] = {}
        if any(isinstance(c, PairChange) for c in applied):
            patch["pairs"] = pairs_to_wire(list(self.pairs.values()))
        if any(isinstance(c, MaskChange) for c in applied):
            patch["mask"] = self.mask.to_wire()
        if any(isinstance(c, ParamChange) for c in applied):
            patch["params"] = self.params.to_wire()
        if image is not None:
            patch.update(image=self.image.to_wire(), step=0, history=self.history.to_wire())
            if self.interrupted is not None:  # a crash report about the image no longer shown
                self.interrupted = patch["interrupted"] = None
        return patch

    def _holds(self, c: Change, redo: bool) -> bool:
        if isinstance(c, PairChange):
            return pair_holds(c, self.pairs.get(c.id), redo)
        if isinstance(c, MaskChange):
            return mask_step(c, self.mask.cells, redo) is not None
        if isinstance(c, ParamChange):
            now = self.params.to_wire()
            return c.key in now and now[c.key] == (c.before if redo else c.after)
        h = self.history
        if redo:
            return h.can_redo and h.entries[h.index + 1].id == c.entry
        return h.can_undo and h.current.id == c.entry

    def _apply(self, changes: list[Change], redo: bool) -> list[Change]:
        """Apply changes that hold; returns those applied (a mask change as far as it went)."""
        applied: list[Change] = []
        rev = self.version + 1  # the op's version: pairs placed by an undo re-seed their tracking
        for c in changes:
            if isinstance(c, PairChange):
                cur = self.pairs.get(c.id)
                new = pair_result(c, cur, redo)
                if new is None:  # taken away as it is now: the other stack brings that back
                    self.pairs.pop(c.id, None)
                    applied.append(PairChange(c.id, cur, None) if redo else PairChange(c.id, None, cur))
                    continue
                if cur is None and len(self.pairs) >= self.limits.max_pairs:
                    continue  # no room for it any more
                self.pairs[c.id] = replace(new, handle_rev=rev)
                applied.append(c)
            elif isinstance(c, MaskChange):
                step = mask_step(c, self.mask.cells, redo)
                if step is not None:
                    self.mask = replace(self.mask, cells=step[0])
                    applied.append(step[1])
            elif isinstance(c, ParamChange):
                self.params = self.params.updated({c.key: c.after if redo else c.before})
                applied.append(c)
            else:
                image = self.history.redo()[0] if redo else self.history.undo()[0]
                self.history_dirty = True
                self.step = 0
                self._set_image(image)
                applied.append(c)
        return applied
