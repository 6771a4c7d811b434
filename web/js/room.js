// The room page: wires the connection, the room model, the frame pipeline, the stage and the
// editor to the page's controls. One instance per page load.

import { Connection, ConnState } from "./connection.js";
import { Editor, Gesture, Tool } from "./editor.js";
import { exportPng } from "./export.js";
import { browserDecodeImage, FramePipeline, RateMeter } from "./frames.js";
import { DragStatus, RoomModel } from "./model.js";
import * as protocol from "./protocol.js";
import { cleanName, errorText, LIMITS, msg, parseFragment, parseRoomPath, randomId, randomSeed, validateClient } from "./protocol.js";
import { browserSecret, NamePrompt, PersonCard } from "./people.js";
import { matchShortcut, SHORTCUTS } from "./shortcuts.js";
import { Stage } from "./stage.js";
import { throttle } from "./throttle.js";
import { $, copyText, initials, NAME_KEY, RECENT_KEY, setText, store, toast, typingInField } from "./ui.js";
import { exportFactor, FIT, parseZoom, pngName, scaleOf, zoomLabel, zoomSteps } from "./zoom.js";

const BANNER_AFTER_MS = 5000; // "reconnecting" only after this long offline
const QUIET_ERRORS = new Set(["unknown_pair"]); // someone else removed it: not worth a message
const ZOOM_KEY = "livedrag.zoom"; // this browser's zoom: a view setting, never sent to the room

/** What to tell the user for a close code that ends the session (shared/protocol.md section 11). */
const FATAL = {
  bad_hello: ["Could not join", "The server did not accept this page's greeting. Reload the page to try again."],
  bad_capability: ["This link is not valid", "The link is wrong, incomplete or has expired. Ask the person who shared it for a new one."],
  version_mismatch: ["This page is out of date", "The server runs a different version of livedrag. Reload the page to get the current one."],
  origin_forbidden: ["Not allowed from this address", "The server does not accept connections from this site. Open the room from the server's own address."],
  room_not_found: ["Room not found", "There is no such room on this server: it may have been deleted, or the link is mistyped. Create a new room from the start page."],
  too_large: ["Disconnected", "This page sent a message that was too large. Reload the page to continue."],
  protocol_violation: ["Disconnected", "The server closed the connection after too many invalid messages. Reload the page to continue."],
  room_closed: ["This room was deleted", "An editor deleted this room, or it went unused for a long time: its links no longer work. Create a new room from the start page."],
  replaced: ["Opened somewhere else", "This room was opened again with this page's session on another connection. Reload to continue here."],
  closed: ["Disconnected", "The server refused the connection."],
};

/** The fatal card for the editor who deleted the room (DELETE /api/rooms/{room}, protocol 2a). */
const DELETED_BY_YOU = ["Room deleted", "You deleted this room; everyone in it was disconnected. Create a new room from the start page."];

const RETRY_TEXT = {
  room_full: "This room is full.",
  server_full: "The server is full.",
  rate_limited: "Too many messages were sent.",
  too_slow: "The connection fell behind.",
  shutting_down: "The server is restarting.",
  hello_timeout: "The server did not hear from this page in time.",
  idle_timeout: "The connection was idle for too long.",
  internal_error: "The server hit an internal error.",
};

const END_TEXT = {
  reached: (n) => `Reached the targets in ${n} step${n === 1 ? "" : "s"}.`,
  converged: (n) => `Converged after ${n} step${n === 1 ? "" : "s"}.`,
  max_steps: (n) => `Stopped at the step limit (${n} steps).`,
  stalled: (n) => `Stopped after ${n} steps: the handles stopped getting closer.`,
  lost: (n, m, end) => lostText(n, end.lost || 1, end.pairs || 0),
  stopped: (n) => `Stopped after ${n} step${n === 1 ? "" : "s"}.`,
  error: (n, m) => `The drag failed${m ? `: ${m}` : ""}.`,
};

/** Why a mode is off on this server, in words for the mode switch. */
const modeUnavailableText = (mode, notes) => {
  const name = mode.charAt(0).toUpperCase() + mode.slice(1);
  const why = notes && typeof notes[mode] === "string" ? notes[mode] : "not offered by this server";
  return `${name} mode is not available for this model: ${why}.`;
};

/** A drag that ended with k of its handles lost by point tracking (frame.lost; drawn with "?"):
 * either every handle was lost, or the others reached their targets (a lost handle is left
 * where it was and the drag goes on without it). */
function lostText(n, k, total) {
  const steps = `${n} step${n === 1 ? "" : "s"}`;
  const rest = total > k ? (total - k === 1 ? " The other handle reached its target." : " The other handles reached their targets.") : "";
  if (k > 1) return `Stopped after ${steps}: ${k} handles lost track of their features (marked ?).${rest} Place them again, then Start.`;
  return `Stopped after ${steps}: a handle lost track of its feature (marked ?).${rest} Place it again, then Start.`;
}

/** What a run cut short by a server crash says (state.interrupted, protocol section 7). */
function interruptedText(it) {
  if (it.kind !== "drag") return "The server stopped during the projection; nothing of it was kept.";
  if (it.step > 0) return `The server stopped during the drag; its image from step ${it.step} is kept.`;
  return "The server stopped during the drag before anything could be kept; the image is as before.";
}

/** The sentence for the last finished drag or projection (model.lastEnd), or "". */
function endText(end) {
  if (!end) return "";
  if (end.reason === "interrupted") return interruptedText(end);
  const texts = end.task ? PROJECT_END_TEXT : END_TEXT;
  return texts[end.reason] ? texts[end.reason](end.step, end.message, end) : "";
}

/** What a finished projection says (lastEnd.task set): the same reasons, named for a projection. */
const PROJECT_END_TEXT = {
  converged: (n) => `Projection converged after ${n} step${n === 1 ? "" : "s"}.`,
  max_steps: (n) => (n <= 1 ? "Projected (encoder)." : `Projection done (${n} steps).`),
  stopped: (n) => `Projection stopped after ${n} step${n === 1 ? "" : "s"}; its image is kept.`,
  error: (n, m) => `The projection failed${m ? `: ${m}` : ""}.`,
};

const UPLOAD_TYPES = new Set(["image/png", "image/jpeg", "image/webp"]);

/** Controls that Space or Enter would activate when focused (a click leaves them unfocused). */
const NATIVE_CONTROLS = "button, a[href], summary, input[type=checkbox], input[type=radio]";

class RoomApp {
  constructor() {
    this.room = parseRoomPath(location.pathname);
    const caps = parseFragment(location.hash);
    this.editCap = caps.edit;
    this.viewCap = caps.view || (this.room && store.get(`livedrag.view.${this.room}`));
    if (this.room && caps.view && caps.edit) store.set(`livedrag.view.${this.room}`, caps.view);
    this.cap = caps.edit || caps.view;
    this.clientId = randomId(16);
    this.secret = browserSecret(store); // this browser's identity: the room remembers it (people.js)
    this.spotlight = null; // {id, until}: a member's cursor pointed out on the stage
    this.model = new RoomModel();
    this.showMask = true;
    this.renderQueued = false;
    this.drawMeter = new RateMeter();
    this.errors = [];
    this.info = null; // the last /api/info
    this.infoModel = undefined; // the model whose modes are applied below
    this.infoRetry = null; // timer: ask /api/info again while the room's model loads
    this.infoTries = 0;
    this.modes = null; // engine modes of the room's model (from /api/info)
    this.modeNotes = {}; // mode -> why this model lacks it (from /api/info)
    this.projection = null; // projection methods of the room's model (from /api/info)
    this.maxUpload = 8 * 2 ** 20; // bytes (from /api/info)
    this.uploading = false;
    this.blendSource = "seed";
    this.els = {
      stage: $("canvas-area"),
      scroll: $("canvas-scroll"),
      wrap: $("canvas-wrap"),
      image: $("image-canvas"),
      overlay: $("overlay-canvas"),
    };
    this.stage = new Stage(this.els, parseZoom(store.get(ZOOM_KEY, FIT)));
    this.stage.onResize = () => {
      this.updateZoom();
      this.requestRender();
    };
    this.stage.onZoom = () => {
      store.set(ZOOM_KEY, String(this.stage.zoom));
      this.updateZoom();
    };
    this.editor = new Editor(this, this.els.overlay);
    this.pipeline = new FramePipeline({
      decodeImage: browserDecodeImage,
      onReady: (bitmap, frame) => this.onFrameReady(bitmap, frame),
      ack: (seq) => this.conn?.send(msg.ack(seq)),
      onError: (e) => console.warn("livedrag: could not decode a frame", e),
    });
    this.sendCursor = throttle(
      (pos) => {
        if (this.conn?.joined && this.model.isEditor) this.conn.send(msg.cursor(pos));
      },
      1000 / LIMITS.cursor_hz,
    );
    this.model.subscribe((kind) => this.onModel(kind));
  }

  start() {
    this.bindControls();
    this.renderShortcuts();
    if (!this.room || !this.cap) {
      this.showFatal(
        "This link is incomplete",
        "A room link looks like /r/ROOM#edit=KEY or /r/ROOM#view=KEY. The part after # is missing or damaged: copy the whole link again.",
      );
      return;
    }
    setText($("room-name"), this.room);
    document.title = `livedrag · ${this.room}`;
    this.setLinks();
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    this.conn = new Connection({
      url: `${scheme}//${location.host}/ws/${encodeURIComponent(this.room)}`,
      cap: this.cap,
      clientId: this.clientId,
      secret: this.secret,
      getName: () => store.get(NAME_KEY, ""),
      onMessage: (m) => this.onMessage(m),
      onState: () => this.onConnState(),
      debug: store.get("livedrag.debug") === "1",
    });
    this.conn.start();
    this.loadInfo();
    setInterval(() => this.tick(), 500);
    window.addEventListener("online", () => this.conn.retryNow());
    window.addEventListener("pagehide", () => this.conn.stop());
    window.addEventListener("pageshow", (e) => {
      if (e.persisted) this.conn.start(); // back from the back-forward cache
    });
    const visibility = () => this.pipeline.setPaused(document.hidden);
    document.addEventListener("visibilitychange", visibility);
    visibility();
  }

  /** The server's models (/api/info): the room's model's modes (those it lacks are offered
   * disabled, with the reason) and projection methods. */
  async loadInfo() {
    try {
      const r = await fetch("/api/info", { headers: { Accept: "application/json" } });
      if (!r.ok) return;
      const info = await r.json();
      this.info = info;
      if (Number.isFinite(info.max_upload_bytes)) this.maxUpload = info.max_upload_bytes;
      this.applyModelInfo();
    } catch {
      /* the websocket reports connection problems */
    }
  }

  /** Take the modes of this room's model from the last /api/info: its entry in `models` once the
   * server has loaded it (asked again shortly while it loads), else the server's default model
   * when the room is on it. */
  applyModelInfo() {
    const info = this.info;
    if (!info) return;
    const name = this.model.state?.image.model ?? null;
    this.infoModel = name;
    const entry = name && Array.isArray(info.models) ? info.models.find((m) => m && m.name === name) : null;
    let src = null;
    if (entry?.loaded) src = entry;
    else if (!entry && (!name || name === info.model)) src = info;
    if (src) {
      if (Array.isArray(src.modes)) this.modes = src.modes;
      this.modeNotes = src.unavailable_modes && typeof src.unavailable_modes === "object" ? src.unavailable_modes : {};
      if (Array.isArray(src.projection)) this.projection = src.projection;
    } else if (entry && !this.infoRetry && ++this.infoTries <= 20) {
      this.infoRetry = setTimeout(() => {
        this.infoRetry = null;
        this.loadInfo();
      }, 1500);
    }
    this.updatePanel();
  }

  // --- editing API used by the editor and the controls ---------------------------------------

  canEdit() {
    return !!(this.conn?.joined && this.model.isEditor && this.model.state);
  }

  /** Validate and send an edit; show it at once if it is optimistic. Returns its id or null. */
  edit(m) {
    if (!this.canEdit()) {
      if (this.model.role === "viewer") toast("This is a view-only link: editing is off.");
      else toast("Offline: edits are paused until the connection is back.", "error");
      return null;
    }
    const img = this.model.state.image;
    try {
      validateClient(m, [img.w, img.h]);
    } catch (e) {
      toast(`Not sent: ${e.message}`, "error");
      return null;
    }
    const id = this.conn.send(m);
    if (id) this.model.addPending(id, m);
    this.requestRender();
    return id;
  }

  onChange() {
    this.updateToolbar();
    this.requestRender();
  }

  /** An edit gesture on the image that cannot be sent: say why, where the user looks. */
  refuseEdit() {
    if (this.model.role === "viewer") return;
    if (this.conn && !this.conn.joined) {
      const card = $("offline-card");
      card.classList.remove("is-nudged");
      void card.offsetWidth; // restart the animation
      card.classList.add("is-nudged");
      toast("Offline: edits are paused until the connection is back.", "error");
    }
  }

  /** A run the server lost in a crash (state.interrupted): tell this page once per run. */
  reportInterrupted(it) {
    if (!it || this.reportedRun === `${it.kind}:${it.drag}`) return;
    this.reportedRun = `${it.kind}:${it.drag}`;
    toast(interruptedText(it), "info", 8000);
  }

  toast(text) {
    toast(text);
  }

  // --- server messages --------------------------------------------------------------------------

  onMessage(m) {
    this.model.receive(m);
    switch (m.t) {
      case "welcome":
        document.body.classList.toggle("viewer", m.role === "viewer");
        document.body.classList.toggle("editor", m.role === "editor");
        if (m.role === "viewer" && this.editor.isMaskTool) this.editor.setTool(Tool.POINTS);
        if (m.limits?.cursor_hz) this.sendCursor.setInterval(1000 / m.limits.cursor_hz);
        rememberRoom(this.room, this.editCap ? "edit" : "view", location.pathname + location.hash);
        if (m.role === "editor") this.namePrompt.maybeShow();
        break;
      case "snapshot":
        this.pipeline.reset();
        this.editor.abort();
        this.drawMeter.reset();
        document.body.classList.remove("is-loading");
        if (!this.stage.bitmap) setText($("placeholder-text"), "Waiting for the first frame…");
        this.reportInterrupted(m.state.interrupted);
        break;
      case "frame":
        this.pipeline.push(m);
        break;
      case "status":
        if (m.status === DragStatus.IDLE && m.reason === "error") {
          const text = this.model.lastEnd?.task ? PROJECT_END_TEXT.error : END_TEXT.error;
          toast(text(m.step, m.message), "error", 6000);
        }
        break;
      case "error":
        this.onError(m);
        break;
      default:
        break;
    }
  }

  onError(m) {
    this.errors.push(m); // the newest few, for debugging and the browser tests
    if (this.errors.length > 20) this.errors.shift();
    if (QUIET_ERRORS.has(m.code)) return;
    const friendly = {
      forbidden: "This is a view-only link: editing is off.",
      rate_limited: "Slow down: too many edits at once.",
      no_points: "Add a point pair first: press on a handle and release on its target.",
      busy: this.model.projecting ? "Wait for the projection to finish, or stop it." : "Wait for the drag to finish first.",
      no_region: "Paint the area to blend with the Flexible brush first.",
      no_upload: "Upload a picture first (or blend from another seed).",
      nothing_to_undo: "Nothing of yours to undo: undo takes back your own actions.",
      nothing_to_redo: "Nothing of yours to redo.",
      undo_conflict: m.message ? `${m.message.charAt(0).toUpperCase()}${m.message.slice(1)}.` : null,
      storage_failed: "The server could not save the room; the edit is kept in memory for now.",
    }[m.code];
    const long = m.code === "storage_failed" || m.code === "undo_conflict";
    toast(friendly || m.message || errorText(m.code), "error", long ? 7000 : 3600);
  }

  onFrameReady(bitmap, frame) {
    this.stage.setBitmap(bitmap);
    $("placeholder").hidden = true;
    if (frame.status === DragStatus.RUNNING || frame.status === DragStatus.PROJECTING) this.drawMeter.tick();
    this.lastDrawnFps = frame.fps;
    this.updateHud();
  }

  onModel(kind) {
    if (kind === "state") {
      const s = this.model.state;
      if (s) this.stage.setImageSize(s.image.w, s.image.h);
      if (s && s.image.model !== this.infoModel) this.applyModelInfo();
      if (this.editor.selected && !this.model.display()?.pairs.some((p) => p.id === this.editor.selected)) {
        this.editor.selected = null;
      }
      this.updateToolbar();
      this.updatePanel();
      this.updateHud();
      this.requestRender();
    } else if (kind === "members") {
      this.renderMembers();
    } else if (kind === "cursors") {
      this.requestRender();
    } else if (kind === "frame" || kind === "status" || kind === "undo") {
      this.updateHud();
      this.updatePanel();
      this.updateToolbar();
    }
  }

  // --- connection state ----------------------------------------------------------------------

  onConnState() {
    const c = this.conn;
    const offline = c.state !== ConnState.JOINED;
    document.body.classList.toggle("offline", offline);
    const conn = $("conn");
    conn.dataset.state = c.state;
    const label = {
      connecting: "Connecting…",
      joined: "Live",
      waiting: "Offline",
      failed: "Disconnected",
      stopped: "Closed",
    }[c.state];
    setText($("conn-text"), label);
    if (offline) {
      this.editor.abort();
      this.sendCursor.cancel();
    }
    this.updateOffline();
    if (c.state === ConnState.FAILED) {
      const name = c.failure.name;
      const [title, text] =
        name === "room_closed" && this.deleting ? DELETED_BY_YOU : FATAL[name] || FATAL.closed;
      if (name === "room_closed" || name === "room_not_found") forgetRoom(this.room);
      this.toggleDelete(false);
      this.showFatal(title, text, name);
    }
    this.updateBanner();
    this.updateToolbar();
    this.updatePanel();
  }

  /** Lost the connection after having been in the room: dim the image and say so at once. */
  updateOffline() {
    const c = this.conn;
    const lost = !!c && this.model.joined && c.state !== ConnState.JOINED && c.state !== ConnState.FAILED;
    document.body.classList.toggle("conn-lost", lost);
    $("offline-veil").hidden = !lost;
    if (!lost) return;
    const cause = RETRY_TEXT[c.lastClose?.info?.name] || "Connection lost.";
    setText($("offline-title"), cause);
    let when = "Reconnecting…";
    if (c.state === ConnState.WAITING && c.retryAt) {
      const s = Math.ceil((c.retryAt - Date.now()) / 1000);
      if (s > 1) when = `Reconnecting in ${s} s…`;
    }
    setText($("offline-text"), `${when}${this.model.isEditor ? " Edits are paused." : ""}`);
  }

  tick() {
    this.updateOffline();
    this.updateBanner();
    this.updateHud();
    if (this.model.cursors.size) this.requestRender(); // idle cursors dim
    this.model.expirePending();
  }

  updateBanner() {
    const c = this.conn;
    const banner = $("banner");
    if (!c || c.state === ConnState.JOINED || c.state === ConnState.FAILED || c.offlineSince == null) {
      banner.hidden = true;
      return;
    }
    const offlineFor = Date.now() - c.offlineSince;
    const cause = c.lastClose?.info?.name;
    const loud = cause === "room_full" || cause === "server_full" || cause === "rate_limited";
    if (offlineFor < BANNER_AFTER_MS && !loud) {
      banner.hidden = true;
      return;
    }
    const why = RETRY_TEXT[cause] || (this.model.joined ? "Connection lost." : "Cannot reach the server.");
    let when = "Reconnecting…";
    if (c.state === ConnState.WAITING && c.retryAt) {
      const s = Math.max(0, Math.ceil((c.retryAt - Date.now()) / 1000));
      when = s > 0 ? `Reconnecting in ${s} s…` : "Reconnecting…";
    }
    setText($("banner-text"), `${why} ${when}${this.model.isEditor ? " Edits are paused." : ""}`);
    banner.classList.toggle("is-error", loud);
    $("banner-retry").hidden = c.state !== ConnState.WAITING;
    banner.hidden = false;
  }

  showFatal(title, text, name = null) {
    setText($("fatal-title"), title);
    setText($("fatal-text"), text);
    $("fatal").dataset.reason = name || "";
    $("fatal").hidden = false;
    $("banner").hidden = true;
    document.body.classList.remove("is-loading");
  }

  // --- rendering -----------------------------------------------------------------------------

  requestRender() {
    if (this.renderQueued) return;
    this.renderQueued = true;
    requestAnimationFrame((t) => {
      this.renderQueued = false;
      const animating = this.stage.drawOverlay(this.scene(), t);
      if (animating) this.requestRender();
    });
  }

  scene() {
    let state = this.model.display();
    const ed = this.editor.scene();
    if (state && ed.moving) {
      const { pair, which, pos } = ed.moving;
      state = { ...state, pairs: state.pairs.map((p) => (p.id === pair ? { ...p, [which]: pos } : p)) };
    }
    if (state && ed.brush && this.editor.stroke) {
      // the stroke in progress shows before the server's mask comes back
      const s = this.editor.stroke;
      const unsent = s.points.slice(Math.max(0, s.sent - 1));
      if (unsent.length) {
        const cells = protocol.paintCells(state.mask.cells, state.mask.w, state.mask.h, state.image.w, state.image.h, s.mode, this.editor.brushRadius, unsent);
        state = { ...state, mask: { ...state.mask, cells } };
      }
    }
    return {
      state,
      showMask: this.showMask,
      selected: ed.selected,
      hover: ed.hover,
      preview: ed.preview,
      brush: ed.brush,
      cursors: this.spotlitCursors(),
      colourOf: (id) => this.model.memberColour(id),
      myColour: this.model.colour,
    };
  }

  /** Others' cursors; the one an avatar's card points out is marked (the stage rings it). */
  spotlitCursors() {
    const cursors = this.model.otherCursors();
    const sp = this.spotlight;
    if (!sp || performance.now() > sp.until) return cursors;
    return cursors.map((c) => (c.id === sp.id ? { ...c, spotlight: true } : c));
  }

  /** Point out a member's cursor for a moment, scrolling the zoomed image to it. */
  spotlightCursor(id) {
    const cursor = this.model.otherCursors().find((c) => c.id === id);
    if (!cursor) return;
    this.spotlight = { id, until: performance.now() + 2500 };
    const [x, y] = this.stage.toCss(cursor.pos);
    const box = this.els.scroll;
    const wrap = this.els.wrap;
    const left = wrap.offsetLeft + x - box.scrollLeft;
    const top = wrap.offsetTop + y - box.scrollTop;
    if (left < 0 || top < 0 || left > box.clientWidth || top > box.clientHeight) {
      box.scrollTo({ left: wrap.offsetLeft + x - box.clientWidth / 2, top: wrap.offsetTop + y - box.clientHeight / 2, behavior: "smooth" });
    }
    this.requestRender();
    setTimeout(() => this.requestRender(), 2600);
  }

  updateHud() {
    const s = this.model.state;
    const f = this.model.frame;
    const status = s?.status ?? DragStatus.IDLE;
    const hs = $("hud-status");
    hs.dataset.status = status;
    const starting = status === DragStatus.RUNNING && !(f && f.drag === s.drag && f.status !== DragStatus.IDLE);
    const label = starting ? "Starting…" : { idle: "Idle", running: "Running", stopping: "Stopping", projecting: "Projecting" }[status];
    setText($("hud-status-text"), label || status);
    const c = this.conn;
    const lost = !!c && this.model.joined && c.state !== ConnState.JOINED;
    if (lost) {
      // the room's status is unknown while offline: never show a stale "Running"
      hs.dataset.status = c.state === ConnState.FAILED ? "failed" : "offline";
      setText($("hud-status-text"), c.state === ConnState.FAILED ? "Disconnected" : "Offline · reconnecting");
    }
    const step = status !== DragStatus.IDLE && f && f.drag === s.drag ? f.step : s?.step ?? 0;
    setText($("hud-step"), String(step));
    $("hud-step").parentElement.hidden = lost; // the last step seen is no news while offline
    const rate = !lost && (status === DragStatus.RUNNING || status === DragStatus.PROJECTING) ? this.drawMeter.rate : 0;
    setText($("hud-fps"), rate > 0 ? rate.toFixed(rate < 10 ? 1 : 0) : "–");
    if (s) setText($("hud-size"), `${s.image.w}×${s.image.h}`);
    this.updateProjection();
    const hint = lost ? null : this.editor.hint();
    setText($("hint"), hint || "");
    $("hint").hidden = !hint;
  }

  /** The zoom control: the steps offered for this image, the readout, the ends of the ladder. */
  updateZoom() {
    const { imageW: W, imageH: H, zoom, fit } = this.stage;
    if (!W) return;
    const select = $("zoom-level");
    const steps = zoomSteps(W, H);
    const key = `${W}x${H}`;
    if (select.dataset.size !== key) {
      select.dataset.size = key;
      select.replaceChildren(
        ...[FIT, ...steps].map((z) => {
          const o = document.createElement("option");
          o.value = String(z);
          o.textContent = zoomLabel(z, scaleOf(z, fit));
          return o;
        }),
      );
    }
    setText(select.options[0], zoomLabel(FIT, fit));
    select.value = String(zoom);
    const scale = this.stage.scale;
    $("zoom-in").disabled = scale >= steps.at(-1) - 1e-6;
    $("zoom-out").disabled = scale <= steps[0] + 1e-6;
  }

  updateToolbar() {
    const s = this.model.state;
    const can = this.canEdit();
    const idle = s?.status === DragStatus.IDLE;
    const running = s?.status === DragStatus.RUNNING;
    document.body.classList.toggle("tool-mask", this.editor.isMaskTool);
    for (const b of document.querySelectorAll(".tool[data-tool]")) {
      b.setAttribute("aria-checked", String(b.dataset.tool === this.editor.tool));
      b.disabled = !can;
    }
    const display = this.model.display();
    const hasPairs = !!display?.pairs.length;
    const hasMask = !!display?.mask.cells.some((v) => v);
    $("pair-delete").disabled = !can || !this.editor.selected;
    $("points-clear").disabled = !can || !hasPairs;
    $("mask-clear").disabled = !can || !hasMask;
    $("mask-toggle").disabled = false;
    $("undo").disabled = !can || !this.model.canUndo;
    $("redo").disabled = !can || !this.model.canRedo;
    const { undo_kind: undoKind, redo_kind: redoKind } = this.model.undoState;
    $("undo").title = undoKind ? `Undo your ${actionName(undoKind)} (Z or Ctrl+Z)` : "Nothing of yours to undo";
    $("redo").title = redoKind ? `Redo your ${actionName(redoKind)} (Shift+Z or Ctrl+Shift+Z)` : "Nothing of yours to redo";
    const run = $("run");
    const projecting = s?.status === DragStatus.PROJECTING;
    run.disabled = !can || s?.status === DragStatus.STOPPING;
    run.classList.toggle("is-stop", !idle && !!s);
    run.querySelector("use").setAttribute("href", idle || !s ? "#i-play" : "#i-stop");
    setText($("run-label"), !s || idle ? "Start" : running || projecting ? "Stop" : "Stopping…");
    $("upload-btn").disabled = !can || !idle || this.uploading;
    const radius = $("brush-radius");
    if (s) {
      const max = Math.max(4, Math.round(Math.max(s.image.w, s.image.h) / 4));
      if (Number(radius.max) !== max) radius.max = String(max);
    }
    setText($("brush-radius-out"), fmt(this.editor.brushRadius));
    const dotPx = Math.max(4, Math.min(18, this.editor.brushRadius * this.stage.scale * 0.5));
    $("brush-dot").style.width = $("brush-dot").style.height = `${dotPx}px`;
    const mt = $("mask-toggle");
    mt.setAttribute("aria-pressed", String(this.showMask));
    mt.querySelector("use").setAttribute("href", this.showMask ? "#i-eye" : "#i-eye-off");
    this.updateHud();
  }

  updatePanel() {
    const s = this.model.state;
    if (!s) return;
    const can = this.canEdit();
    const idle = s.status === DragStatus.IDLE;
    for (const b of $("mode").querySelectorAll("button")) {
      const available = !this.modes || this.modes.includes(b.dataset.mode);
      b.setAttribute("aria-checked", String(b.dataset.mode === s.params.mode));
      b.disabled = !can || !available;
      b.classList.toggle("is-unavailable", !available);
      if (!available) b.title = modeUnavailableText(b.dataset.mode, this.modeNotes);
    }
    const missing = this.modes ? ["optimize", "predict"].filter((m) => !this.modes.includes(m)) : [];
    const note = $("mode-note");
    note.hidden = missing.length === 0;
    note.textContent = missing.map((m) => modeUnavailableText(m, this.modeNotes)).join(" ");
    const optimize = s.params.mode === "optimize";
    for (const b of $("space").querySelectorAll("button")) {
      b.setAttribute("aria-checked", String(b.dataset.space === s.params.space));
      b.disabled = !can || !optimize;
    }
    setText(
      $("space-note"),
      optimize
        ? `W+ moves each of the first layers on its own (DragGAN's default); W moves them together: stiffer, more plausible.${idle ? "" : " A change applies from the next Start."}`
        : "W / W+ is the optimiser's choice: it does not apply in Predict mode.",
    );
    $("reset-image").disabled = !can || !idle;
    for (const input of $("params").querySelectorAll("input[data-param]")) {
      input.disabled = !can;
      if (document.activeElement === input) continue; // do not overwrite what is being typed
      const v = s.params[input.dataset.param];
      input.value = v == null ? "" : String(v);
      input.removeAttribute("aria-invalid");
    }
    const img = s.image;
    const seedText = img.seed == null ? "uploaded" : `seed ${img.seed}`;
    setText($("image-model"), img.model);
    setText($("image-details"), `${img.w}×${img.h} · ${seedText} · ψ ${fmt(img.truncation)}${img.latent ? " · edited" : ""}`);
    if (document.activeElement !== $("truncation") && !this.truncationTouched) $("truncation").value = String(img.truncation);
    for (const id of ["new-image", "random-image", "seed", "truncation"]) $(id).disabled = !can || !idle;
    const busyUpload = !can || !idle || this.uploading;
    $("upload-pick").disabled = busyUpload;
    const method = $("project-method");
    method.disabled = busyUpload;
    const encoderOption = method.querySelector('option[value="encoder"]');
    const hasEncoder = !this.projection || this.projection.includes("encoder");
    encoderOption.disabled = !hasEncoder;
    encoderOption.textContent = hasEncoder ? "Encoder only (instant)" : "Encoder only (no encoder on this server)";
    if (!hasEncoder && method.value === "encoder") method.value = "optimize";
    for (const b of $("blend-source").querySelectorAll("button")) {
      b.setAttribute("aria-checked", String(b.dataset.source === this.blendSource));
      b.disabled = !can || (b.dataset.source === "upload" && !s.upload);
    }
    if (this.blendSource === "upload" && !s.upload) this.blendSource = "seed";
    $("blend-seed").disabled = !can || this.blendSource !== "seed";
    $("blend-steps").disabled = !can;
    const hasRegion = s.mask.cells.some((v) => v === 1);
    const apply = $("blend-apply");
    apply.disabled = !can || !idle;
    apply.title = hasRegion ? "Blend the source into the flexible area" : "Paint the area with the Flexible brush first";
    const end = this.model.lastEnd || (s.interrupted ? { ...s.interrupted, reason: "interrupted" } : null);
    const result = $("drag-result");
    setText(result, endText(end));
    result.classList.toggle("is-error", end?.reason === "error" || end?.reason === "interrupted");
    this.setDownloads();
  }

  renderMembers() {
    if (this.editingName) {
      this.membersDirty = true; // redraw when the name field closes
      return;
    }
    this.membersDirty = false;
    const list = $("members");
    const members = [...this.model.members.values()];
    const you = this.model.you;
    list.replaceChildren(
      ...members.map((m) => {
        const li = document.createElement("li");
        li.className = "member";
        li.dataset.id = m.id;
        const sw = document.createElement("span");
        sw.className = "swatch";
        sw.style.background = m.colour;
        const name = document.createElement("span");
        name.className = "name";
        name.textContent = m.name;
        li.append(sw, name);
        if (m.id === you) {
          const tag = document.createElement("span");
          tag.className = "you";
          tag.textContent = "you";
          const edit = document.createElement("button");
          edit.type = "button";
          edit.className = "edit-name";
          edit.textContent = "Rename";
          edit.title = "Change your name";
          edit.addEventListener("click", () => this.editName(li, name));
          name.addEventListener("dblclick", () => this.editName(li, name));
          li.append(tag, edit);
        }
        return li;
      }),
    );
    setText($("member-count"), String(members.length));
    const n = this.model.spectators;
    setText($("spectators-line"), n === 0 ? "No spectators" : `${n} spectator${n === 1 ? "" : "s"} watching`);
    setText($("spectators-count-top"), String(n));
    $("spectators-top").title = `${n} spectator${n === 1 ? "" : "s"} watching`;
    const pile = $("facepile");
    const shown = members.slice(0, 6);
    pile.replaceChildren(
      ...shown.map((m) => {
        const f = document.createElement("button");
        f.type = "button";
        f.className = "face";
        f.dataset.id = m.id;
        f.style.background = m.colour;
        f.textContent = initials(m.name);
        f.title = m.id === you ? `${m.name} (you)` : `${m.name}: show who this is and where their cursor is`;
        f.setAttribute("aria-label", f.title);
        f.setAttribute("aria-expanded", String(this.personCard.id === m.id));
        f.addEventListener("click", (e) => {
          e.stopPropagation();
          this.personCard.toggle(m.id, f);
          for (const face of pile.querySelectorAll(".face")) face.setAttribute("aria-expanded", String(this.personCard.id === face.dataset.id));
        });
        return f;
      }),
    );
    this.personCard.update();
    if (members.length > shown.length) {
      const more = document.createElement("span");
      more.className = "face more";
      more.textContent = `+${members.length - shown.length}`;
      pile.append(more);
    }
    this.requestRender();
  }

  editName(li, nameEl) {
    if (li.querySelector("input")) return;
    const input = document.createElement("input");
    input.value = this.model.name;
    input.maxLength = LIMITS.max_name_chars * 2;
    input.setAttribute("aria-label", "Your name");
    nameEl.replaceWith(input);
    input.focus();
    input.select();
    this.editingName = true;
    let done = false;
    const finish = (save) => {
      if (done) return;
      done = true;
      this.editingName = false;
      const name = cleanName(input.value);
      if (save && name && name !== this.model.name) {
        store.set(NAME_KEY, name);
        if (this.conn?.joined && this.model.isEditor) this.conn.send(msg.setName(name));
      }
      this.renderMembers();
    };
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") finish(true);
      else if (e.key === "Escape") finish(false);
      e.stopPropagation();
    });
    input.addEventListener("blur", () => finish(true));
  }

  renderShortcuts() {
    const dl = $("shortcuts");
    dl.replaceChildren(
      ...SHORTCUTS.filter(([a]) => a !== "panel").flatMap(([, keys, text]) => {
        const dt = document.createElement("dt");
        for (const k of keys) {
          const kbd = document.createElement("kbd");
          kbd.textContent = k;
          dt.append(kbd);
        }
        const dd = document.createElement("dd");
        dd.textContent = text;
        return [dt, dd];
      }),
    );
  }

  // --- real images: upload, projection progress, blend ------------------------------------------

  /** The projection's progress bar, PSNR and the target thumbnail (shown while it runs). */
  updateProjection() {
    const s = this.model.state;
    const task = s?.task;
    const bar = $("project-bar");
    bar.hidden = !task;
    $("hud-psnr-item").hidden = !task;
    const thumb = $("target-thumb");
    const showThumb = !!task && task.kind === "upload" && !!s.upload;
    if (showThumb) {
      const src = `/api/rooms/${encodeURIComponent(this.room)}/upload.png?cap=${encodeURIComponent(this.cap)}&k=${s.upload.key.slice(0, 12)}`;
      const img = $("target-img");
      if (img.getAttribute("src") !== src) img.setAttribute("src", src);
    }
    thumb.hidden = !showThumb;
    if (!task) return;
    const p = this.model.progress;
    const step = p && p.drag === s.drag ? p.step : 0;
    const psnr = p && p.drag === s.drag ? p.psnr : null;
    const what = task.kind === "blend" ? "Blending" : "Projecting";
    const max = task.max_steps;
    const stopping = s.status === DragStatus.STOPPING;
    let text = `${what}${task.method === "encoder" ? " (encoder)" : ""} · step ${step}${max ? ` / ${max}` : ""}`;
    if (psnr != null) text += ` · PSNR ${psnr.toFixed(1)} dB`;
    if (stopping) text = `${what}: committing…`;
    setText($("project-text"), text);
    const prog = $("project-progress");
    prog.max = Math.max(1, max);
    prog.value = Math.min(step, Math.max(1, max));
    setText($("hud-psnr"), psnr == null ? "–" : psnr.toFixed(1));
    $("project-stop").disabled = !this.canEdit() || stopping;
  }

  /** Send a picture to the room (POST /api/rooms/{room}/upload); the server answers with frames. */
  async uploadFile(file) {
    if (!file) return;
    if (!this.canEdit() || !this.editCap) {
      toast(this.model.role === "viewer" ? "This is a view-only link: uploading is off." : "Offline: try again once connected.", "error");
      return;
    }
    if (this.model.state?.status !== DragStatus.IDLE) {
      toast("Wait for the drag or projection to finish first.", "error");
      return;
    }
    if (file.type && !UPLOAD_TYPES.has(file.type)) {
      toast("Upload a PNG, JPEG or WebP picture.", "error");
      return;
    }
    if (file.size > this.maxUpload) {
      toast(`The picture is larger than ${Math.round(this.maxUpload / 2 ** 20)} MiB.`, "error");
      return;
    }
    const method = $("project-method").value === "encoder" ? "encoder" : "optimize";
    this.uploading = true;
    this.updateToolbar();
    this.updatePanel();
    try {
      // member: the upload is yours to undo (protocol 7a)
      const who = this.model.you ? `&member=${encodeURIComponent(this.model.you)}` : "";
      const r = await fetch(`/api/rooms/${encodeURIComponent(this.room)}/upload?method=${method}${who}`, {
        method: "POST",
        headers: { "X-Livedrag-Cap": this.editCap, "Content-Type": file.type || "application/octet-stream" },
        body: file,
      });
      if (!r.ok) {
        let text = `Upload failed (${r.status})`;
        try {
          const body = await r.json();
          if (body?.error) text = `Upload refused: ${body.error}`;
        } catch {
          /* not JSON: keep the status */
        }
        this.lastUploadError = text;
        toast(text, "error", 6000);
      } else {
        this.lastUploadError = null;
        toast(method === "encoder" ? "Projecting with the encoder…" : "Projecting your picture…");
      }
    } catch (e) {
      this.lastUploadError = `Upload failed: ${e.message}`;
      toast("Upload failed: the server could not be reached.", "error");
    } finally {
      this.uploading = false;
      this.updateToolbar();
      this.updatePanel();
    }
  }

  bindUpload() {
    const input = $("upload-file");
    const pick = () => {
      if (this.canEdit()) input.click();
    };
    $("upload-btn").addEventListener("click", pick);
    $("upload-pick").addEventListener("click", pick);
    input.addEventListener("change", () => {
      const file = input.files?.[0];
      input.value = "";
      this.uploadFile(file);
    });
    const area = this.els.stage;
    const zone = $("drop-zone");
    let depth = 0;
    const hasFile = (e) => [...(e.dataTransfer?.types || [])].includes("Files");
    area.addEventListener("dragenter", (e) => {
      if (!hasFile(e) || !this.model.isEditor) return;
      e.preventDefault();
      depth += 1;
      zone.hidden = false;
    });
    area.addEventListener("dragover", (e) => {
      if (!hasFile(e) || !this.model.isEditor) return;
      e.preventDefault();
      e.dataTransfer.dropEffect = "copy";
    });
    area.addEventListener("dragleave", () => {
      depth = Math.max(0, depth - 1);
      if (!depth) zone.hidden = true;
    });
    area.addEventListener("drop", (e) => {
      depth = 0;
      zone.hidden = true;
      if (!hasFile(e)) return;
      e.preventDefault();
      if (!this.model.isEditor) {
        toast("This is a view-only link: uploading is off.", "error");
        return;
      }
      this.uploadFile(e.dataTransfer.files?.[0]);
    });
    $("project-stop").addEventListener("click", () => {
      if (this.model.state?.status === DragStatus.PROJECTING) this.edit(msg.stop());
    });
    for (const b of $("blend-source").querySelectorAll("button")) {
      b.addEventListener("click", () => {
        this.blendSource = b.dataset.source;
        this.updatePanel();
      });
    }
    $("blend-apply").addEventListener("click", () => this.applyBlend());
  }

  applyBlend() {
    const s = this.model.state;
    if (!s) return;
    if (!s.mask.cells.some((v) => v === 1)) {
      toast("Paint the area to blend with the Flexible brush first.", "error");
      return;
    }
    const steps = Number($("blend-steps").value);
    const opts = {};
    if (Number.isInteger(steps) && steps >= 1) opts.steps = Math.min(steps, this.model.limits.max_project_steps || 1000);
    if (this.blendSource === "seed") {
      const raw = $("blend-seed").value.trim();
      const seed = raw === "" ? randomSeed() : Number(raw);
      if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
        $("blend-seed").setAttribute("aria-invalid", "true");
        toast("The seed is a whole number from 0 to 4294967295", "error");
        return;
      }
      $("blend-seed").removeAttribute("aria-invalid");
      opts.seed = seed;
      if (raw === "") toast(`Blending from seed ${seed}`);
    }
    this.edit(msg.blend(this.blendSource, opts));
  }

  // --- links and downloads --------------------------------------------------------------------

  setLinks() {
    const base = `${location.origin}/r/${encodeURIComponent(this.room)}`;
    const viewLink = this.viewCap ? `${base}#view=${this.viewCap}` : "";
    const editLink = this.editCap ? `${base}#edit=${this.editCap}${this.viewCap ? `&view=${this.viewCap}` : ""}` : "";
    $("edit-link").value = editLink;
    $("view-link").value = viewLink;
    $("share-edit-row").hidden = !this.editCap;
    $("copy-view").disabled = !viewLink;
    $("view-link").closest(".share-input").hidden = !viewLink;
    $("view-link-missing").hidden = !!viewLink;
  }

  setDownloads() {
    const s = this.model.state;
    const base = `/api/rooms/${encodeURIComponent(this.room)}`;
    const q = `?cap=${encodeURIComponent(this.cap)}`;
    const tag = s ? `${this.room}-v${this.model.version}` : this.room;
    const set = (id, path, name, enabled = true) => {
      const a = $(id);
      a.href = `${base}/${path}${q}`;
      a.download = name;
      a.setAttribute("aria-disabled", String(!enabled || !this.conn?.joined));
    };
    set("dl-png", "image.png", `${tag}.png`);
    this.pngTag = tag;
    const w = s?.image.w ?? 0;
    const h = s?.image.h ?? 0;
    const k = exportFactor(w, h);
    setText($("dl-png-size"), s ? `${w}×${h}` : "");
    setText($("dl-png-up-factor"), `${k}×`);
    setText($("dl-png-up-size"), s ? `${w * k}×${h * k}` : "");
    $("dl-png-up").disabled = !s || !this.conn?.joined || this.exporting;
    set("dl-gif", "trajectory.gif", `${this.room}-drag${s?.drag ?? 0}.gif`, (s?.drag ?? 0) > 0);
    set("dl-latent", "latent.safetensors", `${tag}.safetensors`);
  }

  /** Save the committed image as PNG: native (factor 1) or upscaled k times here; named by size. */
  async downloadPng(factor) {
    const url = $("dl-png").href;
    const tag = this.pngTag || this.room;
    if (!url || this.exporting) return;
    this.exporting = true;
    this.setDownloads();
    try {
      const [w, h] = await exportPng(url, factor, (w, h) => pngName(tag, w, h));
      if (factor > 1) toast(`Saved a ${w}×${h} PNG (${factor}× the image, smooth)`, "ok");
    } catch (e) {
      toast(`Download failed: ${e.message}`, "error");
    } finally {
      this.exporting = false;
      this.setDownloads();
    }
  }

  // --- controls -------------------------------------------------------------------------------

  bindControls() {
    this.bindUpload();
    this.bindPeople();
    for (const b of $("space").querySelectorAll("button")) {
      b.addEventListener("click", () => this.setParam("space", b.dataset.space));
    }
    $("reset-image").addEventListener("click", () => this.action("reset"));
    $("offline-retry").addEventListener("click", () => this.conn?.retryNow());
    // a menu picked with the mouse gives the keys back to the shortcuts (Space would reopen it)
    document.addEventListener("pointerdown", (e) => (this.pointerTarget = e.target), true);
    document.addEventListener("change", (e) => {
      const t = e.target;
      if (t instanceof HTMLSelectElement && this.pointerTarget && t.contains(this.pointerTarget)) t.blur();
    });
    for (const b of document.querySelectorAll(".tool[data-tool]")) {
      b.addEventListener("click", () => this.editor.setTool(b.dataset.tool));
    }
    const radius = $("brush-radius");
    radius.addEventListener("input", () => this.editor.setBrushRadius(Number(radius.value)));
    this.editor.brushRadius = Number(radius.value);
    $("mask-toggle").addEventListener("click", () => this.action("mask-toggle"));
    $("mask-clear").addEventListener("click", () => this.action("mask-clear"));
    $("pair-delete").addEventListener("click", () => this.action("delete"));
    $("points-clear").addEventListener("click", () => this.action("points-clear"));
    $("undo").addEventListener("click", () => this.action("undo"));
    $("redo").addEventListener("click", () => this.action("redo"));
    $("run").addEventListener("click", () => this.action("run"));
    for (const b of $("mode").querySelectorAll("button")) {
      b.addEventListener("click", () => this.setParam("mode", b.dataset.mode));
    }
    for (const input of $("params").querySelectorAll("input[data-param]")) {
      input.addEventListener("change", () => this.onParamInput(input));
      input.addEventListener("keydown", (e) => {
        if (e.key === "Enter") input.blur();
      });
    }
    $("new-image-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.newImage(false);
    });
    $("random-image").addEventListener("click", () => this.newImage(true));
    $("truncation").addEventListener("input", () => (this.truncationTouched = true));
    $("share-btn").addEventListener("click", (e) => {
      e.stopPropagation();
      this.togglePopover();
    });
    document.addEventListener("click", (e) => {
      const pop = $("share-pop");
      if (!pop.hidden && !pop.contains(e.target)) pop.hidden = true;
      const panelOpen = document.body.classList.contains("panel-open");
      if (panelOpen && !$("panel").contains(e.target) && !$("panel-btn").contains(e.target)) this.togglePanel(false);
      // a click leaves no focus on a button (anywhere), so Space keeps meaning start/stop and
      // never clicks it again (e.g. Random, which would make a new image and drop the pairs)
      const button = e.target.closest?.(NATIVE_CONTROLS);
      if (button && e.detail > 0) button.blur();
    });
    $("copy-edit").addEventListener("click", () => this.copy($("edit-link"), "Edit link copied"));
    $("copy-view").addEventListener("click", () => this.copy($("view-link"), "View-only link copied"));
    $("help-btn").addEventListener("click", () => this.toggleHelp(true));
    $("help-close").addEventListener("click", () => this.toggleHelp(false));
    $("help").addEventListener("click", (e) => {
      if (e.target === $("help")) this.toggleHelp(false);
    });
    $("panel-btn").addEventListener("click", () => this.togglePanel());
    $("panel-close").addEventListener("click", () => this.togglePanel(false));
    $("banner-retry").addEventListener("click", () => this.conn?.retryNow());
    $("fatal-reload").addEventListener("click", () => location.reload());
    $("delete-room").addEventListener("click", () => this.toggleDelete(true));
    $("delete-cancel").addEventListener("click", () => this.toggleDelete(false));
    $("delete-confirm").addEventListener("click", () => this.deleteRoom());
    $("delete-dialog").addEventListener("click", (e) => {
      if (e.target === $("delete-dialog")) this.toggleDelete(false);
    });
    for (const a of document.querySelectorAll("a[download]")) {
      a.addEventListener("click", (e) => {
        if (a.getAttribute("aria-disabled") === "true") e.preventDefault();
      });
    }
    // the PNG is fetched and saved here so that its file name says its size (the server's name
    // does not); a middle click or a modified one still opens the link itself
    $("dl-png").addEventListener("click", (e) => {
      if (e.defaultPrevented || e.button !== 0 || e.ctrlKey || e.metaKey || e.shiftKey || e.altKey) return;
      e.preventDefault();
      this.downloadPng(1);
    });
    $("dl-png-up").addEventListener("click", () => this.downloadPng(exportFactor(this.stage.imageW, this.stage.imageH)));
    $("zoom-in").addEventListener("click", () => this.action("zoom-in"));
    $("zoom-out").addEventListener("click", () => this.action("zoom-out"));
    $("zoom-level").addEventListener("change", (e) => {
      this.stage.setZoom(parseZoom(e.target.value));
      e.target.blur(); // back to the shortcuts (+, -, 0, Space...)
    });
    document.addEventListener("keydown", (e) => this.onKey(e));
  }

  onKey(e) {
    if (e.defaultPrevented || e.isComposing) return;
    if (!$("delete-dialog").hidden) {
      // the confirmation is open: Escape cancels, Tab and Enter work its buttons, nothing else
      if (e.key === "Escape") {
        e.preventDefault();
        this.toggleDelete(false);
      }
      return;
    }
    if (!$("help").hidden && (e.key === "Escape" || e.key === "?")) {
      e.preventDefault();
      this.toggleHelp(false);
      return;
    }
    if (typingInField(e)) return;
    const native = e.target.closest?.(NATIVE_CONTROLS);
    if (native && (e.key === " " || e.key === "Enter")) {
      // reached with the keyboard (Tab): Space and Enter activate it, as everywhere
      if (native.matches(":focus-visible")) return;
      native.blur(); // focus a click left behind: the key is a shortcut, not a second click
    }
    if (!$("help").hidden) return; // the help is open: no shortcuts under it
    const action = matchShortcut({
      key: e.key,
      shiftKey: e.shiftKey,
      ctrlKey: e.ctrlKey,
      metaKey: e.metaKey,
      altKey: e.altKey,
      narrow: window.matchMedia("(max-width: 900px)").matches,
    });
    if (!action) return;
    if (action === "cancel" && !$("share-pop").hidden) {
      $("share-pop").hidden = true;
      return;
    }
    e.preventDefault();
    this.action(action);
  }

  /** One user action, from a button or a shortcut. */
  action(name) {
    const s = this.model.state;
    switch (name) {
      case "run":
        if (!s) return;
        if (s.status === DragStatus.IDLE) this.edit(msg.start());
        else if (s.status === DragStatus.RUNNING || s.status === DragStatus.PROJECTING) this.edit(msg.stop());
        break;
      case "undo":
        if (this.model.canUndo) this.edit(msg.undo());
        else if (this.model.isEditor) toast("Nothing of yours to undo: undo takes back your own actions.");
        break;
      case "redo":
        if (this.model.canRedo) this.edit(msg.redo());
        else if (this.model.isEditor) toast("Nothing of yours to redo.");
        break;
      case "delete":
        this.editor.removeSelected();
        break;
      case "cancel":
        this.editor.cancel();
        break;
      case "tool-points":
        this.editor.setTool(Tool.POINTS);
        break;
      case "tool-flexible":
      case "tool-fixed":
      case "tool-erase":
        if (this.model.isEditor) this.editor.setTool(name.slice(5));
        break;
      case "brush-smaller":
      case "brush-larger": {
        const r = this.editor.brushRadius;
        const next = name === "brush-larger" ? r * 1.25 : r / 1.25;
        const max = Number($("brush-radius").max);
        this.editor.setBrushRadius(Math.round(Math.max(1, Math.min(max, next)) * 2) / 2);
        $("brush-radius").value = String(this.editor.brushRadius);
        break;
      }
      case "mask-toggle":
        this.showMask = !this.showMask;
        this.onChange();
        break;
      case "mask-clear":
        if (this.model.display()?.mask.cells.some((v) => v)) this.edit(msg.clearMask());
        break;
      case "points-clear":
        if (this.model.display()?.pairs.length) this.edit(msg.clearPoints());
        break;
      case "random-image":
        this.newImage(true);
        break;
      case "reset":
        if (s?.status === DragStatus.IDLE && this.edit(msg.reset()) != null) toast("Back to the room's original image (undo returns).");
        break;
      case "mode":
        if (s) this.setParam("mode", s.params.mode === "optimize" ? "predict" : "optimize");
        break;
      case "panel":
        this.togglePanel();
        break;
      case "help":
        this.toggleHelp($("help").hidden);
        break;
      case "zoom-in":
      case "zoom-out":
        this.stage.zoomBy(name === "zoom-in" ? 1 : -1);
        break;
      case "zoom-fit":
        this.stage.setZoom(FIT);
        break;
      case "zoom-actual":
        this.stage.setZoom(1);
        break;
      default:
        break;
    }
  }

  setParam(key, value) {
    if (!this.model.state || this.model.state.params[key] === value) return;
    this.edit(msg.setParams({ [key]: value }));
  }

  onParamInput(input) {
    const key = input.dataset.param;
    const raw = input.value.trim();
    const nullable = ["r1", "r2", "stop_dist"].includes(key);
    let value;
    if (raw === "") {
      if (!nullable) {
        input.setAttribute("aria-invalid", "true");
        toast(`${labelOf(input)} needs a value`, "error");
        return;
      }
      value = null;
    } else {
      value = Number(raw);
    }
    try {
      validateClient(msg.setParams({ [key]: value }));
    } catch (e) {
      input.setAttribute("aria-invalid", "true");
      const f = protocol.paramSpec(key);
      toast(`${labelOf(input)} must be between ${f.min} and ${f.max}${f.type === "int" ? " (a whole number)" : ""}`, "error");
      return;
    }
    input.removeAttribute("aria-invalid");
    this.setParam(key, value);
  }

  newImage(random) {
    const seedInput = $("seed");
    let seed;
    if (random || seedInput.value.trim() === "") {
      seed = randomSeed();
      if (!random) seedInput.placeholder = "random";
    } else {
      seed = Number(seedInput.value);
      if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
        seedInput.setAttribute("aria-invalid", "true");
        toast("The seed is a whole number from 0 to 4294967295", "error");
        return;
      }
    }
    seedInput.removeAttribute("aria-invalid");
    const t = Number($("truncation").value);
    const truncation = Number.isFinite(t) && t >= 0 && t <= 2 ? t : undefined;
    if (this.edit(msg.newImage(seed, truncation)) != null) {
      this.truncationTouched = false;
      if (random) toast(`New image from seed ${seed}`);
    }
  }

  async copy(input, done) {
    if (!input.value) return;
    const ok = await copyText(input.value, input);
    if (ok) $("share-pop").hidden = true; // done with it: the toast confirms
    toast(ok ? done : "Copy failed: select the link and copy it by hand", ok ? "ok" : "error");
  }

  /** The name dialog (asked once per browser) and the avatars' person card. */
  bindPeople() {
    this.namePrompt = new NamePrompt(
      { form: $("name-prompt"), input: $("name-input"), skip: $("name-skip") },
      {
        store,
        nameKey: NAME_KEY,
        onName: (name) => {
          if (this.conn?.joined && this.model.isEditor) this.conn.send(msg.setName(name));
          toast(`Hello, ${name}!`, "ok");
        },
      },
    );
    this.personCard = new PersonCard(
      { pop: $("person-pop"), swatch: $("person-swatch"), name: $("person-name"), role: $("person-role"), cursor: $("person-cursor"), pairs: $("person-pairs") },
      { model: this.model, onSpotlight: (id) => this.spotlightCursor(id) },
    );
    this.model.subscribe((kind) => {
      if (kind === "frame") return;
      this.personCard.update(); // cursors, names and pairs change while the card is open
      if (kind === "members") this.namePrompt.sync(); // named meanwhile (Rename): no need to ask
    });
  }

  togglePopover() {
    const pop = $("share-pop");
    pop.hidden = !pop.hidden;
  }

  toggleHelp(show) {
    $("help").hidden = !show;
    if (show) $("help-close").focus();
  }

  /** The confirmation before deleting the room (editors only; Cancel has the focus). */
  toggleDelete(show) {
    const open = show && !!this.editCap && !this.deleting;
    $("delete-dialog").hidden = !open;
    if (open) {
      $("share-pop").hidden = true;
      $("delete-cancel").focus();
    }
  }

  /**
   * Delete the room for everyone: DELETE /api/rooms/{room} with the edit capability (protocol
   * 2a). The server then closes every connection of the room with 4014 room_closed, this page's
   * too, which shows the "deleted" card.
   */
  async deleteRoom() {
    if (!this.editCap || this.deleting) return;
    this.deleting = true;
    $("delete-confirm").disabled = $("delete-cancel").disabled = true;
    try {
      const r = await fetch(`/api/rooms/${encodeURIComponent(this.room)}`, {
        method: "DELETE",
        headers: { "X-Livedrag-Cap": this.editCap, Accept: "application/json" },
      });
      if (r.ok || r.status === 410) {
        forgetRoom(this.room); // the server closes this page's connection too (4014)
        this.toggleDelete(false);
        this.showFatal(...DELETED_BY_YOU, "room_closed");
        return;
      }
      const body = await r.json().catch(() => ({}));
      throw new Error(body?.error || `HTTP ${r.status}`);
    } catch (e) {
      this.deleting = false;
      this.toggleDelete(false);
      toast(`Could not delete the room: ${e.message}`, "error", 6000);
    } finally {
      $("delete-confirm").disabled = $("delete-cancel").disabled = false;
    }
  }

  togglePanel(open = !document.body.classList.contains("panel-open")) {
    document.body.classList.toggle("panel-open", open);
    $("panel-btn").setAttribute("aria-expanded", String(open));
  }
}

/** Keep the last few rooms this browser opened for the start page's list. */
function rememberRoom(room, role, link) {
  let list = [];
  try {
    list = JSON.parse(store.get(RECENT_KEY, "[]"));
    if (!Array.isArray(list)) list = [];
  } catch {
    list = [];
  }
  list = list.filter((r) => r && r.room !== room);
  list.unshift({ room, role, link, t: Date.now() });
  store.set(RECENT_KEY, JSON.stringify(list.slice(0, 8)));
}

/** Drop a deleted room from the start page's list. */
function forgetRoom(room) {
  try {
    const list = JSON.parse(store.get(RECENT_KEY, "[]"));
    if (Array.isArray(list)) store.set(RECENT_KEY, JSON.stringify(list.filter((r) => r && r.room !== room)));
  } catch {
    /* an unreadable list: leave it */
  }
}

/** An undo_state kind (the op that made the action) in words, for the undo and redo tooltips. */
function actionName(kind) {
  return (
    {
      add_pair: "added point pair",
      move_point: "point move",
      remove_pair: "removed point pair",
      clear_points: "cleared points",
      paint_mask: "mask stroke",
      clear_mask: "cleared mask",
      set_params: "parameter change",
      new_image: "new image",
    }[kind] || kind.replace(/_/g, " ")
  );
}

function fmt(v) {
  return Number.isInteger(v) ? String(v) : String(Math.round(v * 100) / 100);
}

function labelOf(input) {
  return input.closest("label")?.querySelector("span")?.firstChild?.textContent?.trim() || input.dataset.param;
}

const app = new RoomApp();
window.livedrag = { app, model: app.model, protocol, get conn() { return app.conn; }, Gesture };
app.start();
