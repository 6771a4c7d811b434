// The DOM-free parts of the client: room model reconciliation, the connection's reconnect policy,
// the frame pipeline's latest-wins pacing, throttling and keyboard shortcuts.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { backoffDelay, ConnState, Connection, RetryPolicy, retryPolicy } from "../js/connection.js";
import { FramePipeline, RateMeter } from "../js/frames.js";
import { applyLocal, DragStatus, RoomModel } from "../js/model.js";
import { decode, encode, fromJsonForm, msg } from "../js/protocol.js";
import { matchShortcut, SHORTCUTS } from "../js/shortcuts.js";
import { throttle } from "../js/throttle.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const golden = (name) => fromJsonForm(JSON.parse(readFileSync(`${ROOT}shared/golden/s2c/${name}.json`, "utf8")));

// --- fakes --------------------------------------------------------------------------------------

/** Timers driven by hand: advance(ms) runs what is due. */
class FakeClock {
  constructor() {
    this.t = 1_000_000;
    this.queue = [];
    this.nextId = 1;
  }
  now = () => this.t;
  setTimeout = (fn, ms) => this.add(fn, ms, null);
  setInterval = (fn, ms) => this.add(fn, ms, ms);
  clearTimeout = (id) => {
    this.queue = this.queue.filter((q) => q.id !== id);
  };
  clearInterval = (id) => this.clearTimeout(id);
  add(fn, ms, every) {
    const id = this.nextId++;
    this.queue.push({ id, at: this.t + Math.max(0, ms), fn, every });
    return id;
  }
  advance(ms) {
    const end = this.t + ms;
    for (;;) {
      this.queue.sort((a, b) => a.at - b.at);
      const q = this.queue[0];
      if (!q || q.at > end) break;
      this.t = q.at;
      if (q.every) q.at += q.every;
      else this.queue.shift();
      q.fn();
    }
    this.t = end;
  }
}

/** A WebSocket stand-in: records what is sent; the test opens, delivers and closes it. */
class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.sent = [];
    this.closed = null;
    FakeSocket.all.push(this);
  }
  send(bytes) {
    this.sent.push(decode(bytes));
  }
  close(code, reason) {
    this.closed = { code, reason };
  }
  open() {
    this.onopen?.();
  }
  deliver(m) {
    const bytes = encode(m);
    this.onmessage?.({ data: bytes.slice().buffer });
  }
  serverClose(code, reason = "") {
    this.onclose?.({ code, reason });
  }
}

function welcome(extra = {}) {
  return { ...golden("welcome"), ...extra };
}

function makeConnection(clock, extra = {}) {
  FakeSocket.all = [];
  const states = [];
  const received = [];
  const conn = new Connection({
    url: "ws://x/ws/r",
    cap: "CAP",
    clientId: "client-1234",
    getName: () => " Ada ",
    WebSocket: FakeSocket,
    timers: clock,
    now: clock.now,
    random: () => 0.5,
    onState: (c) => states.push(c.state),
    onMessage: (m) => received.push(m),
    ...extra,
  });
  return { conn, states, received };
}

// --- connection ---------------------------------------------------------------------------------

test("backoff: 0.25 s doubling to 1.2 s (back within 2 s of the server), jitter a quarter either way", () => {
  assert.equal(backoffDelay(0, RetryPolicy.NORMAL, 0.5), 0.25);
  assert.equal(backoffDelay(1, RetryPolicy.NORMAL, 0.5), 0.5);
  assert.equal(backoffDelay(2, RetryPolicy.NORMAL, 0.5), 1);
  assert.equal(backoffDelay(3, RetryPolicy.NORMAL, 0.5), 1.2);
  assert.equal(backoffDelay(200, RetryPolicy.NORMAL, 0.5), 1.2);
  assert.ok(backoffDelay(200, RetryPolicy.NORMAL, 0.999999) < 1.5);
  assert.equal(backoffDelay(0, RetryPolicy.NORMAL, 0), 0.1875);
  assert.equal(backoffDelay(0, RetryPolicy.NORMAL, 0.999999), 0.3125 - 0.25 * 0.000001 * 0.25 * 2);
  assert.ok(backoffDelay(0, RetryPolicy.SLOWLY, 0.5) >= 5);
  assert.equal(backoffDelay(4, RetryPolicy.SLOWLY, 0.5), 30);
  assert.ok(backoffDelay(0, RetryPolicy.PAUSE, 0.5) >= 10);
  assert.ok(backoffDelay(0, RetryPolicy.NOW, 0.5) < 0.3);
});

test("close codes map to the contract's reconnect decisions", () => {
  for (const code of [4000, 4001, 4002, 4003, 4004, 4009, 4013, 4014, 4017]) assert.equal(retryPolicy(code), RetryPolicy.NEVER, code);
  assert.equal(retryPolicy(4005), RetryPolicy.SLOWLY);
  assert.equal(retryPolicy(4006), RetryPolicy.SLOWLY);
  assert.equal(retryPolicy(4010), RetryPolicy.PAUSE);
  assert.equal(retryPolicy(4011), RetryPolicy.NOW);
  for (const code of [4008, 4012, 4015, 4016, 1000, 1001, 1006, 1011, 4999]) assert.equal(retryPolicy(code), RetryPolicy.NORMAL, code);
});

test("the connection sends hello first, with the name trimmed and the page's client_id", () => {
  const clock = new FakeClock();
  const { conn } = makeConnection(clock);
  conn.start();
  assert.equal(conn.state, ConnState.CONNECTING);
  const ws = FakeSocket.all[0];
  assert.equal(ws.binaryType, "arraybuffer");
  ws.open();
  assert.deepEqual(ws.sent, [{ t: "hello", v: 1, cap: "CAP", name: "Ada", client_id: "client-1234" }]);
  assert.equal(conn.send(msg.start()), null); // not joined yet: nothing goes out
  ws.deliver(welcome());
  assert.equal(conn.state, ConnState.JOINED);
  assert.equal(conn.send(msg.start()), 1);
  assert.equal(conn.send(msg.undo()), 2);
  assert.equal(conn.send(msg.ack(3)), 0); // acks and cursors carry no id
  assert.deepEqual(ws.sent.slice(1), [{ t: "start", id: 1 }, { t: "undo", id: 2 }, { t: "ack", seq: 3 }]);
});

test("it reconnects with growing delays, keeps the client_id, and resets after a welcome", () => {
  const clock = new FakeClock();
  const { conn } = makeConnection(clock);
  conn.start();
  FakeSocket.all[0].open();
  FakeSocket.all[0].deliver(welcome());
  FakeSocket.all[0].serverClose(4012, "server restarting");
  assert.equal(conn.state, ConnState.WAITING);
  assert.equal(conn.retryAt - clock.t, 250);
  clock.advance(249);
  assert.equal(FakeSocket.all.length, 1);
  clock.advance(1);
  assert.equal(FakeSocket.all.length, 2);
  FakeSocket.all[1].serverClose(1006); // refused: the server is still down
  assert.equal(conn.retryAt - clock.t, 500);
  clock.advance(500);
  FakeSocket.all[2].serverClose(1006);
  assert.equal(conn.retryAt - clock.t, 1000);
  clock.advance(1000);
  for (let i = 3; i < 40; i++) {
    FakeSocket.all[i].serverClose(1006); // down for a long while: never more than 1.2 s apart
    assert.equal(conn.retryAt - clock.t, 1200);
    clock.advance(1200);
  }
  const ws = FakeSocket.all[40];
  ws.open();
  assert.equal(ws.sent[0].client_id, "client-1234");
  ws.deliver(welcome());
  assert.equal(conn.state, ConnState.JOINED);
  assert.equal(conn.offlineSince, null);
  ws.serverClose(1006);
  assert.equal(conn.retryAt - clock.t, 250); // back to the start
});

test("the hello carries the browser's secret when it has one", () => {
  const clock = new FakeClock();
  const { conn } = makeConnection(clock, { secret: "s".repeat(32) });
  conn.start();
  FakeSocket.all[0].open();
  assert.equal(FakeSocket.all[0].sent[0].secret, "s".repeat(32));
});

test("a room_full close retries slowly; too_slow retries at once", () => {
  const clock = new FakeClock();
  const { conn } = makeConnection(clock);
  conn.start();
  FakeSocket.all[0].serverClose(4005, "room is full");
  assert.ok(conn.retryAt - clock.t >= 5000);
  assert.equal(conn.lastClose.info.name, "room_full");
  clock.advance(conn.retryAt - clock.t);
  FakeSocket.all[1].open();
  FakeSocket.all[1].deliver(welcome());
  FakeSocket.all[1].serverClose(4011);
  assert.ok(conn.retryAt - clock.t < 300);
});

test("bad links, version mismatch and replaced connections end the session without retrying", () => {
  for (const [code, name] of [[4001, "bad_capability"], [4002, "version_mismatch"], [4004, "room_not_found"], [4017, "replaced"]]) {
    const clock = new FakeClock();
    const { conn, states } = makeConnection(clock);
    conn.start();
    FakeSocket.all[0].open();
    FakeSocket.all[0].serverClose(code, "");
    assert.equal(conn.state, ConnState.FAILED);
    assert.equal(conn.failure.name, name);
    assert.equal(states.at(-1), ConnState.FAILED);
    clock.advance(120_000);
    assert.equal(FakeSocket.all.length, 1, `no retry after ${code}`);
  }
});

test("it pings every ping_interval_s and drops a silent connection", () => {
  const clock = new FakeClock();
  const { conn } = makeConnection(clock);
  conn.start();
  const ws = FakeSocket.all[0];
  ws.open();
  ws.deliver(welcome({ limits: { ...welcome().limits, ping_interval_s: 10 } }));
  clock.advance(10_000);
  assert.deepEqual(ws.sent.at(-1), { t: "ping", id: 1 });
  ws.deliver({ t: "pong", ref: 1, time: 1.5 });
  clock.advance(10_000);
  assert.equal(ws.sent.at(-1).t, "ping");
  clock.advance(20_000); // 30 s without a word from the server
  assert.equal(conn.state, ConnState.WAITING);
  assert.ok(ws.closed);
});

test("a viewer's connection refuses to send edits", () => {
  const clock = new FakeClock();
  const { conn } = makeConnection(clock);
  conn.start();
  FakeSocket.all[0].open();
  FakeSocket.all[0].deliver(welcome({ role: "viewer" }));
  assert.equal(conn.send(msg.addPair("p", [1, 1], [2, 2])), null);
  assert.equal(conn.send(msg.cursor([1, 1])), null);
  assert.equal(conn.send(msg.ping()), 1);
});

// --- model --------------------------------------------------------------------------------------

function joinedModel() {
  let t = 0;
  const model = new RoomModel({ now: () => t });
  model.tick = (ms) => (t += ms);
  model.receive(golden("welcome"));
  model.receive(golden("snapshot"));
  return model;
}

test("a snapshot replaces everything; members, spectators and state come from it", () => {
  const model = joinedModel();
  assert.equal(model.you, "m1");
  assert.equal(model.version, 7);
  assert.equal(model.state.pairs.length, 2);
  assert.deepEqual([...model.members.keys()], ["m1", "m2"]);
  assert.equal(model.spectators, 3);
  model.addPending(5, msg.clearPoints());
  model.receive({ ...golden("snapshot"), version: 9, spectators: 0, members: [] });
  assert.equal(model.pending.length, 0);
  assert.equal(model.display().pairs.length, 2);
  assert.equal(model.members.size, 0);
});

test("ops patch the state; an author's pending edit lasts until its op or error", () => {
  const model = joinedModel();
  const add = msg.addPair("p3", [1.5, 2.5], [3.5, 4.5]);
  model.addPending(1, add);
  assert.deepEqual(model.display().pairs.map((p) => p.id), ["p1", "p2", "p3"]);
  assert.equal(model.display().pairs[2].owner, "m1");
  assert.equal(model.state.pairs.length, 2); // the confirmed state is untouched
  const pairs = [...model.state.pairs, { id: "p3", handle: [1.5, 2.5], target: [3.5, 4.5], owner: "m1" }];
  model.receive({ t: "op", v: 8, op: "add_pair", by: "m1", ref: 1, patch: { pairs } });
  assert.equal(model.pending.length, 0);
  assert.equal(model.version, 8);
  assert.equal(model.display().pairs.length, 3);
  model.addPending(2, msg.removePair("p1"));
  assert.equal(model.display().pairs.length, 2);
  model.receive({ t: "error", code: "busy", message: "busy", ref: 2 });
  assert.equal(model.display().pairs.length, 3); // refused: it comes back
});

test("someone else's op lands under my pending edits", () => {
  const model = joinedModel();
  model.addPending(1, msg.movePoint("p1", "target", [10.5, 10.5]));
  model.receive({ t: "op", v: 8, op: "remove_pair", by: "m2", ref: 4, patch: { pairs: [model.state.pairs[0]] } });
  assert.equal(model.display().pairs.length, 1);
  assert.deepEqual(model.display().pairs[0].target, [10.5, 10.5]);
});

test("pending edits expire when the server never answers", () => {
  const model = joinedModel();
  model.addPending(1, msg.clearPoints());
  model.tick(11_000);
  model.expirePending();
  assert.equal(model.pending.length, 0);
  assert.equal(model.display().pairs.length, 2);
});

test("frames of the running drag move the handles; a later move of a handle wins until the next frame", () => {
  const model = joinedModel();
  model.receive({ t: "op", v: 8, op: "start", by: "m1", ref: 1, patch: { status: "running", step: 0, drag: 1 } });
  model.receive(golden("frame"));
  assert.deepEqual(model.display().pairs[0].handle, [112.5, 117.25]);
  assert.equal(model.frame.step, 12);
  const moved = model.state.pairs.map((p) => (p.id === "p1" ? { ...p, handle: [5.5, 5.5] } : p));
  model.receive({ t: "op", v: 9, op: "move_point", by: "m2", ref: 3, patch: { pairs: moved } });
  assert.deepEqual(model.display().pairs[0].handle, [5.5, 5.5]);
  assert.deepEqual(model.display().pairs[1].handle, [63.5, 193.75]);
  model.receive({ t: "op", v: 10, op: "finish", by: null, ref: null, patch: { status: "idle", step: 13, pairs: moved } });
  assert.equal(model.state.status, DragStatus.IDLE);
  assert.deepEqual(model.display().pairs[1].handle, [60.5, 200.5]); // idle: the state's handles
});

test("presence: join, rename, cursors (hidden on leave), spectators", () => {
  const model = joinedModel();
  model.receive({ t: "presence", ev: "join", member: { id: "m3", name: "Alan", colour: "#4363d8", role: "editor" } });
  model.receive({ t: "presence", ev: "cursor", id: "m3", pos: [5.5, 6.5] });
  model.receive({ t: "presence", ev: "cursor", id: "m1", pos: [1, 1] }); // my own: not drawn
  assert.deepEqual(model.otherCursors(), [{ id: "m3", name: "Alan", colour: "#4363d8", pos: [5.5, 6.5], idle: false }]);
  model.tick(4000);
  assert.equal(model.otherCursors()[0].idle, true);
  model.receive({ t: "presence", ev: "rename", id: "m3", name: "Turing" });
  assert.equal(model.members.get("m3").name, "Turing");
  model.receive({ t: "presence", ev: "leave", id: "m3" });
  assert.deepEqual(model.otherCursors(), []);
  model.receive({ t: "presence", ev: "spectators", count: 9 });
  assert.equal(model.spectators, 9);
});

test("undo and redo follow your own stacks (undo_state), not the shared history", () => {
  const model = joinedModel();
  assert.equal(model.canUndo, false);
  model.receive({ t: "op", v: 8, op: "commit", by: null, ref: null, patch: { history: { index: 1, size: 3 } } });
  assert.equal(model.canUndo || model.canRedo, false); // someone else's history entries are not yours
  const kinds = [];
  model.subscribe((k) => kinds.push(k));
  model.receive(golden("undo_state"));
  assert.deepEqual([model.canUndo, model.canRedo], [true, true]);
  assert.equal(model.undoState.undo_kind, "paint_mask");
  assert.deepEqual(kinds, ["undo"]);
  model.receive(golden("undo_state_empty"));
  assert.deepEqual([model.canUndo, model.canRedo], [false, false]);
  model.receive(golden("undo_state"));
  model.receive(golden("snapshot")); // a resync: the undo_state that follows it says again
  assert.equal(model.canUndo, false);
});

test("after an undo nothing of the undone run stays: result text, progress, step", () => {
  const model = joinedModel();
  model.receive({ t: "op", v: 8, op: "start", by: "m1", ref: 1, patch: { status: "running", step: 0, drag: 1 } });
  model.receive({ ...golden("frame"), drag: 1 });
  model.receive({ ...golden("op_finish"), v: 9 });
  model.receive({ ...golden("status_done"), drag: 1 });
  assert.equal(model.lastEnd.reason, "reached");
  assert.equal(model.state.step, 57);
  model.receive({ ...golden("op_undo"), v: 10 });
  assert.equal(model.lastEnd, null);
  assert.equal(model.state.step, 0);
  assert.equal(model.frame.step, 0);
  assert.deepEqual(model.tracked, {});
  assert.equal(model.state.history.index, 0);
});

test("local edits apply as the server would: mask strokes, clear, params", () => {
  const s = joinedModel().state;
  const painted = applyLocal(s, msg.paintMask("fixed", 3, [[10, 10]]), "m1");
  assert.equal(painted.mask.cells.filter((v) => v === 2).length > 0, true);
  assert.equal(applyLocal(painted, msg.clearMask(), "m1").mask.cells.some((v) => v), false);
  assert.equal(applyLocal(s, msg.setParams({ lr: 0.01 }), "m1").params.lr, 0.01);
  assert.equal(applyLocal(s, msg.setParams({ lr: 0.01 }), "m1").params.mode, "optimize");
  assert.equal(applyLocal(s, msg.addPair("p1", [1, 1], [2, 2]), "m1"), s); // duplicate id: no change
});

// --- frames -------------------------------------------------------------------------------------

test("frames: only the newest waiting frame is decoded; bitmaps are closed; each drawn frame is acked", async () => {
  const decodes = [];
  const drawn = [];
  const acks = [];
  const bitmaps = [];
  const pipeline = new FramePipeline({
    decodeImage: (bytes) =>
      new Promise((resolve) => {
        const bm = { id: bytes[0], closed: false, close() { this.closed = true; } };
        bitmaps.push(bm);
        decodes.push(() => resolve(bm));
      }),
    onReady: (bm, f) => drawn.push(f.seq),
    ack: (seq) => acks.push(seq),
  });
  const frame = (seq) => ({ seq, jpeg: new Uint8Array([seq]) });
  pipeline.push(frame(1));
  pipeline.push(frame(2)); // waits
  pipeline.push(frame(3)); // replaces 2
  assert.equal(decodes.length, 1);
  decodes[0]();
  await new Promise((r) => setImmediate(r));
  assert.equal(decodes.length, 2);
  decodes[1]();
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(drawn, [1, 3]);
  assert.deepEqual(acks, [1, 3]);
  assert.equal(bitmaps[0].closed, true); // replaced on screen
  assert.equal(bitmaps[1].closed, false); // on screen now
  assert.equal(pipeline.skipped, 1);
  pipeline.push(frame(2)); // older than what is shown: ignored
  assert.equal(decodes.length, 2);
  pipeline.reset(); // a new snapshot: seq restarts
  pipeline.push(frame(1));
  assert.equal(decodes.length, 3);
});

test("frames: a decode from before a reset is dropped and closed", async () => {
  let resolveOld;
  const bm = { closed: false, close() { this.closed = true; } };
  const drawn = [];
  const pipeline = new FramePipeline({
    decodeImage: () => new Promise((r) => (resolveOld = r)),
    onReady: (b, f) => drawn.push(f.seq),
    ack: () => {},
  });
  pipeline.push({ seq: 5, jpeg: new Uint8Array(1) });
  pipeline.reset();
  resolveOld(bm);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(drawn, []);
  assert.equal(bm.closed, true);
});

test("the rate meter counts events per second over its window", () => {
  let t = 0;
  const m = new RateMeter(2000, () => t);
  for (let i = 0; i < 11; i++) {
    m.tick();
    t += 100;
  }
  assert.ok(Math.abs(m.rate - 10) < 1e-9);
  t += 5000;
  assert.equal(m.rate, 0);
});

// --- throttle, shortcuts --------------------------------------------------------------------

test("throttle: at most one call per interval and the last value always goes out", () => {
  const clock = new FakeClock();
  const calls = [];
  const f = throttle((v) => calls.push([clock.t, v]), 50, clock, clock.now);
  const t0 = clock.t;
  f(1);
  f(2);
  f(3);
  assert.deepEqual(calls, [[t0, 1]]);
  clock.advance(50);
  assert.deepEqual(calls, [[t0, 1], [t0 + 50, 3]]);
  for (let i = 0; i < 20; i++) {
    f(10 + i);
    clock.advance(10);
  }
  clock.advance(100);
  assert.equal(calls.at(-1)[1], 29);
  for (let i = 1; i < calls.length; i++) assert.ok(calls[i][0] - calls[i - 1][0] >= 50);
  f(99);
  f(100);
  f.flush();
  assert.equal(calls.at(-1)[1], 100);
  f(101);
  f.cancel();
  clock.advance(100);
  assert.equal(calls.at(-1)[1], 100);
});

test("shortcuts: one table, matched without clashing with typing or browser combos", () => {
  const key = (k, mods = {}) => matchShortcut({ key: k, shiftKey: false, ctrlKey: false, metaKey: false, altKey: false, ...mods });
  assert.equal(key(" "), "run");
  assert.equal(key("z"), "undo");
  assert.equal(key("z", { ctrlKey: true }), "undo");
  assert.equal(key("Z", { shiftKey: true }), "redo");
  assert.equal(key("Z", { ctrlKey: true, shiftKey: true }), "redo");
  assert.equal(key("y", { ctrlKey: true }), "redo");
  assert.equal(key("Delete"), "delete");
  assert.equal(key("Backspace"), "delete");
  assert.equal(key("m"), "mask-toggle");
  assert.equal(key("M", { shiftKey: true }), "mask-clear");
  assert.equal(key("?", { shiftKey: true }), "help");
  assert.equal(key("r", { ctrlKey: true }), null); // reload stays the browser's
  assert.equal(key("c", { ctrlKey: true }), null);
  const actions = SHORTCUTS.map(([a]) => a);
  assert.equal(new Set(actions).size, actions.length);
  for (const [, keys, text] of SHORTCUTS) assert.ok(keys.length && text.length);
});

test("frames: a paused (hidden) pipeline holds the newest frame and acks nothing until shown", async () => {
  const acks = [];
  const pipeline = new FramePipeline({
    decodeImage: async (bytes) => ({ id: bytes[0], close() {} }),
    onReady: () => {},
    ack: (seq) => acks.push(seq),
  });
  pipeline.setPaused(true);
  pipeline.push({ seq: 1, jpeg: new Uint8Array([1]) });
  pipeline.push({ seq: 2, jpeg: new Uint8Array([2]) });
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(acks, []);
  pipeline.setPaused(false);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(acks, [2]);
});

// --- real images: projections ------------------------------------------------------------------

test("an upload op starts a projection: task, upload, progress from its frames, undo off", () => {
  const model = joinedModel();
  const op = { ...golden("op_upload"), v: 8 };
  model.receive(op);
  assert.equal(model.state.status, DragStatus.PROJECTING);
  assert.equal(model.projecting, true);
  assert.deepEqual(model.state.task, { kind: "upload", method: "optimize", max_steps: 100, by: null });
  assert.equal(model.state.upload.key, op.patch.upload.key);
  assert.equal(model.canUndo || model.canRedo, false);
  model.receive(golden("status_projecting"));
  assert.equal(model.lastEnd, null);
  model.receive(golden("frame_projecting"));
  assert.deepEqual(model.progress, { drag: 3, step: 23, psnr: 21.5, loss: 0.125 });
  assert.deepEqual(model.display().pairs.map((p) => p.handle), model.state.pairs.map((p) => p.handle)); // no tracking
});

test("a projection's finish clears the task and remembers it in lastEnd; drags' ends do not", () => {
  const model = joinedModel();
  model.receive({ ...golden("op_upload"), v: 8 });
  model.receive(golden("frame_projecting"));
  model.receive({ ...golden("op_finish_projection"), v: 9 });
  assert.equal(model.state.task, null);
  assert.equal(model.projecting, false);
  assert.equal(model.state.image.seed, null);
  assert.equal(model.state.pairs.length, 0);
  model.receive({ t: "undo_state", undo: 1, redo: 0, undo_kind: "upload", redo_kind: null });
  assert.equal(model.canUndo, true);
  model.receive(golden("status_converged"));
  assert.equal(model.lastEnd.reason, "converged");
  assert.equal(model.lastEnd.task.kind, "upload");
  assert.equal(model.progress, null);
  model.receive({ t: "op", v: 10, op: "start", by: "m1", ref: 1, patch: { status: "running", step: 0, drag: 4 } });
  model.receive({ t: "status", status: "idle", reason: "reached", drag: 4, step: 5 });
  assert.equal(model.lastEnd.task, null);
});

test("a snapshot taken mid-projection restores the task; blend messages validate", () => {
  const model = joinedModel();
  const snap = golden("snapshot");
  const task = { kind: "blend", method: "optimize", max_steps: 60, by: "m2" };
  model.receive({ ...snap, state: { ...snap.state, status: "projecting", drag: 5, task, upload: null } });
  assert.equal(model.projecting, true);
  assert.deepEqual(model.progress, { drag: 5, step: 0, psnr: null, loss: null });
  assert.deepEqual(msg.blend("seed", { seed: 3 }), { t: "blend", source: "seed", seed: 3 });
  assert.deepEqual(msg.blend("upload", { steps: 9 }), { t: "blend", source: "upload", steps: 9 });
});

test("a drag's end remembers the mode and the room's step cap it ended under", () => {
  const model = joinedModel();
  assert.notEqual(model.state.params.mode, "predict");
  const params = { ...model.state.params, mode: "predict", max_steps: 200 };
  model.receive({ t: "op", v: model.version + 1, op: "set_params", by: "m1", ref: 1, patch: { params } });
  model.receive({ t: "status", status: "idle", reason: "max_steps", drag: 1, step: 3 });
  assert.equal(model.lastEnd.mode, "predict");
  assert.equal(model.lastEnd.cap, 200);
  assert.equal(model.lastEnd.step, 3);
});
