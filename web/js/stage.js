// The stage: the image drawn on a canvas sized to its displayed size (the zoom: "fit" shows it
// whole but at most 4x its resolution, or a chosen step; web/js/zoom.js), smoothly resampled up
// to 4x and as pixels beyond, inside a scroll box that pans when it is larger than the area; and
// an overlay canvas at device-pixel resolution for the mask, the point pairs, previews and
// others' cursors. Points map to image pixels through the displayed size at every zoom.

import { imageToCanvas, MASK_CELL } from "./protocol.js";
import { canvasRatio, FIT, fitScale, normaliseZoom, pixelated, scaleOf, stepZoom } from "./zoom.js";

const COLOURS = Object.freeze({
  handle: "#ff4b4b",
  target: "#3d8bff",
  lost: "#8d939c", // a handle point tracking lost (frame.lost): grey, with a dashed amber ring and "?"
  lostRing: "#ffb020",
  flexible: [72, 220, 140, 0.34],
  fixed: [170, 130, 255, 0.36],
  outline: "rgba(8, 10, 14, 0.75)",
  white: "#ffffff",
});
const POINT_R = 6.5; // CSS px radius of a handle or target dot
const RING_R = 10; // owner ring
const CURSOR_TAU_MS = 70; // smoothing time constant for others' cursors
const WHEEL_STEP = 60; // Ctrl/⌘+wheel (or pinch) delta that makes one zoom step

export class Stage {
  /**
   * els: the area the image may fill (stage), its scroll box (scroll), the box sized to the image
   * (wrap) and the two canvases.
   * @param {{stage: HTMLElement, scroll: HTMLElement, wrap: HTMLElement, image: HTMLCanvasElement, overlay: HTMLCanvasElement}} els
   */
  constructor(els, zoom = FIT) {
    this.els = els;
    this.imageCtx = els.image.getContext("2d");
    this.overlayCtx = els.overlay.getContext("2d");
    this.imageW = 0; // model pixels
    this.imageH = 0;
    this.zoom = zoom; // "fit" or CSS px per image pixel (a zoom step)
    this.fit = 1; // the fit scale for the current area
    this.cssW = 0; // displayed size
    this.cssH = 0;
    this.dpr = 1; // canvas px per CSS px (the screen's, within the canvas budget)
    this.pixelated = false;
    this.bitmap = null;
    this.maskCanvas = null;
    this.maskKey = null;
    this.smoothCursors = new Map(); // id -> {x, y} displayed (image px)
    this.lastAnimT = 0;
    this.onResize = () => {}; // the displayed size or the fit scale changed
    this.onZoom = () => {}; // the zoom changed (the control, a shortcut, the wheel)
    this.wheelDelta = 0;
    this.resizeObserver = new ResizeObserver(() => this.layout());
    this.resizeObserver.observe(els.stage);
    window.matchMedia?.(`(resolution: ${window.devicePixelRatio}dppx)`).addEventListener?.("change", () => this.layout());
    els.scroll.addEventListener("wheel", (e) => this.onWheel(e), { passive: false });
  }

  /** Set the model's image size (from the room state) and lay out. */
  setImageSize(w, h) {
    if (w === this.imageW && h === this.imageH) return;
    this.imageW = w;
    this.imageH = h;
    this.zoom = normaliseZoom(this.zoom, w, h);
    this.layout();
  }

  /** CSS px per image pixel shown now. */
  get scale() {
    return this.imageW ? this.cssW / this.imageW : 1;
  }

  /**
   * Show the image at a zoom ("fit" or a step), keeping the image point under anchor (viewport
   * px {x, y}; default the middle of the visible area) where it is.
   */
  setZoom(zoom, anchor = null) {
    const z = normaliseZoom(zoom, this.imageW, this.imageH);
    if (z === this.zoom) return;
    const view = this.els.scroll.getBoundingClientRect();
    const at = anchor || { x: view.left + view.width / 2, y: view.top + view.height / 2 };
    const before = this.els.wrap.getBoundingClientRect();
    const fx = before.width ? (at.x - before.left) / before.width : 0.5;
    const fy = before.height ? (at.y - before.top) / before.height : 0.5;
    this.zoom = z;
    this.layout();
    this.onZoom();
    const after = this.els.wrap.getBoundingClientRect();
    this.els.scroll.scrollLeft += after.left + fx * after.width - at.x;
    this.els.scroll.scrollTop += after.top + fy * after.height - at.y;
  }

  /** One step in (dir +1) or out (-1) from the scale shown now. */
  zoomBy(dir, anchor = null) {
    if (!this.imageW) return;
    this.setZoom(stepZoom(this.scale, dir, this.imageW, this.imageH), anchor);
  }

  /** Ctrl/⌘ + wheel, and trackpad pinches (which arrive as such), zoom at the pointer. */
  onWheel(e) {
    if (!(e.ctrlKey || e.metaKey) || !this.imageW) return;
    e.preventDefault(); // not the browser's page zoom
    const unit = e.deltaMode === 1 ? 40 : e.deltaMode === 2 ? 800 : 1;
    this.wheelDelta += e.deltaY * unit;
    if (Math.abs(this.wheelDelta) < WHEEL_STEP) return;
    const dir = this.wheelDelta < 0 ? 1 : -1;
    this.wheelDelta = 0;
    this.zoomBy(dir, { x: e.clientX, y: e.clientY });
  }

  /** Size the image for the zoom: fit (whole, at most 4x) or the chosen step (scrolls if larger). */
  layout() {
    const W = this.imageW || 1;
    const H = this.imageH || 1;
    const box = this.els.stage.getBoundingClientRect();
    const pad = box.width < 520 ? 6 : 16;
    const availW = Math.max(32, box.width - 2 * pad);
    const availH = Math.max(32, box.height - 2 * pad);
    const fit = fitScale(W, H, availW, availH);
    const scale = scaleOf(this.zoom, fit);
    const round = this.zoom === FIT ? Math.floor : Math.round;
    const cssW = Math.max(16, round(W * scale));
    const cssH = Math.max(16, round(H * scale));
    const dpr = canvasRatio(cssW, cssH, window.devicePixelRatio);
    const fitChanged = fit !== this.fit;
    this.fit = fit;
    this.els.scroll.style.padding = `${pad}px`;
    if (cssW === this.cssW && cssH === this.cssH && dpr === this.dpr) {
      if (fitChanged) this.onResize();
      return;
    }
    this.cssW = cssW;
    this.cssH = cssH;
    this.dpr = dpr;
    this.pixelated = pixelated(cssW / W);
    this.els.wrap.style.width = `${cssW}px`;
    this.els.wrap.style.height = `${cssH}px`;
    this.els.wrap.classList.toggle("is-pixelated", this.pixelated);
    for (const c of [this.els.image, this.els.overlay]) {
      c.width = Math.round(cssW * dpr);
      c.height = Math.round(cssH * dpr);
    }
    this.drawImage();
    this.onResize();
  }

  /** Show a decoded frame (the caller owns closing the previous bitmap). */
  setBitmap(bitmap) {
    this.bitmap = bitmap;
    this.drawImage();
  }

  drawImage() {
    const ctx = this.imageCtx;
    const c = this.els.image;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, c.width, c.height);
    if (!this.bitmap) return;
    ctx.imageSmoothingEnabled = !this.pixelated;
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(this.bitmap, 0, 0, c.width, c.height);
  }

  /** Image pixels -> CSS px within the canvas. */
  toCss(p) {
    return imageToCanvas(p[0], p[1], this.cssW, this.cssH, this.imageW, this.imageH);
  }

  /**
   * Draw the overlay. scene: {state, showMask, selected, hover, preview, cursors, brush,
   * colourOf(id), you}. Returns true while an animation (cursor smoothing) wants another frame.
   */
  drawOverlay(scene, now = performance.now()) {
    const ctx = this.overlayCtx;
    const c = this.els.overlay;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, c.width, c.height);
    const s = scene.state;
    if (!s || !this.imageW) return false;
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    if (scene.showMask) this.drawMask(ctx, s.mask);
    for (const p of s.pairs) {
      this.drawPair(ctx, p, {
        ring: scene.colourOf(p.owner),
        selected: p.id === scene.selected,
        hover: scene.hover && scene.hover.pair === p.id ? scene.hover.which : null,
      });
    }
    if (scene.preview) this.drawPreview(ctx, scene.preview, scene.myColour);
    if (scene.brush) this.drawBrush(ctx, scene.brush);
    const animating = this.drawCursors(ctx, scene.cursors || [], now);
    return animating;
  }

  drawMask(ctx, mask) {
    if (!mask || !mask.cells) return;
    const key = mask.cells;
    if (this.maskKey !== key) {
      this.maskKey = key;
      this.maskCanvas = paintMaskCanvas(mask);
    }
    if (!this.maskCanvas) return;
    ctx.save();
    ctx.imageSmoothingEnabled = true; // soft edges: the grid is coarse next to the image
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(this.maskCanvas, 0, 0, this.cssW, this.cssH);
    ctx.restore();
  }

  drawPair(ctx, pair, { ring, selected, hover }) {
    const [hx, hy] = this.toCss(pair.handle);
    const [tx, ty] = this.toCss(pair.target);
    const lineColour = ring || "#d0d4dc";
    // arrow from the handle's edge to the target's edge
    const dx = tx - hx;
    const dy = ty - hy;
    const len = Math.hypot(dx, dy);
    if (len > 2 * RING_R + 4) {
      const ux = dx / len;
      const uy = dy / len;
      const sx = hx + ux * (RING_R + 2);
      const sy = hy + uy * (RING_R + 2);
      const ex = tx - ux * (RING_R + 3);
      const ey = ty - uy * (RING_R + 3);
      arrow(ctx, sx, sy, ex, ey, COLOURS.outline, 5.5, 11);
      arrow(ctx, sx, sy, ex, ey, lineColour, 2.5, 9);
    }
    if (selected) {
      for (const [x, y] of [[hx, hy], [tx, ty]]) {
        ctx.beginPath();
        ctx.arc(x, y, RING_R + 5, 0, 2 * Math.PI);
        ctx.strokeStyle = "rgba(255,255,255,0.9)";
        ctx.lineWidth = 1.5;
        ctx.setLineDash([4, 3]);
        ctx.stroke();
        ctx.setLineDash([]);
      }
    }
    dot(ctx, tx, ty, COLOURS.target, ring, hover === "target");
    dot(ctx, hx, hy, pair.lost ? COLOURS.lost : COLOURS.handle, ring, hover === "handle");
    if (pair.lost) lostMark(ctx, hx, hy);
  }

  drawPreview(ctx, pv, colour) {
    const [hx, hy] = this.toCss(pv.handle);
    if (pv.target) {
      const [tx, ty] = this.toCss(pv.target);
      ctx.save();
      ctx.setLineDash([6, 5]);
      arrow(ctx, hx, hy, tx, ty, COLOURS.outline, 5, 0);
      arrow(ctx, hx, hy, tx, ty, colour || "#fff", 2, 9);
      ctx.restore();
      dot(ctx, tx, ty, COLOURS.target, colour, false, 0.75);
    }
    dot(ctx, hx, hy, COLOURS.handle, colour, true);
  }

  drawBrush(ctx, brush) {
    const [x, y] = this.toCss(brush.pos);
    const r = Math.max(2, brush.radius * this.scale);
    ctx.beginPath();
    ctx.arc(x, y, r, 0, 2 * Math.PI);
    ctx.lineWidth = 3;
    ctx.strokeStyle = "rgba(0,0,0,0.55)";
    ctx.stroke();
    ctx.lineWidth = 1.5;
    ctx.strokeStyle = brush.mode === "flexible" ? "#63e6a2" : brush.mode === "fixed" ? "#c4a6ff" : "#ffffff";
    ctx.stroke();
    ctx.beginPath();
    ctx.arc(x, y, 1.5, 0, 2 * Math.PI);
    ctx.fillStyle = "#fff";
    ctx.fill();
  }

  /** Others' cursors, eased toward their newest position; dimmed when idle; a spotlit one ringed. */
  drawCursors(ctx, cursors, now) {
    const dt = this.lastAnimT ? Math.min(100, now - this.lastAnimT) : 16;
    this.lastAnimT = now;
    const k = 1 - Math.exp(-dt / CURSOR_TAU_MS);
    let animating = false;
    const seen = new Set();
    for (const cur of cursors) {
      seen.add(cur.id);
      let sm = this.smoothCursors.get(cur.id);
      if (!sm) this.smoothCursors.set(cur.id, (sm = { x: cur.pos[0], y: cur.pos[1] }));
      sm.x += (cur.pos[0] - sm.x) * k;
      sm.y += (cur.pos[1] - sm.y) * k;
      if (Math.abs(cur.pos[0] - sm.x) + Math.abs(cur.pos[1] - sm.y) > 0.05) animating = true;
      else [sm.x, sm.y] = cur.pos;
      const [x, y] = this.toCss([sm.x, sm.y]);
      if (cur.spotlight) {
        spotlightRing(ctx, x, y, cur.colour, now);
        animating = true;
      }
      drawCursor(ctx, x, y, cur.colour, cur.name, cur.idle && !cur.spotlight ? 0.4 : 1);
    }
    for (const id of this.smoothCursors.keys()) if (!seen.has(id)) this.smoothCursors.delete(id);
    return animating;
  }

  /** The pair point under a CSS position: {pair, which} or null (within a finger's reach). */
  hitTest(state, cx, cy, radius = 14) {
    if (!state) return null;
    let best = null;
    let bestD = radius;
    for (const p of state.pairs) {
      for (const which of ["target", "handle"]) {
        const [x, y] = this.toCss(p[which]);
        const d = Math.hypot(x - cx, y - cy);
        if (d <= bestD) {
          bestD = d;
          best = { pair: p.id, which };
        }
      }
    }
    return best;
  }
}

function dot(ctx, x, y, fill, ring, highlight, alpha = 1) {
  ctx.save();
  ctx.globalAlpha = alpha;
  if (ring) {
    ctx.beginPath();
    ctx.arc(x, y, RING_R, 0, 2 * Math.PI);
    ctx.lineWidth = 4.5;
    ctx.strokeStyle = COLOURS.outline;
    ctx.stroke();
    ctx.lineWidth = 2.5;
    ctx.strokeStyle = ring;
    ctx.stroke();
  }
  ctx.beginPath();
  ctx.arc(x, y, highlight ? POINT_R + 1.5 : POINT_R, 0, 2 * Math.PI);
  ctx.fillStyle = fill;
  ctx.fill();
  ctx.lineWidth = 1.75;
  ctx.strokeStyle = COLOURS.white;
  ctx.stroke();
  ctx.restore();
}

/** A lost handle: a dashed amber ring around it and a "?" on it (the status line says why). */
function lostMark(ctx, x, y) {
  ctx.save();
  ctx.beginPath();
  ctx.arc(x, y, RING_R + 4, 0, 2 * Math.PI);
  ctx.setLineDash([3, 3]);
  ctx.lineWidth = 2;
  ctx.strokeStyle = COLOURS.lostRing;
  ctx.stroke();
  ctx.setLineDash([]);
  ctx.font = "bold 10px system-ui, sans-serif";
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  ctx.fillStyle = COLOURS.white;
  ctx.fillText("?", x, y + 0.5);
  ctx.restore();
}

function arrow(ctx, sx, sy, ex, ey, colour, width, head) {
  const a = Math.atan2(ey - sy, ex - sx);
  ctx.strokeStyle = colour;
  ctx.fillStyle = colour;
  ctx.lineWidth = width;
  ctx.lineCap = "round";
  ctx.beginPath();
  ctx.moveTo(sx, sy);
  ctx.lineTo(ex - Math.cos(a) * head * 0.6, ey - Math.sin(a) * head * 0.6);
  ctx.stroke();
  if (head > 0) {
    ctx.setLineDash([]);
    ctx.beginPath();
    ctx.moveTo(ex, ey);
    ctx.lineTo(ex - head * Math.cos(a - 0.45), ey - head * Math.sin(a - 0.45));
    ctx.lineTo(ex - head * Math.cos(a + 0.45), ey - head * Math.sin(a + 0.45));
    ctx.closePath();
    ctx.fill();
  }
}

/** Rings that grow from a cursor's tip (someone's avatar was clicked: "here they are"). */
function spotlightRing(ctx, x, y, colour, now) {
  ctx.save();
  for (const phase of [0, 0.5]) {
    const t = (now / 900 + phase) % 1;
    ctx.beginPath();
    ctx.arc(x, y, 8 + 34 * t, 0, 2 * Math.PI);
    ctx.globalAlpha = 1 - t;
    ctx.lineWidth = 4;
    ctx.strokeStyle = COLOURS.outline;
    ctx.stroke();
    ctx.lineWidth = 2.5;
    ctx.strokeStyle = colour;
    ctx.stroke();
  }
  ctx.restore();
}

function drawCursor(ctx, x, y, colour, name, alpha) {
  ctx.save();
  ctx.globalAlpha = alpha;
  ctx.translate(x, y);
  ctx.beginPath();
  ctx.moveTo(0, 0);
  ctx.lineTo(0, 16);
  ctx.lineTo(4.2, 12.2);
  ctx.lineTo(7.2, 18.6);
  ctx.lineTo(9.8, 17.4);
  ctx.lineTo(6.9, 11.2);
  ctx.lineTo(12, 11);
  ctx.closePath();
  ctx.fillStyle = colour;
  ctx.fill();
  ctx.lineWidth = 1.4;
  ctx.strokeStyle = "#ffffff";
  ctx.stroke();
  if (name) {
    ctx.font = "600 11.5px ui-sans-serif, system-ui, sans-serif";
    const w = ctx.measureText(name).width + 12;
    const bx = 11;
    const by = 17;
    ctx.beginPath();
    roundRect(ctx, bx, by, w, 19, 9.5);
    ctx.fillStyle = colour;
    ctx.fill();
    ctx.fillStyle = readableInk(colour);
    ctx.textBaseline = "middle";
    ctx.fillText(name, bx + 6, by + 10);
  }
  ctx.restore();
}

function roundRect(ctx, x, y, w, h, r) {
  ctx.moveTo(x + r, y);
  ctx.arcTo(x + w, y, x + w, y + h, r);
  ctx.arcTo(x + w, y + h, x, y + h, r);
  ctx.arcTo(x, y + h, x, y, r);
  ctx.arcTo(x, y, x + w, y, r);
  ctx.closePath();
}

/** Black or white text for a #rrggbb background. */
export function readableInk(hex) {
  const n = parseInt(String(hex).slice(1, 7), 16);
  if (Number.isNaN(n)) return "#000";
  const r = (n >> 16) & 255;
  const g = (n >> 8) & 255;
  const b = n & 255;
  return 0.299 * r + 0.587 * g + 0.114 * b > 150 ? "#101217" : "#ffffff";
}

/** The mask grid as a small canvas, one pixel per cell (scaled up when drawn). */
function paintMaskCanvas(mask) {
  const { w, h, cells } = mask;
  if (!cells.some((v) => v !== MASK_CELL.none)) return null;
  const canvas = document.createElement("canvas");
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(w, h);
  for (let i = 0; i < w * h; i++) {
    const v = cells[i];
    const c = v === MASK_CELL.flexible ? COLOURS.flexible : v === MASK_CELL.fixed ? COLOURS.fixed : null;
    if (!c) continue;
    img.data[4 * i] = c[0];
    img.data[4 * i + 1] = c[1];
    img.data[4 * i + 2] = c[2];
    img.data[4 * i + 3] = Math.round(c[3] * 255);
  }
  ctx.putImageData(img, 0, 0);
  return canvas;
}
