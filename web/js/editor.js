// Pointer interaction on the stage: add pairs (press on the handle, release on the target; or
// click, click), drag existing handles and targets, select and delete pairs, paint the mask, and
// send this editor's cursor. Pointer events, so mouse, pen and touch work alike.

import { canvasToImage, LIMITS, msg, randomId } from "./protocol.js";
import { throttle } from "./throttle.js";

/** What the pointer is doing. */
export const Gesture = Object.freeze({
  IDLE: "idle",
  PLACING: "placing", // pressed on empty image: handle fixed, target follows the pointer
  AWAIT_TARGET: "await_target", // handle placed by a click; the next click places the target
  MOVING: "moving", // dragging an existing handle or target
  PAINTING: "painting", // brush stroke on the mask
});

export const Tool = Object.freeze({ POINTS: "points", FLEXIBLE: "flexible", FIXED: "fixed", ERASE: "erase" });

const DRAG_THRESHOLD_PX = 6; // pointer travel that turns a click into a drag
const MOVE_INTERVAL_MS = 50; // move_point at most ~20 per second
const PAINT_INTERVAL_MS = 80; // a paint_mask chunk at most every 80 ms while painting
const LONG_PRESS_MS = 600; // touch: hold a point this long to delete its pair

export class Editor {
  /**
   * app: {stage, model, edit(msg) -> id|null, canEdit() -> bool, refuseEdit(), sendCursor(pos|null),
   * onChange(), toast(text)}
   */
  constructor(app, canvas) {
    this.app = app;
    this.canvas = canvas;
    this.tool = Tool.POINTS;
    this.brushRadius = 6;
    this.gesture = Gesture.IDLE;
    this.selected = null; // pair id
    this.hover = null; // {pair, which}
    this.preview = null; // {handle, target?} of a pair being placed
    this.moving = null; // {pair, which, pos, start, moved}
    this.stroke = null; // {mode, points, sent}
    this.brushPos = null; // image px under the pointer (mask tools)
    this.down = null; // {x, y, id, type} CSS position of the press
    this.pairPrefix = randomId(6);
    this.pairCount = 0;
    this.longPress = null;
    this.sendMove = throttle((pair, which, pos) => this.app.edit(msg.movePoint(pair, which, pos)), MOVE_INTERVAL_MS);
    this.sendPaint = throttle(() => this.flushStroke(false), PAINT_INTERVAL_MS);
    this.bind();
  }

  bind() {
    const c = this.canvas;
    c.addEventListener("pointerdown", (e) => this.onDown(e));
    c.addEventListener("pointermove", (e) => this.onMove(e));
    c.addEventListener("pointerup", (e) => this.onUp(e));
    c.addEventListener("pointercancel", (e) => this.onCancel(e));
    c.addEventListener("pointerleave", (e) => this.onLeave(e));
    c.addEventListener("contextmenu", (e) => this.onContextMenu(e));
  }

  get isMaskTool() {
    return this.tool !== Tool.POINTS;
  }

  setTool(tool) {
    this.cancel();
    this.tool = tool;
    this.app.onChange();
  }

  setBrushRadius(r) {
    this.brushRadius = Math.max(0.5, Math.min(256, r));
    this.app.onChange();
  }

  /** Esc: abandon the gesture in progress, else clear the selection. */
  cancel() {
    if (this.gesture === Gesture.IDLE && !this.preview) this.selected = null;
    this.endLongPress();
    if (this.gesture === Gesture.MOVING) this.finishMove();
    if (this.gesture === Gesture.PAINTING) this.finishStroke();
    this.gesture = Gesture.IDLE;
    this.preview = null;
    this.app.onChange();
  }

  /** Drop the gesture without sending anything (offline, or a snapshot replaced the room). */
  abort() {
    this.endLongPress();
    this.sendMove.cancel();
    this.sendPaint.cancel();
    this.moving = null;
    this.stroke = null;
    this.down = null;
    this.preview = null;
    this.gesture = Gesture.IDLE;
    document.body.classList.remove("moving-point");
    this.app.onChange();
  }

  // --- geometry ------------------------------------------------------------------------------

  local(e) {
    const r = this.canvas.getBoundingClientRect();
    return { x: e.clientX - r.left, y: e.clientY - r.top, w: r.width, h: r.height };
  }

  toImage(p) {
    const { stage } = this.app;
    return canvasToImage(p.x, p.y, p.w, p.h, stage.imageW, stage.imageH);
  }

  // --- pointer events ---------------------------------------------------------------------------

  onDown(e) {
    if (e.button !== 0 && e.pointerType === "mouse") return;
    if (!this.app.canEdit()) {
      this.app.refuseEdit?.(); // offline: say so where the user is looking
      return;
    }
    if (this.down && this.down.id !== e.pointerId) return; // one finger at a time
    e.preventDefault();
    this.canvas.setPointerCapture?.(e.pointerId);
    const p = this.local(e);
    this.down = { x: p.x, y: p.y, id: e.pointerId, type: e.pointerType };
    const pos = this.toImage(p);

    if (this.isMaskTool) {
      this.gesture = Gesture.PAINTING;
      this.stroke = { mode: this.tool, points: [pos], sent: 0 };
      this.brushPos = pos;
      this.sendPaint();
      this.app.onChange();
      return;
    }
    if (this.gesture === Gesture.AWAIT_TARGET) {
      this.preview = { ...this.preview, target: pos };
      this.app.onChange();
      return; // the release places the target
    }
    const hit = this.app.stage.hitTest(this.app.model.display(), p.x, p.y, e.pointerType === "touch" ? 22 : 13);
    if (hit) {
      const pair = this.app.model.display().pairs.find((q) => q.id === hit.pair);
      this.gesture = Gesture.MOVING;
      this.selected = hit.pair;
      this.moving = { pair: hit.pair, which: hit.which, pos: pair[hit.which], moved: false };
      if (e.pointerType !== "mouse") this.startLongPress(hit.pair);
      this.app.onChange();
      return;
    }
    if (this.app.model.display().pairs.length >= (this.app.model.limits.max_pairs || LIMITS.max_pairs)) {
      this.app.toast(`At most ${LIMITS.max_pairs} point pairs per image`);
      return;
    }
    this.gesture = Gesture.PLACING;
    this.selected = null;
    this.preview = { handle: pos, target: null };
    this.app.onChange();
  }

  onMove(e) {
    const p = this.local(e);
    const pos = this.toImage(p);
    if (this.app.canEdit()) this.app.sendCursor(pos);
    if (this.down && this.down.id !== e.pointerId) return;
    const travelled = this.down ? Math.hypot(p.x - this.down.x, p.y - this.down.y) : 0;
    if (travelled > DRAG_THRESHOLD_PX) this.endLongPress();

    switch (this.gesture) {
      case Gesture.PAINTING: {
        this.brushPos = pos;
        const last = this.stroke.points[this.stroke.points.length - 1];
        if (Math.hypot(pos[0] - last[0], pos[1] - last[1]) >= Math.max(0.5, this.brushRadius * 0.3)) {
          this.stroke.points.push(pos);
          this.sendPaint();
        }
        break;
      }
      case Gesture.PLACING:
        if (travelled > DRAG_THRESHOLD_PX) this.preview = { ...this.preview, target: pos };
        break;
      case Gesture.AWAIT_TARGET:
        this.preview = { ...this.preview, target: pos };
        break;
      case Gesture.MOVING:
        if (!this.moving.moved && travelled <= DRAG_THRESHOLD_PX) break;
        this.moving.moved = true;
        this.moving.pos = pos;
        document.body.classList.add("moving-point");
        this.sendMove(this.moving.pair, this.moving.which, pos);
        break;
      default: {
        if (this.isMaskTool) {
          this.brushPos = pos;
        } else {
          const hit = this.app.stage.hitTest(this.app.model.display(), p.x, p.y, 13);
          const changed = (hit?.pair ?? null) !== (this.hover?.pair ?? null) || hit?.which !== this.hover?.which;
          this.hover = hit;
          document.body.classList.toggle("over-point", !!hit && this.app.canEdit());
          if (!changed) return;
        }
      }
    }
    this.app.onChange();
  }

  onUp(e) {
    if (!this.down || this.down.id !== e.pointerId) return;
    const p = this.local(e);
    const pos = this.toImage(p);
    const travelled = Math.hypot(p.x - this.down.x, p.y - this.down.y);
    this.down = null;
    this.endLongPress();
    switch (this.gesture) {
      case Gesture.PAINTING:
        this.finishStroke();
        if (e.pointerType !== "mouse") this.brushPos = null;
        break;
      case Gesture.PLACING:
        if (travelled > DRAG_THRESHOLD_PX) {
          this.addPair(this.preview.handle, pos);
        } else {
          this.gesture = Gesture.AWAIT_TARGET; // click, then click the target
          this.preview = { handle: this.preview.handle, target: e.pointerType === "mouse" ? pos : null };
          this.app.onChange();
          return;
        }
        break;
      case Gesture.AWAIT_TARGET:
        this.addPair(this.preview.handle, pos);
        break;
      case Gesture.MOVING:
        if (this.moving.moved) this.moving.pos = pos;
        this.finishMove();
        break;
      default:
        break;
    }
    this.gesture = Gesture.IDLE;
    this.app.onChange();
  }

  onCancel(e) {
    if (!this.down || this.down.id !== e.pointerId) return;
    this.down = null;
    this.endLongPress();
    if (this.gesture === Gesture.MOVING) this.finishMove();
    else if (this.gesture === Gesture.PAINTING) this.finishStroke();
    this.gesture = Gesture.IDLE;
    this.preview = null;
    this.app.onChange();
  }

  onLeave(e) {
    if (e.pointerType === "mouse" || !this.down) {
      this.app.sendCursor(null);
      this.brushPos = null;
      this.hover = null;
      document.body.classList.remove("over-point");
      this.app.onChange();
    }
  }

  onContextMenu(e) {
    e.preventDefault();
    if (!this.app.canEdit()) return;
    if (this.gesture === Gesture.AWAIT_TARGET || this.gesture === Gesture.PLACING) {
      this.cancel();
      return;
    }
    const p = this.local(e);
    const hit = this.app.stage.hitTest(this.app.model.display(), p.x, p.y, 13);
    if (hit) this.removePair(hit.pair);
  }

  // --- actions --------------------------------------------------------------------------------

  addPair(handle, target) {
    this.pairCount += 1;
    const id = `${this.pairPrefix}${this.pairCount}`;
    this.preview = null;
    if (this.app.edit(msg.addPair(id, handle, target)) != null) this.selected = id;
  }

  removePair(id) {
    if (this.app.edit(msg.removePair(id)) != null && this.selected === id) this.selected = null;
    this.app.onChange();
  }

  /** Delete the selected pair (Delete key, toolbar button). Returns whether there was one. */
  removeSelected() {
    if (!this.selected) return false;
    this.removePair(this.selected);
    return true;
  }

  finishMove() {
    const m = this.moving;
    this.moving = null;
    document.body.classList.remove("moving-point");
    if (!m) return;
    if (m.moved) {
      this.sendMove(m.pair, m.which, m.pos); // the last position always goes out
      this.sendMove.flush();
    } else {
      this.sendMove.cancel();
    }
  }

  finishStroke() {
    this.sendPaint.cancel();
    this.flushStroke(true);
    this.stroke = null;
  }

  /** Send the stroke's points not yet sent (chunks overlap by one point to stay continuous). */
  flushStroke(final) {
    const s = this.stroke;
    if (!s) return;
    const max = LIMITS.max_stroke_points;
    while (s.sent < s.points.length || (final && s.sent === 0)) {
      const from = Math.max(0, s.sent - 1);
      const chunk = s.points.slice(from, from + max);
      if (!chunk.length) break;
      this.app.edit(msg.paintMask(s.mode, this.brushRadius, chunk));
      s.sent = from + chunk.length;
      if (s.sent >= s.points.length) break;
    }
  }

  startLongPress(pairId) {
    this.endLongPress();
    this.longPress = setTimeout(() => {
      this.longPress = null;
      if (this.gesture !== Gesture.MOVING || this.moving?.moved) return;
      this.moving = null;
      this.gesture = Gesture.IDLE;
      this.down = null;
      navigator.vibrate?.(15);
      this.removePair(pairId);
    }, LONG_PRESS_MS);
  }

  endLongPress() {
    if (this.longPress) clearTimeout(this.longPress);
    this.longPress = null;
  }

  /** Overlay inputs owned by the editor: preview, brush, the point being moved. */
  scene() {
    let preview = null;
    if (this.preview) preview = { handle: this.preview.handle, target: this.preview.target };
    const brush =
      this.isMaskTool && this.brushPos && this.app.canEdit()
        ? { pos: this.brushPos, radius: this.brushRadius, mode: this.tool }
        : null;
    return { preview, brush, moving: this.moving?.moved ? this.moving : null, selected: this.selected, hover: this.hover };
  }

  /** The hint line for the current gesture (null: none). */
  hint() {
    if (!this.app.canEdit()) return null;
    if (this.gesture === Gesture.AWAIT_TARGET) return "Now click or tap where the handle should go · Esc cancels";
    if (this.gesture === Gesture.PLACING && this.preview?.target) return "Release on the target";
    if (this.gesture === Gesture.PAINTING) {
      return this.tool === Tool.FLEXIBLE ? "Painting the area that may move" : this.tool === Tool.FIXED ? "Painting a fixed area" : "Erasing the mask";
    }
    return null;
  }
}
