// The client's copy of one room: the server-confirmed state, optimistic local edits on top, the
// members and their cursors, and the drag's live status. DOM-free (node tests import it).
//
// Reconciliation (shared/protocol.md sections 3 and 6): every snapshot replaces everything; an
// `op` replaces the state keys in its patch; a local edit is kept as "pending" and drawn on top
// of the confirmed state until the server answers it (`op` with by == you and ref == its id, or
// an `error` with that ref), so a refused edit simply disappears.
//
// Undo is per person (protocol section 7): `undoState` is this member's own stacks as the server
// last said (`undo_state`), so the undo and redo buttons follow what *you* can take back.

import { PAINT_VALUE, paintCells } from "./protocol.js";

/** Lifecycle of the drag or projection as the UI shows it (the room's `status`). */
export const DragStatus = Object.freeze({ IDLE: "idle", RUNNING: "running", STOPPING: "stopping", PROJECTING: "projecting" });

const PENDING_TTL_MS = 10_000; // a pending edit the server never answered is dropped after this
const CURSOR_IDLE_MS = 3_000; // others' cursors dim after this long without moving

export class RoomModel {
  constructor({ now = () => Date.now() } = {}) {
    this.now = now;
    this.listeners = new Set();
    this.reset();
  }

  reset() {
    this.joined = false;
    this.you = null; // member id
    this.role = null; // "editor" | "viewer"
    this.name = "";
    this.colour = "#888888";
    this.roomId = null;
    this.limits = {};
    this.version = 0;
    this.state = null; // confirmed room state (snapshot + ops)
    this.members = new Map(); // id -> {id, name, colour, role}
    this.spectators = 0;
    this.cursors = new Map(); // id -> {pos, t}
    this.pending = []; // [{id, msg, t}]
    this.tracked = {}; // pair id -> handle from the newest frame of the running drag
    this.lost = new Set(); // pair ids whose handle point tracking lost (newest frame of the drag)
    this.frame = null; // {seq, drag, step, status, w, h, fps}
    this.lastEnd = null; // {reason, message, drag, step, task, mode, cap} of the last finished drag or projection
    this.lastTask = null; // the task of the newest projection ({kind, method, max_steps, by})
    this.lastTaskDrag = -1; // the run number of lastTask
    this.progress = null; // {drag, step, psnr, loss} of the running projection (from its frames)
    this.undoState = { undo: 0, redo: 0, undo_kind: null, redo_kind: null }; // your own stacks
    this.view = null; // memoised confirmed state + pending edits
  }

  /** Call fn(kind) after every change; kind is "state", "members", "cursors", "frame", "status" or "undo". */
  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  emit(kind) {
    if (kind === "state") this.view = null;
    for (const fn of this.listeners) fn(kind);
  }

  get isEditor() {
    return this.role === "editor";
  }

  // --- server messages ----------------------------------------------------------------------

  /** Apply one decoded server message. Returns the message's type. */
  receive(m) {
    switch (m.t) {
      case "welcome":
        this.you = m.you;
        this.role = m.role;
        this.name = m.name;
        this.colour = m.colour;
        this.roomId = m.room;
        this.limits = m.limits || {};
        break;
      case "snapshot":
        this.onSnapshot(m);
        break;
      case "op":
        this.onOp(m);
        break;
      case "presence":
        this.onPresence(m);
        break;
      case "frame":
        this.onFrame(m);
        break;
      case "status":
        if (m.status === DragStatus.IDLE) {
          const task = this.lastTask && this.lastTaskDrag === m.drag ? this.lastTask : null;
          // the mode and the room's step cap as the drag ended: a predict drag may end on the
          // predictor's own, shorter budget
          const params = this.state?.params ?? {};
          this.lastEnd = {
            reason: m.reason,
            message: m.message ?? null,
            drag: m.drag,
            step: m.step,
            task,
            mode: params.mode ?? null,
            cap: params.max_steps ?? null,
            lost: this.lost.size,
            pairs: this.state?.pairs?.length ?? 0,
          };
          this.progress = null;
        } else if (m.status === DragStatus.RUNNING || m.status === DragStatus.PROJECTING) {
          this.lastEnd = null;
        }
        this.emit("status");
        break;
      case "error":
        if (m.ref != null) this.dropPending(m.ref);
        break;
      case "undo_state":
        this.undoState = { undo: m.undo, redo: m.redo, undo_kind: m.undo_kind ?? null, redo_kind: m.redo_kind ?? null };
        this.emit("undo");
        break;
      default:
        break;
    }
    return m.t;
  }

  onSnapshot(m) {
    this.joined = true;
    this.version = m.version;
    this.state = m.state;
    this.members = new Map(m.members.map((mem) => [mem.id, mem]));
    const me = this.members.get(this.you);
    if (me) this.name = me.name;
    this.spectators = m.spectators;
    this.cursors = new Map();
    this.pending = [];
    this.tracked = {};
    this.lost = new Set();
    this.frame = null;
    this.progress = null;
    this.undoState = { undo: 0, redo: 0, undo_kind: null, redo_kind: null }; // an undo_state follows
    if (m.state.task) this.rememberTask(m.state.task, m.state.drag);
    this.emit("state");
    this.emit("members");
    this.emit("cursors");
  }

  onOp(m) {
    if (!this.state) return;
    const before = this.state.pairs;
    this.state = { ...this.state, ...m.patch };
    this.version = m.v;
    if (m.patch.pairs) this.untrackMoved(before, m.patch.pairs);
    if (m.patch.status === DragStatus.RUNNING) {
      this.tracked = {};
      this.lost = new Set();
    }
    if (m.patch.task) this.rememberTask(m.patch.task, this.state.drag);
    if (m.patch.image && m.op !== "finish") {
      // another image (undo, redo, new image, reset, commit): the last run's result and counters
      // describe an image no longer shown
      this.lastEnd = null;
      this.progress = null;
      this.tracked = {};
      this.lost = new Set();
      if (this.frame) this.frame = { ...this.frame, step: m.patch.step ?? 0 };
    }
    if (m.by === this.you && m.ref != null) this.dropPending(m.ref, false);
    this.emit("state");
  }

  rememberTask(task, drag) {
    this.lastTask = task;
    this.lastTaskDrag = drag;
    this.progress = { drag, step: 0, psnr: null, loss: null };
  }

  /** Whether a projection (an upload or a blend) runs or ends now. */
  get projecting() {
    return !!this.state?.task;
  }

  /** A handle moved by an edit while a drag runs: show the edit, not the older frame's handle. */
  untrackMoved(before, after) {
    const old = new Map((before || []).map((p) => [p.id, p]));
    for (const p of after) {
      const o = old.get(p.id);
      if (!o || o.handle[0] !== p.handle[0] || o.handle[1] !== p.handle[1]) {
        const t = this.tracked[p.id];
        // placed anew (not where the last frame tracked it, as at the drag's finish): found again
        if (!t || t[0] !== p.handle[0] || t[1] !== p.handle[1]) this.lost.delete(p.id);
        delete this.tracked[p.id];
      }
    }
  }

  onPresence(m) {
    switch (m.ev) {
      case "join":
        this.members.set(m.member.id, m.member);
        this.emit("members");
        break;
      case "leave":
        this.members.delete(m.id);
        this.cursors.delete(m.id);
        this.emit("members");
        this.emit("cursors");
        break;
      case "rename": {
        const mem = this.members.get(m.id);
        if (mem) this.members.set(m.id, { ...mem, name: m.name });
        if (m.id === this.you) this.name = m.name;
        this.emit("members");
        break;
      }
      case "cursor":
        if (m.pos == null) this.cursors.delete(m.id);
        else this.cursors.set(m.id, { pos: m.pos, t: this.now() });
        this.emit("cursors");
        break;
      case "spectators":
        this.spectators = m.count;
        this.emit("members");
        break;
      default:
        break;
    }
  }

  onFrame(m) {
    this.frame = { seq: m.seq, drag: m.drag, step: m.step, status: m.status, w: m.w, h: m.h, fps: m.fps ?? null };
    if (this.state?.task && m.drag === this.state.drag && m.step > 0) {
      this.progress = { drag: m.drag, step: m.step, psnr: m.psnr ?? null, loss: m.loss ?? null };
    }
    if (this.state && m.drag === this.state.drag && m.status !== DragStatus.IDLE) {
      this.tracked = { ...m.handles };
      this.lost = new Set(m.lost ?? []);
      this.emit("state");
    }
    this.emit("frame");
  }

  // --- local edits ----------------------------------------------------------------------------

  /** Record a sent edit (with its message id) so it shows at once. */
  addPending(id, m) {
    this.expirePending();
    this.pending.push({ id, msg: m, t: this.now() });
    this.emit("state");
  }

  dropPending(id, emit = true) {
    const n = this.pending.length;
    this.pending = this.pending.filter((p) => p.id !== id);
    if (emit && this.pending.length !== n) this.emit("state");
  }

  expirePending() {
    const cutoff = this.now() - PENDING_TTL_MS;
    if (this.pending.some((p) => p.t < cutoff)) {
      this.pending = this.pending.filter((p) => p.t >= cutoff);
      this.view = null;
    }
  }

  /** The state to draw: confirmed state with pending edits applied, handles tracked by frames. */
  display() {
    if (!this.state) return null;
    if (this.view) return this.view;
    let s = this.state;
    for (const p of this.pending) s = applyLocal(s, p.msg, this.you);
    if (s.status !== DragStatus.IDLE && Object.keys(this.tracked).length) {
      s = {
        ...s,
        pairs: s.pairs.map((p) => (this.tracked[p.id] ? { ...p, handle: this.tracked[p.id] } : p)),
      };
    }
    if (this.lost.size) s = { ...s, pairs: s.pairs.map((p) => (this.lost.has(p.id) ? { ...p, lost: true } : p)) };
    this.view = s;
    return s;
  }

  /** Others' cursors: [{id, name, colour, pos, idle}] (idle: no move for a few seconds). */
  otherCursors() {
    const t = this.now();
    const out = [];
    for (const [id, c] of this.cursors) {
      if (id === this.you) continue;
      const mem = this.members.get(id);
      if (!mem) continue;
      out.push({ id, name: mem.name, colour: mem.colour, pos: c.pos, idle: t - c.t > CURSOR_IDLE_MS });
    }
    return out;
  }

  memberColour(id) {
    return this.members.get(id)?.colour ?? null;
  }

  /** Whether you have an action of your own to undo (the server may still refuse: busy, skipped). */
  get canUndo() {
    return !!this.state && this.undoState.undo > 0;
  }

  get canRedo() {
    return !!this.state && this.undoState.redo > 0;
  }
}

/** The state after one local (not yet confirmed) edit, as the server would apply it. */
export function applyLocal(s, m, you) {
  switch (m.t) {
    case "add_pair":
      if (s.pairs.some((p) => p.id === m.pair)) return s;
      return { ...s, pairs: [...s.pairs, { id: m.pair, handle: m.handle, target: m.target, owner: you }] };
    case "move_point":
      return { ...s, pairs: s.pairs.map((p) => (p.id === m.pair ? { ...p, [m.which]: m.pos } : p)) };
    case "remove_pair":
      return { ...s, pairs: s.pairs.filter((p) => p.id !== m.pair) };
    case "clear_points":
      return { ...s, pairs: [] };
    case "paint_mask": {
      if (!(m.mode in PAINT_VALUE)) return s;
      const { w, h, cells } = s.mask;
      const painted = paintCells(cells, w, h, s.image.w, s.image.h, m.mode, m.radius, m.points);
      return { ...s, mask: { w, h, cells: painted } };
    }
    case "clear_mask":
      return { ...s, mask: { ...s.mask, cells: new Uint8Array(s.mask.w * s.mask.h) } };
    case "set_params":
      return { ...s, params: { ...s.params, ...m.params } };
    default:
      return s;
  }
}
