"""Value types of a room's edit state and its shared undo/redo history (no I/O, no torch).

Every type converts to its wire form (``to_wire``, the shapes of shared/protocol.md section 4)
and back (``from_wire``, used by the store).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from server.core.mask import MaskGrid

Point = tuple[float, float]


class Status(StrEnum):
    """What the room's engine is doing. idle -> running -> stopping -> idle is a drag; idle ->
    projecting -> stopping -> idle is a projection (an upload or a blend, see :class:`Task`)."""

    IDLE = "idle"
    RUNNING = "running"  # a drag steps every tick
    STOPPING = "stopping"  # the drag or projection ends at the worker's next look (stop, done, error)
    PROJECTING = "projecting"  # a projection toward a target steps every tick; drags are refused


class TaskKind(StrEnum):
    UPLOAD = "upload"  # project an uploaded picture
    BLEND = "blend"  # project the blend of the current image and a source inside a region


@dataclass(frozen=True)
class Task:
    """A projection the room runs (status projecting, then stopping), and what the worker needs
    for it. Never persisted: a restart mid-projection leaves the room on its last committed image."""

    kind: TaskKind
    method: str  # "encoder" (one forward pass) or "optimize" (encoder, then Adam steps)
    max_steps: int  # optimisation steps (0 with method "encoder")
    target: str | None = None  # UPLOAD, or BLEND from the upload: key of the stored target PNG
    source_seed: int | None = None  # BLEND from a seed: the source image's seed and truncation
    source_truncation: float = 0.7
    region: MaskGrid | None = None  # BLEND: the mask whose flexible cells are the region
    by: str | None = None  # member id (None: an HTTP upload)

    def to_wire(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "method": self.method, "max_steps": self.max_steps, "by": self.by}


@dataclass(frozen=True)
class UploadInfo:
    """A room's last uploaded picture: the stored target (model resolution PNG) by content key."""

    key: str  # sha256 hex of the PNG bytes
    w: int
    h: int

    def to_wire(self) -> dict[str, Any]:
        return {"key": self.key, "w": self.w, "h": self.h}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> UploadInfo:
        return cls(d["key"], int(d["w"]), int(d["h"]))


@dataclass(frozen=True)
class ImageInfo:
    """What the image is: a seed's image of a model, or a committed latent (by content key)."""

    model: str
    w: int
    h: int
    seed: int | None = None
    truncation: float = 0.7
    latent: str | None = None  # sha256 key of the latent bytes in the store; None: the seed's latent

    def to_wire(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "w": self.w,
            "h": self.h,
            "seed": self.seed,
            "truncation": self.truncation,
            "latent": self.latent,
        }

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> ImageInfo:
        return cls(d["model"], d["w"], d["h"], d["seed"], d["truncation"], d["latent"])


@dataclass(frozen=True)
class Pair:
    """A handle/target pair. ``handle_rev`` (server only) is the room version at which an editor
    last placed the handle; the worker re-initialises the handle's tracking feature when it changes,
    and tracked positions computed from an older state never overwrite a newer placement."""

    id: str
    handle: Point
    target: Point
    owner: str | None = None
    handle_rev: int = 0

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "handle": list(self.handle), "target": list(self.target), "owner": self.owner}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], handle_rev: int = 0) -> Pair:
        return cls(d["id"], tuple(d["handle"]), tuple(d["target"]), d["owner"], handle_rev)


def pairs_to_wire(pairs: tuple[Pair, ...] | list[Pair]) -> list[dict[str, Any]]:
    return [p.to_wire() for p in pairs]


@dataclass(frozen=True)
class Params:
    """Drag parameters (protocol field ``lambda`` is ``lam`` here). None: automatic."""

    mode: str = "optimize"  # "optimize" (DragGAN) or "predict" (latent predictor)
    lr: float = 2e-3  # optimiser learning rate
    lam: float = 20.0  # weight of the fixed-region loss
    max_steps: int = 300  # step cap of one drag
    r1: float | None = None  # motion supervision radius (px)
    r2: float | None = None  # tracking search half-size (px)
    stop_dist: float | None = None  # done when every handle is this close to its target (px)
    space: str = "w+"  # optimize: "w+" (the first W+ rows move independently) or "w" (one shared row)

    def to_wire(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "lr": self.lr,
            "lambda": self.lam,
            "max_steps": self.max_steps,
            "r1": self.r1,
            "r2": self.r2,
            "stop_dist": self.stop_dist,
            "space": self.space,
        }

    def updated(self, patch: Mapping[str, Any]) -> Params:
        """A copy with the given wire keys changed (a validated set_params ``params`` map)."""
        return replace(self, **{("lam" if k == "lambda" else k): v for k, v in patch.items()})

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Params:
        return cls().updated(d)


@dataclass(frozen=True)
class Layout:
    """Points and mask at one moment (what undo and redo restore besides the image)."""

    pairs: tuple[Pair, ...] = ()
    mask: MaskGrid | None = None  # None: an empty mask


@dataclass(frozen=True)
class HistoryEntry:
    """One committed image state: the image, and the layout just before and just after the commit."""

    kind: str  # "new_image", "drag", "upload" or "blend"
    image: ImageInfo
    before: Layout = field(default_factory=Layout)
    after: Layout = field(default_factory=Layout)
    by: str | None = None  # member id that caused it (None: server)
    id: int = 0  # unique in its room, never reused (History.commit assigns it; 0: not yet)


class History:
    """A shared, linear list of committed image states with a current index.

    ``commit`` drops the redo branch and appends (the oldest entries go past ``max_len``);
    ``undo`` returns (image of entry k-1, layout before entry k); ``redo`` returns (image of entry
    k+1, layout after entry k+1). Every entry gets an id, unique in the room and never reused
    (members' undo stacks name the entries their actions committed by it).
    """

    def __init__(self, entries: list[HistoryEntry], index: int, max_len: int) -> None:
        if not entries or not 0 <= index < len(entries):
            raise ValueError(f"history index {index} outside {len(entries)} entries")
        self.entries, self.index, self.max_len = list(entries), index, max_len
        # the last entry is always the newest made, so its id is the largest given out so far
        self.next_id = max(e.id for e in self.entries) + 1
        for i, e in enumerate(self.entries):
            if e.id <= 0:  # a store written before entry ids
                self.entries[i] = replace(e, id=self.next_id)
                self.next_id += 1

    @property
    def current(self) -> HistoryEntry:
        return self.entries[self.index]

    @property
    def can_undo(self) -> bool:
        return self.index > 0

    @property
    def can_redo(self) -> bool:
        return self.index < len(self.entries) - 1

    def commit(self, entry: HistoryEntry) -> None:
        del self.entries[self.index + 1 :]
        self.entries.append(replace(entry, id=self.next_id))
        self.next_id += 1
        if len(self.entries) > self.max_len:
            del self.entries[: len(self.entries) - self.max_len]
        self.index = len(self.entries) - 1

    def undo(self) -> tuple[ImageInfo, Layout]:
        assert self.can_undo
        layout = self.entries[self.index].before
        self.index -= 1
        return self.entries[self.index].image, layout

    def redo(self) -> tuple[ImageInfo, Layout]:
        assert self.can_redo
        self.index += 1
        entry = self.entries[self.index]
        return entry.image, entry.after

    def latents(self) -> set[str]:
        """Latent keys the history refers to (the store keeps these)."""
        return {e.image.latent for e in self.entries if e.image.latent}

    def to_wire(self) -> dict[str, int]:
        return {"index": self.index, "size": len(self.entries)}


@dataclass(frozen=True)
class MemberRecord:
    """An editor the room remembers across restarts: the browser that presents the secret whose
    hash this is gets the member id, name and colour back (so the pairs it owns stay its own)."""

    id: str  # member id ("m3")
    secret_hash: str  # sha256 hex of "<room id>:<secret>" (the secret itself is never stored)
    name: str
    colour: str
    seen: float = 0.0  # wall-clock seconds of the last join or rename


@dataclass(frozen=True)
class RunRecord:
    """A run (a drag or a projection) in progress, persisted so that a crash is reported after the
    restart and a drag keeps its last checkpoint: the latent of a recent frame, stored as it ran."""

    kind: str  # "drag", "upload" or "blend"
    drag: int  # its run number
    by: str | None  # member id that started it (None: server-made, an HTTP upload)
    before: Layout  # points and mask when it started (what undo brings back)
    step: int = 0  # the checkpoint's step (0: no checkpoint yet)
    latent: str | None = None  # the checkpoint's latent key (drags only)
    pairs: tuple[Pair, ...] = ()  # the pairs at the checkpoint (tracked handles)
    started: float = 0.0  # wall-clock seconds

    def interrupted_wire(self, kept: int) -> dict[str, Any]:
        """The room's ``interrupted`` state value after a crash cut this run short."""
        return {"kind": self.kind, "drag": self.drag, "step": kept, "by": self.by}


@dataclass(frozen=True)
class RoomRecord:
    """Everything persisted about a room (what the store writes and reads back)."""

    id: str
    edit_hash: str  # sha256 hex of the edit capability
    view_hash: str  # sha256 hex of the view capability
    image: ImageInfo
    pairs: tuple[Pair, ...]
    mask: MaskGrid
    params: Params
    history: tuple[HistoryEntry, ...]
    history_index: int
    version: int = 0
    drag: int = 0
    next_member: int = 1
    created: float = 0.0  # wall-clock seconds
    upload: UploadInfo | None = None  # the last uploaded picture (blend source, target thumbnail)
    original: ImageInfo | None = None  # the image the room was created with (reset); None: history[0]'s
    members: tuple[MemberRecord, ...] = ()  # editors remembered by their browser's secret
    run: RunRecord | None = None  # the run in progress when saved (a crash leaves it behind)
    # members' undo and redo stacks (server.core.undo.UndoBook.to_json: member id -> JSON data)
    undo: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
