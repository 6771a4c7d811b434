// Lost handles on the client: a frame's `lost` list marks those pairs (model.display() gives them
// `lost: true`, the stage draws them grey with "?") until they are placed again or a new drag starts;
// the drag's end reason `lost` (or `stalled`) reaches model.lastEnd for the status line.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { RoomModel } from "../js/model.js";
import { fromJsonForm } from "../js/protocol.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const golden = (name) => fromJsonForm(JSON.parse(readFileSync(`${ROOT}shared/golden/s2c/${name}.json`, "utf8")));

function runningModel(drag) {
  const model = new RoomModel({ now: () => 0 });
  model.receive(golden("welcome"));
  model.receive(golden("snapshot"));
  model.receive({ t: "op", v: 8, op: "start", by: "m1", ref: 1, patch: { status: "running", step: 0, drag } });
  return model;
}

const lostIds = (model) => model.display().pairs.filter((p) => p.lost).map((p) => p.id);

test("a frame's lost pairs are marked, and stay marked after the drag ends lost", () => {
  const frame = golden("frame_lost");
  const model = runningModel(frame.drag);
  model.receive(frame);
  assert.deepEqual(lostIds(model), ["p2"]);
  assert.deepEqual(model.display().pairs[1].handle, frame.handles.p2);
  const pairs = model.state.pairs.map((p) => ({ ...p, handle: frame.handles[p.id] }));
  model.receive({ t: "op", v: 9, op: "finish", by: null, ref: null, patch: { status: "idle", step: 9, pairs } });
  model.receive(golden("status_lost"));
  assert.deepEqual(lostIds(model), ["p2"]); // the finish moves handles where the frame tracked them
  assert.equal(model.lastEnd.reason, "lost");
  assert.equal(model.lastEnd.lost, 1);
  assert.equal(model.lastEnd.pairs, pairs.length); // the others went on: "the other handle reached its target"
});

test("placing a lost handle again, or a new drag, clears its mark", () => {
  const frame = golden("frame_lost");
  const model = runningModel(frame.drag);
  model.receive(frame);
  const moved = model.state.pairs.map((p) => (p.id === "p2" ? { ...p, handle: [5.5, 6.5] } : p));
  model.receive({ t: "op", v: 9, op: "move_point", by: "m2", ref: 4, patch: { pairs: moved } });
  assert.deepEqual(lostIds(model), []);
  model.receive(frame);
  assert.deepEqual(lostIds(model), ["p2"]);
  model.receive({ t: "op", v: 10, op: "start", by: "m1", ref: 2, patch: { status: "running", step: 0, drag: 5 } });
  assert.deepEqual(lostIds(model), []);
});

test("a frame without lost clears the marks; a stalled drag says so in lastEnd", () => {
  const frame = golden("frame_lost");
  const model = runningModel(frame.drag);
  model.receive(frame);
  const { lost, ...plain } = frame;
  assert.deepEqual(lost, ["p2"]);
  model.receive({ ...plain, seq: frame.seq + 1 });
  assert.deepEqual(lostIds(model), []);
  model.receive({ ...golden("status_stalled"), drag: frame.drag });
  assert.equal(model.lastEnd.reason, "stalled");
  assert.equal(model.lastEnd.lost, 0);
});
