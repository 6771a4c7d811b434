"""Per-person undo and redo (sans-I/O): each editor takes back their own actions, never someone
else's (the collaborative convention of Figma, tldraw and Google Docs).

Every editor has an undo stack and a redo stack of their own *actions*. An action is what one of
their ops changed, as a list of :data:`Change` values (computed by :func:`diff` from the room's
state just before and just after the op): a pair (added, moved, removed), the mask's cells, a
parameter, or the shared image history (an entry the action committed: a drag, a new image, an
upload or a blend). Undo reverts the changes of the member's newest action *where they still
hold*; redo re-applies them likewise. The exact rules (shared/protocol.md section 7):

- A change still holds when its target still has the value the action left there: a pair's
  changed fields (handle, target) for a move, an absent pair for a removed one, an added pair
  still existing (however it moved since: undo takes it away as it is, redo brings that back), a
  parameter's value, a mask cell's value (each cell on its own), and for the image: the history's
  current entry is the one the action committed (redo: the next entry is it and the current one
  is where the undo left it).
- Undo applies every change that holds and leaves the others as they are (someone else changed
  them since: their later work is kept). When the action changed the image and the image change
  no longer holds (someone committed or undid an image since), or when no change holds at all,
  nothing is applied: the action is *skipped*, i.e. dropped from the stack, and the member gets
  ``undo_conflict``; the next undo goes on with their action before it.
- An undo moves the action (the changes it applied) to the member's redo stack; redo moves it back.
  A new action clears the member's own redo stack, never anyone else's.
- Consecutive ``move_point`` messages on the same point, and ``paint_mask`` chunks that continue
  one stroke (same mode and radius, the chunk starting at the previous chunk's last point), each
  within :data:`MERGE_S` of the previous one and with nothing else changed between them, are one
  action: one undo takes back a whole gesture.
- Stacks hold at most ``max_len`` actions each (the oldest go) for at most ``max_members`` members
  (the least recently active go); they are persisted with the room and survive restarts.

No I/O and no torch: the room applies the changes (``RoomOps._op_undo``); this module decides
which hold and keeps the stacks.
"""

from __future__ import annotations

import base64
import math
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from server.core.state import Pair, pairs_to_wire

MERGE_S = 1.0  # seconds between the messages of one gesture (move_point, paint_mask chunks)


@dataclass(frozen=True)
class PairChange:
    """A pair added (before None), removed (after None) or changed (both: a move, a tracked handle)."""

    id: str
    before: Pair | None
    after: Pair | None

    def fields(self) -> tuple[str, ...]:
        """The fields a move changed (handle, target); an added or removed pair: both."""
        if self.before is None or self.after is None:
            return ("handle", "target")
        return tuple(f for f in ("handle", "target") if getattr(self.before, f) != getattr(self.after, f))


@dataclass(frozen=True)
class MaskChange:
    """The mask's cells before and after (full grids; cells equal in both are untouched)."""

    before: bytes
    after: bytes


@dataclass(frozen=True)
class ParamChange:
    """One drag parameter (wire key, e.g. ``lambda``) before and after."""

    key: str
    before: Any
    after: Any


@dataclass(frozen=True)
class ImageChange:
    """The shared history entry (by id) that the action committed."""

    entry: int


Change = PairChange | MaskChange | ParamChange | ImageChange


@dataclass
class Action:
    """One member's action: its kind (the op that made it: ``add_pair``, ``move_point``,
    ``remove_pair``, ``clear_points``, ``paint_mask``, ``clear_mask``, ``set_params``,
    ``new_image``, ``drag``, ``upload``, ``blend``...) and what it changed."""

    kind: str
    changes: tuple[Change, ...]
    at: float = -math.inf  # room clock of its last message (merging; not persisted)
    tail: tuple[Any, ...] | None = None  # paint_mask: (mode, radius, last point) a next chunk continues
    saved: dict[str, Any] | None = field(default=None, repr=False)  # its JSON form, made once

    @property
    def image(self) -> ImageChange | None:
        return next((c for c in self.changes if isinstance(c, ImageChange)), None)


@dataclass(frozen=True)
class Snapshot:
    """What an action can change, at one moment (see :func:`diff`)."""

    pairs: Mapping[str, Pair]
    mask: bytes
    params: Mapping[str, Any]
    entry: int  # the history's current entry id


def diff(before: Snapshot, after: Snapshot) -> list[Change]:
    """The changes from ``before`` to ``after``: pairs (in order), the mask, parameters, image."""
    out: list[Change] = []
    for pid in [*before.pairs, *(p for p in after.pairs if p not in before.pairs)]:
        b, a = before.pairs.get(pid), after.pairs.get(pid)
        if not same_pair(b, a):
            out.append(PairChange(pid, b, a))
    if before.mask != after.mask:
        out.append(MaskChange(before.mask, after.mask))
    for key, value in after.params.items():
        if before.params.get(key) != value:
            out.append(ParamChange(key, before.params.get(key), value))
    if before.entry != after.entry:
        out.append(ImageChange(after.entry))
    return out


def same_pair(a: Pair | None, b: Pair | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.handle == b.handle and a.target == b.target


# --- which changes still hold, and what applying them gives ----------------------------------------


def pair_holds(c: PairChange, current: Pair | None, redo: bool) -> bool:
    """Whether the pair still has what the action (redo: its undo) left there: a removed pair is
    still absent; an added one still exists (moved since or not: taking it back takes it as it is);
    a moved field still has the value the move gave it."""
    left, goal = (c.before, c.after) if redo else (c.after, c.before)
    if left is None:
        return current is None
    if goal is None:
        return current is not None
    return current is not None and all(getattr(current, f) == getattr(left, f) for f in c.fields())


def pair_result(c: PairChange, current: Pair | None, redo: bool) -> Pair | None:
    """The pair after undoing (redo: redoing) the change: the other side's value in the changed
    fields; the rest (the owner, and fields nobody changed) stays as it is now."""
    goal = c.after if redo else c.before
    if goal is None:
        return None
    if current is None:
        return goal
    return replace(current, **{f: getattr(goal, f) for f in c.fields()})


def mask_step(c: MaskChange, current: bytes, redo: bool) -> tuple[bytes, MaskChange] | None:
    """Undo (redo) the cells that still hold: (the new cells, the change actually applied, for the
    opposite stack), or None when no cell holds."""
    left, goal = (c.before, c.after) if redo else (c.after, c.before)
    if len(current) != len(left):
        return None
    cells = bytearray(current)
    moved = False
    for i, (cur, lv, gv) in enumerate(zip(current, left, goal, strict=True)):
        if lv != gv and cur == lv:
            cells[i] = gv
            moved = True
    if not moved:
        return None
    new = bytes(cells)
    # the applied change, for the opposite stack: cells it did not touch are equal on both sides
    return new, (MaskChange(current, new) if redo else MaskChange(new, current))


# --- the stacks --------------------------------------------------------------------------------


@dataclass
class Stacks:
    """One member's undo and redo stacks (newest last)."""

    undo: list[Action] = field(default_factory=list)
    redo: list[Action] = field(default_factory=list)


class UndoBook:
    """Every member's stacks in one room. ``notify`` holds the members whose counts or next kinds
    changed (the room sends them ``undo_state``); ``dirty`` those whose stacks must be saved."""

    def __init__(self, stacks: Mapping[str, Stacks] | None = None, max_len: int = 50, max_members: int = 256):
        self.max_len, self.max_members = max_len, max_members
        self.members: OrderedDict[str, Stacks] = OrderedDict(stacks or {})
        self.notify: set[str] = set()
        self.dirty: set[str] = set()

    def of(self, member_id: str) -> Stacks:
        s = self.members.get(member_id)
        if s is None:
            s = self.members[member_id] = Stacks()
        return s

    def _touch(self, member_id: str) -> None:
        self.members.move_to_end(member_id)
        self.notify.add(member_id)
        self.dirty.add(member_id)
        while len(self.members) > self.max_members:
            gone, _ = self.members.popitem(last=False)
            self.dirty.add(gone)

    def record(
        self, member_id: str, kind: str, changes: list[Change], now: float, msg: Mapping[str, Any]
    ) -> None:
        """A member's op made ``changes``: push them as a new action (clearing the member's redo
        stack), or merge them into the member's newest action when they continue its gesture."""
        s = self.of(member_id)
        top = s.undo[-1] if s.undo else None
        tail = _tail(kind, msg)
        if top is not None and _continues(top, kind, changes, msg, now):
            if changes:
                top.changes, top.saved = _merged(top.changes, changes), None
                s.redo.clear()
                self._touch(member_id)
            top.at, top.tail = now, tail
            return
        if not changes:
            return
        s.undo.append(Action(kind, tuple(changes), now, tail))
        del s.undo[: max(0, len(s.undo) - self.max_len)]
        s.redo.clear()
        self._touch(member_id)

    def peek(self, member_id: str, redo: bool) -> Action | None:
        s = self.members.get(member_id)
        stack = None if s is None else (s.redo if redo else s.undo)
        return stack[-1] if stack else None

    def drop(self, member_id: str, redo: bool) -> Action:
        """Skip the member's newest undo (redo) action: it is gone."""
        s = self.of(member_id)
        action = (s.redo if redo else s.undo).pop()
        self._touch(member_id)
        return action

    def moved(self, member_id: str, redo: bool, applied: Action) -> None:
        """The newest undo (redo) action was applied: it goes to the other stack as ``applied``."""
        s = self.of(member_id)
        (s.redo if redo else s.undo).pop()
        other = s.undo if redo else s.redo
        other.append(applied)
        del other[: max(0, len(other) - self.max_len)]
        self._touch(member_id)

    def state_message(self, member_id: str) -> dict[str, Any]:
        """The ``undo_state`` message for one member."""
        s = self.members.get(member_id) or Stacks()
        return {
            "t": "undo_state",
            "undo": len(s.undo),
            "redo": len(s.redo),
            "undo_kind": s.undo[-1].kind if s.undo else None,
            "redo_kind": s.redo[-1].kind if s.redo else None,
        }

    def take_notify(self) -> list[str]:
        out, self.notify = sorted(self.notify), set()
        return out

    # persistence: one JSON-ready dict per member

    def to_json(self, members: Iterable[str] | None = None) -> dict[str, dict[str, Any] | None]:
        """Member id -> stacks as JSON-ready data (None: the member has none any more)."""
        ids = list(self.members) if members is None else list(members)
        out: dict[str, dict[str, Any] | None] = {}
        for mid in ids:
            s = self.members.get(mid)
            out[mid] = (
                None
                if s is None or not (s.undo or s.redo)
                else {"undo": [_action_json(a) for a in s.undo], "redo": [_action_json(a) for a in s.redo]}
            )
        return out

    @classmethod
    def from_json(
        cls, data: Mapping[str, Mapping[str, Any]], max_len: int = 50, max_members: int = 256
    ) -> UndoBook:
        """Stacks from :meth:`to_json` (unreadable actions are dropped, never raised)."""
        stacks = {}
        for mid, d in data.items():
            stacks[mid] = Stacks(_actions(d.get("undo", ())), _actions(d.get("redo", ())))
        return cls(stacks, max_len, max_members)


def _tail(kind: str, msg: Mapping[str, Any]) -> tuple[Any, ...] | None:
    if kind == "paint_mask":
        return (msg["mode"], msg["radius"], tuple(msg["points"][-1]))
    if kind == "move_point":
        return (msg["pair"], msg["which"])
    return None


def _continues(top: Action, kind: str, changes: list[Change], msg: Mapping[str, Any], now: float) -> bool:
    """Whether an op continues the member's newest action (one gesture), with nothing else
    changed in between (its changes start where the action's end)."""
    if top.kind != kind or top.tail is None or now - top.at > MERGE_S:
        return False
    if kind == "move_point":
        if top.tail != (msg["pair"], msg["which"]):
            return False
        last = next((c for c in top.changes if isinstance(c, PairChange)), None)
        new = next((c for c in changes if isinstance(c, PairChange)), None)
        if new is None:
            return True
        if last is None or new.id != last.id or new.before is None or last.after is None:
            return False
        which = msg["which"]  # the moved field (a drag may track the handle in between)
        return getattr(new.before, which) == getattr(last.after, which)
    if kind == "paint_mask":
        mode, radius, point = top.tail
        if (mode, radius, point) != (msg["mode"], msg["radius"], tuple(msg["points"][0])):
            return False
        last = next((c for c in top.changes if isinstance(c, MaskChange)), None)
        new = next((c for c in changes if isinstance(c, MaskChange)), None)
        return new is None or (last is not None and new.before == last.after)
    return False


def _merged(old: tuple[Change, ...], new: list[Change]) -> tuple[Change, ...]:
    out = list(old)
    for c in new:
        for i, o in enumerate(out):
            if isinstance(c, PairChange) and isinstance(o, PairChange) and o.id == c.id:
                before = o.before
                if before is not None and c.after is not None:  # only the fields the gesture moved
                    moved = set(o.fields()) | set(c.fields())
                    before = replace(c.after, **{f: getattr(o.before, f) for f in moved})
                out[i] = PairChange(c.id, before, c.after)
                break
            if isinstance(c, MaskChange) and isinstance(o, MaskChange):
                out[i] = MaskChange(o.before, c.after)
                break
        else:
            out.append(c)
    return tuple(out)


# --- JSON form -------------------------------------------------------------------------------------


def _cells(b: bytes) -> str:
    return base64.b64encode(zlib.compress(b, 6)).decode("ascii")


def _uncells(s: str) -> bytes:
    return zlib.decompress(base64.b64decode(s, validate=True), bufsize=4096)


def _pair(p: Pair | None) -> dict[str, Any] | None:
    return None if p is None else pairs_to_wire([p])[0]


def _unpair(d: Mapping[str, Any] | None) -> Pair | None:
    if d is None:
        return None
    return Pair(str(d["id"]), (float(d["handle"][0]), float(d["handle"][1])),
                (float(d["target"][0]), float(d["target"][1])), d.get("owner"))  # fmt: skip


def _change_json(c: Change) -> dict[str, Any]:
    if isinstance(c, PairChange):
        return {"pair": c.id, "before": _pair(c.before), "after": _pair(c.after)}
    if isinstance(c, MaskChange):
        return {"mask": [_cells(c.before), _cells(c.after)]}
    if isinstance(c, ParamChange):
        return {"param": c.key, "before": c.before, "after": c.after}
    return {"entry": c.entry}


def _change(d: Mapping[str, Any]) -> Change:
    if "pair" in d:
        return PairChange(str(d["pair"]), _unpair(d["before"]), _unpair(d["after"]))
    if "mask" in d:
        before, after = d["mask"]
        return MaskChange(_uncells(before), _uncells(after))
    if "param" in d:
        return ParamChange(str(d["param"]), d["before"], d["after"])
    return ImageChange(int(d["entry"]))


def _action_json(a: Action) -> dict[str, Any]:
    if a.saved is None:  # actions do not change once made (a merge resets it): compress masks once
        a.saved = {"kind": a.kind, "changes": [_change_json(c) for c in a.changes]}
    return a.saved


def _actions(items: Iterable[Mapping[str, Any]]) -> list[Action]:
    out = []
    for d in items:
        try:
            out.append(Action(str(d["kind"]), tuple(_change(c) for c in d["changes"])))
        except (KeyError, TypeError, ValueError, zlib.error):
            continue
    return out
