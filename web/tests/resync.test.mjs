// A second welcome + snapshot on an open connection: what a member relayed by another cluster node
// gets when the room's owner changes (shared/protocol.md section 3; docs/cluster.md "Resync").
// The connection stays joined on the same socket, the model starts afresh from the snapshot, and
// the frame pipeline draws the new owner's frames, numbered from 1 again. The same in a real
// browser on two real nodes: tests/browser/test_cluster_resync.py.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { ConnState, Connection } from "../js/connection.js";
import { FramePipeline } from "../js/frames.js";
import { RoomModel } from "../js/model.js";
import { decode, encode, fromJsonForm, msg } from "../js/protocol.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const golden = (name) => fromJsonForm(JSON.parse(readFileSync(`${ROOT}shared/golden/s2c/${name}.json`, "utf8")));

/** Timers driven by hand (intervals only: what the connection's ping uses). */
class Clock {
  t = 0;
  timers = new Map();
  next = 1;
  now = () => this.t;
  setTimeout = (fn, ms) => this.add(fn, ms, false);
  setInterval = (fn, ms) => this.add(fn, ms, true);
  clearTimeout = (id) => this.timers.delete(id);
  clearInterval = (id) => this.timers.delete(id);
  add(fn, ms, repeat) {
    const id = this.next++;
    this.timers.set(id, { fn, ms, at: this.t + ms, repeat });
    return id;
  }
  advance(ms) {
    this.t += ms;
    for (const [id, tm] of [...this.timers]) {
      while (this.timers.has(id) && tm.at <= this.t) {
        tm.fn();
        if (!tm.repeat) this.timers.delete(id);
        tm.at += tm.ms;
      }
    }
  }
}

class Socket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.sent = [];
    Socket.all.push(this);
  }
  send(bytes) {
    this.sent.push(decode(bytes));
  }
  close() {}
  deliver(m) {
    this.onmessage?.({ data: encode(m).slice().buffer });
  }
}

test("a second welcome on the open socket keeps the connection joined, one ping timer, ids going on", () => {
  Socket.all = [];
  const clock = new Clock();
  const received = [];
  const conn = new Connection({
    url: "ws://x/ws/r",
    cap: "CAP",
    clientId: "client-1234",
    WebSocket: Socket,
    timers: clock,
    now: clock.now,
    onMessage: (m) => received.push(m.t),
  });
  conn.start();
  const ws = Socket.all[0];
  ws.onopen();
  ws.deliver(golden("welcome"));
  ws.deliver(golden("snapshot"));
  assert.equal(conn.send(msg.start()), 1);
  clock.advance(5_000);
  ws.deliver({ ...golden("welcome"), role: "viewer" }); // the new owner's answer to the relay's rejoin
  ws.deliver(golden("snapshot"));
  assert.equal(conn.state, ConnState.JOINED);
  assert.equal(Socket.all.length, 1); // no reconnect
  assert.equal(conn.role, "viewer"); // what the last welcome said
  assert.equal(conn.send(msg.start()), null); // a viewer sends no edits now
  assert.equal(conn.send(msg.ping()), 2); // message ids go on
  assert.deepEqual(received, ["welcome", "snapshot", "welcome", "snapshot"]);
  assert.equal(clock.timers.size, 1); // the ping interval was re-armed, not doubled
  const before = ws.sent.length;
  clock.advance(15_000);
  assert.deepEqual(ws.sent.slice(before).map((m) => m.t), ["ping"]);
});

test("the model starts afresh from the second snapshot: state, members, pending edits, the drag", () => {
  const model = new RoomModel({ now: () => 0 });
  model.receive(golden("welcome"));
  model.receive(golden("snapshot"));
  model.receive({ t: "status", status: "running", drag: 1, step: 3 });
  model.receive({ ...golden("frame"), drag: model.state.drag }); // the old owner's drag: seq 17, handles tracked
  model.addPending(5, msg.clearPoints());
  assert.ok(model.frame && Object.keys(model.tracked).length === 2 && model.pending.length === 1);
  model.receive({ ...golden("welcome"), you: "m4", name: "Ada" }); // the member id may change
  const snap = golden("snapshot");
  model.receive({ ...snap, version: 9, members: [{ ...snap.members[0], id: "m4" }], spectators: 0 });
  assert.equal(model.you, "m4");
  assert.equal(model.version, 9);
  assert.equal(model.frame, null);
  assert.deepEqual(model.tracked, {});
  assert.equal(model.pending.length, 0);
  assert.deepEqual([...model.members.keys()], ["m4"]);
  assert.equal(model.display().pairs.length, snap.state.pairs.length);
  model.receive({ ...golden("frame"), seq: 1, drag: 2 }); // the new owner numbers from 1
  assert.equal(model.frame.seq, 1);
});

test("the frame pipeline, reset by the snapshot, draws the new owner's frames from seq 1", async () => {
  const drawn = [];
  const pipeline = new FramePipeline({
    decodeImage: async (bytes) => ({ seq: bytes[0], close() {} }),
    onReady: (_bm, f) => drawn.push(f.seq),
    ack: () => {},
  });
  const frame = (seq) => ({ seq, jpeg: new Uint8Array([seq]) });
  for (const seq of [16, 17]) {
    pipeline.push(frame(seq));
    await new Promise((r) => setImmediate(r));
  }
  pipeline.reset(); // what the page does on every snapshot (web/js/room.js)
  for (const seq of [1, 2]) {
    pipeline.push(frame(seq));
    await new Promise((r) => setImmediate(r));
  }
  assert.deepEqual(drawn, [16, 17, 1, 2]);
});
