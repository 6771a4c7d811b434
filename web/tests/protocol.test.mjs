// The JS protocol module against the contract's golden files (shared/golden/) and its rules:
// exact msgpack bytes both ways, validation, builders, coordinates, the mask brush.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import {
  canvasToImage,
  cleanName,
  closeInfo,
  decode,
  encode,
  fromJsonForm,
  imageToCanvas,
  isPrintable,
  LIMITS,
  maskGridSize,
  msg,
  paintCells,
  parseFragment,
  parseRoomPath,
  PROTOCOL_VERSION,
  ProtocolError,
  randomId,
  randomSeed,
  toJsonForm,
  validateClient,
  validateServer,
  VERSIONED,
  VIEWER_MAY_SEND,
  withId,
} from "../js/protocol.js";
import { SPEC } from "../js/spec.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const GOLDEN = `${ROOT}shared/golden`;

function goldens(dir) {
  return readdirSync(`${GOLDEN}/${dir}`)
    .filter((f) => f.endsWith(".json"))
    .sort()
    .map((f) => {
      const name = f.slice(0, -5);
      const json = JSON.parse(readFileSync(`${GOLDEN}/${dir}/${f}`, "utf8"));
      const path = `${GOLDEN}/${dir}/${name}.msgpack`;
      const bytes = existsSync(path) ? new Uint8Array(readFileSync(path)) : null;
      return { name, json, bytes };
    });
}

test("web/js/spec.js is shared/protocol.json (run node web/tools/sync_spec.mjs after a contract change)", () => {
  const contract = JSON.parse(readFileSync(`${ROOT}shared/protocol.json`, "utf8"));
  delete contract.$comment;
  assert.deepEqual(JSON.parse(JSON.stringify(SPEC)), contract);
  assert.equal(PROTOCOL_VERSION, contract.protocol_version);
});

const C2S = goldens("c2s");
const S2C = goldens("s2c");
const INVALID = goldens("invalid");

test("the golden folders are not empty", () => {
  assert.ok(C2S.length >= 15, `c2s: ${C2S.length}`);
  assert.ok(S2C.length >= 15, `s2c: ${S2C.length}`);
  assert.ok(INVALID.length >= 10, `invalid: ${INVALID.length}`);
});

for (const dir of ["c2s", "s2c"]) {
  for (const g of dir === "c2s" ? C2S : S2C) {
    test(`${dir}/${g.name}: decoding the .msgpack gives the JSON form`, () => {
      assert.ok(g.bytes, "missing .msgpack");
      assert.deepEqual(toJsonForm(decode(g.bytes)), g.json);
    });
    test(`${dir}/${g.name}: encoding the JSON form gives the exact .msgpack bytes`, () => {
      assert.deepEqual(Buffer.from(encode(fromJsonForm(g.json))), Buffer.from(g.bytes));
    });
  }
}

for (const g of C2S) {
  test(`c2s/${g.name} passes client validation in a 256x256 image`, () => {
    const m = fromJsonForm(g.json);
    assert.deepEqual(validateClient(m, [256, 256]), m);
  });
}

for (const g of S2C) {
  test(`s2c/${g.name} passes server-message validation`, () => {
    validateServer(fromJsonForm(g.json));
  });
}

for (const g of INVALID) {
  test(`invalid/${g.name} is refused with ${g.json.error}`, () => {
    const m = fromJsonForm(g.json.message);
    assert.throws(
      () => validateClient(m, g.json.bounds),
      (e) => e instanceof ProtocolError && e.code === g.json.error,
    );
  });
}

test("the builders produce the golden client messages byte for byte", () => {
  const cases = {
    hello: msg.hello("Zk3v9Qm2LxTQ0n8Yb1cR5wHs7JdUe4Ap", "Ada", "c7Hq2LmX9vTz"),
    add_pair: withId(msg.addPair("p1", [100.5, 120.5], [140.5, 110.5]), 1),
    move_point: withId(msg.movePoint("p1", "target", [150.5, 105.25]), 2),
    remove_pair: withId(msg.removePair("p2"), 3),
    clear_points: withId(msg.clearPoints(), 4),
    paint_mask: withId(msg.paintMask("flexible", 12.5, [[120.5, 90.5], [130.5, 95.5], [140.5, 99.5]]), 5),
    clear_mask: withId(msg.clearMask(), 6),
    set_params: withId(msg.setParams({ lr: 0.001, max_steps: 200, r1: null }), 7),
    start: withId(msg.start(), 8),
    stop: withId(msg.stop(), 9),
    new_image: withId(msg.newImage(1234, 0.5), 10),
    undo: withId(msg.undo(), 11),
    redo: withId(msg.redo(), 12),
    set_name: withId(msg.setName("  Ada L. "), 13),
    ping: withId(msg.ping(), 14),
    ack: msg.ack(17),
    cursor: msg.cursor([128.5, 64.25]),
    cursor_hide: msg.cursor(null),
    blend: withId(msg.blend("seed", { seed: 77, truncation: 0.5, steps: 60 }), 15),
    blend_upload: withId(msg.blend("upload"), 16),
    hello_secret: msg.hello("Zk3v9Qm2LxTQ0n8Yb1cR5wHs7JdUe4Ap", "Ada", "c7Hq2LmX9vTz", "q8Rk2vXa9LmT3wZpYc7HdN5s"),
    reset: withId(msg.reset(), 17),
    set_params_space: withId(msg.setParams({ space: "w" }), 18),
  };
  for (const g of C2S) {
    assert.ok(g.name in cases, `no builder case for ${g.name}`);
    assert.deepEqual(Buffer.from(encode(cases[g.name])), Buffer.from(g.bytes), g.name);
  }
});

test("encode writes no undefined fields and whole numbers as integers", () => {
  const bytes = encode({ t: "new_image", seed: 7, truncation: undefined });
  assert.deepEqual(decode(bytes), { t: "new_image", seed: 7 });
  assert.equal(encode({ t: "ack", seq: 3 }).length, 1 + 2 + 4 + 4 + 1); // fixmap, "t", "ack", "seq", fixint
});

test("decode refuses garbage, non-maps and maps without a string t", () => {
  for (const bad of [new Uint8Array([0xc1]), encode([1, 2]), encode({ x: 1 }), encode({ t: 5 }), new Uint8Array([])]) {
    assert.throws(() => decode(bad), (e) => e instanceof ProtocolError && e.code === "malformed");
  }
  assert.deepEqual(decode(encode({ t: "pong", ref: null, time: 1.5 }).slice().buffer), { t: "pong", ref: null, time: 1.5 });
});

test("validation mirrors the contract's limits", () => {
  const ok = (m, b = [64, 64]) => validateClient(m, b);
  const bad = (m, code = "invalid_field", b = [64, 64]) =>
    assert.throws(() => validateClient(m, b), (e) => e.code === code, JSON.stringify(m));
  ok({ t: "add_pair", pair: "a".repeat(32), handle: [0, 0], target: [63.99, 63.99] });
  bad({ t: "add_pair", pair: "a".repeat(33), handle: [0, 0], target: [1, 1] });
  bad({ t: "add_pair", pair: "p", handle: [0, 0], target: [64, 1] }, "out_of_bounds");
  bad({ t: "add_pair", pair: "p", handle: [NaN, 0], target: [1, 1] });
  bad({ t: "add_pair", pair: "p", handle: [Infinity, 0], target: [1, 1] });
  ok({ t: "paint_mask", mode: "erase", radius: 0.5, points: Array(LIMITS.max_stroke_points).fill([1, 1]) });
  bad({ t: "paint_mask", mode: "erase", radius: 0.5, points: Array(LIMITS.max_stroke_points + 1).fill([1, 1]) });
  bad({ t: "paint_mask", mode: "erase", radius: 0.49, points: [[1, 1]] });
  bad({ t: "paint_mask", mode: "erase", radius: 257, points: [[1, 1]] });
  ok({ t: "set_params", params: { mode: "predict", stop_dist: null, lambda: 0 } });
  bad({ t: "set_params", params: { max_steps: 10.5 } });
  bad({ t: "set_params", params: { max_steps: 0 } });
  bad({ t: "set_params", params: { mode: null } });
  ok({ t: "new_image", seed: 0xffffffff, truncation: 2 });
  bad({ t: "new_image", seed: -1 });
  ok({ t: "set_name", name: "x".repeat(LIMITS.max_name_chars) });
  bad({ t: "set_name", name: "tab\there" });
  ok({ t: "hello", v: PROTOCOL_VERSION, cap: "abc", name: "" });
  bad({ t: "hello", v: PROTOCOL_VERSION, cap: "a b", name: "" });
  bad({ t: "hello", v: PROTOCOL_VERSION, cap: "abc", name: "", client_id: "short" });
  bad({ t: "ack", seq: 1, id: 2 ** 32 });
  ok({ t: "ack", seq: 1, id: 2 ** 32 - 1 });
  bad({ t: "toString" }, "unknown_type");
  bad({ t: "__proto__" }, "unknown_type");
});

test("names: trimmed, printable like Python's str.isprintable, at most 32 characters", () => {
  assert.equal(cleanName("  Ada Lovelace  "), "Ada Lovelace");
  assert.equal(cleanName("A\u0000d\u202ea"), "Ada");
  assert.equal([...cleanName("é".repeat(40))].length, LIMITS.max_name_chars);
  assert.equal(cleanName("😀".repeat(40)), "😀".repeat(32));
  assert.ok(isPrintable("Grace Hopper ✓"));
  for (const s of ["a\nb", "a\u00a0b", "a\u2028b", "a\u200bb", "a\ud800b"]) assert.ok(!isPrintable(s), JSON.stringify(s));
});

test("roles: viewers may send only ping and ack; edits are versioned", () => {
  assert.deepEqual([...VIEWER_MAY_SEND].sort(), ["ack", "hello", "ping"]);
  for (const t of ["add_pair", "move_point", "start", "undo", "new_image", "paint_mask"]) assert.ok(VERSIONED.has(t), t);
  for (const t of ["cursor", "set_name", "ack", "ping", "hello"]) assert.ok(!VERSIONED.has(t), t);
});

test("canvas -> image follows the contract's formula and clamps to the image", () => {
  // a 64 px image shown at 512 CSS px: 8 CSS px per image pixel
  assert.deepEqual(canvasToImage(4, 4, 512, 512, 64, 64), [0, 0]); // centre of the first pixel
  assert.deepEqual(canvasToImage(256, 128, 512, 512, 64, 64), [31.5, 15.5]);
  assert.deepEqual(canvasToImage(0, 0, 512, 512, 64, 64), [0, 0]); // clamped from -0.5
  assert.deepEqual(canvasToImage(512, 600, 512, 512, 64, 64), [63, 63]); // clamped to W - 1
  assert.deepEqual(canvasToImage(300, 150, 600, 300, 128, 64), [63.5, 31.5]);
});

test("image -> canvas inverts canvas -> image inside the image", () => {
  for (const [cx, cy] of [[10, 20], [100.5, 333.25], [500, 7]]) {
    const [x, y] = canvasToImage(cx, cy, 512, 384, 128, 96);
    const [bx, by] = imageToCanvas(x, y, 512, 384, 128, 96);
    assert.ok(Math.abs(bx - cx) < 1e-9 && Math.abs(by - cy) < 1e-9, `${cx},${cy} -> ${bx},${by}`);
  }
});

test("close codes carry the contract's reconnect decision", () => {
  assert.equal(closeInfo(4001).name, "bad_capability");
  assert.equal(closeInfo(4001).reconnect, false);
  assert.equal(closeInfo(4005).name, "room_full");
  assert.equal(closeInfo(4005).reconnect, true);
  assert.equal(closeInfo(4002).name, "version_mismatch");
  assert.equal(closeInfo(4017).reconnect, false);
  assert.equal(closeInfo(1006), null);
});

test("links: capability from the fragment, room from the path", () => {
  assert.deepEqual(parseFragment("#edit=abc_-1"), { edit: "abc_-1", view: null });
  assert.deepEqual(parseFragment("#edit=E1&view=V2"), { edit: "E1", view: "V2" });
  assert.deepEqual(parseFragment("#view=bad token"), { edit: null, view: null });
  assert.deepEqual(parseFragment(""), { edit: null, view: null });
  assert.equal(parseRoomPath("/r/Rk2mQ8xZ0aPw"), "Rk2mQ8xZ0aPw");
  assert.equal(parseRoomPath("/r/Rk2m/"), "Rk2m");
  assert.equal(parseRoomPath("/r/a%20b"), null);
  assert.equal(parseRoomPath("/x/abc"), null);
});

test("random ids and seeds are in range", () => {
  const ids = new Set(Array.from({ length: 200 }, () => randomId(16)));
  assert.equal(ids.size, 200);
  for (const id of ids) assert.match(id, /^[A-Za-z0-9_-]{16}$/);
  for (let i = 0; i < 100; i++) {
    const s = randomSeed();
    assert.ok(Number.isInteger(s) && s >= 0 && s <= 0xffffffff);
  }
});

// --- mask brush ---------------------------------------------------------------------------------

/** The contract's rule, written the slow obvious way. */
function bruteForce(cells, gw, gh, W, H, mode, radius, pts) {
  const out = Uint8Array.from(cells);
  const v = { flexible: 1, fixed: 2, erase: 0 }[mode];
  const segs = pts.length === 1 ? [[pts[0], pts[0]]] : pts.slice(1).map((b, k) => [pts[k], b]);
  for (let j = 0; j < gh; j++) {
    for (let i = 0; i < gw; i++) {
      const px = ((i + 0.5) * W) / gw - 0.5;
      const py = ((j + 0.5) * H) / gh - 0.5;
      const hit = segs.some(([a, b]) => {
        const dx = b[0] - a[0];
        const dy = b[1] - a[1];
        const L = dx * dx + dy * dy;
        const t = L > 0 ? Math.min(1, Math.max(0, ((px - a[0]) * dx + (py - a[1]) * dy) / L)) : 0;
        return (px - a[0] - t * dx) ** 2 + (py - a[1] - t * dy) ** 2 <= radius * radius;
      });
      if (hit) out[j * gw + i] = v;
    }
  }
  return out;
}

function lcg(seed) {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}

test("mask grid size is min(W, 64) x min(H, 64)", () => {
  assert.deepEqual(maskGridSize(256, 256), [64, 64]);
  assert.deepEqual(maskGridSize(32, 48), [32, 48]);
  assert.deepEqual(maskGridSize(128, 40), [64, 40]);
});

test("paintCells matches the brute-force rule on random strokes", () => {
  const rand = lcg(7);
  for (let k = 0; k < 60; k++) {
    const [W, H] = [[256, 256], [64, 64], [32, 48], [128, 100]][k % 4];
    const [gw, gh] = maskGridSize(W, H);
    let cells = new Uint8Array(gw * gh);
    const mode = ["flexible", "fixed", "erase"][k % 3];
    const n = 1 + Math.floor(rand() * 5);
    const pts = Array.from({ length: n }, () => [rand() * (W - 1), rand() * (H - 1)]);
    const radius = 0.5 + rand() * W * 0.2;
    cells = paintCells(cells, gw, gh, W, H, "fixed", radius * 1.3, pts); // something to erase
    assert.deepEqual(paintCells(cells, gw, gh, W, H, mode, radius, pts), bruteForce(cells, gw, gh, W, H, mode, radius, pts));
  }
});

test("paintCells does not change its input and paints a single point's disc", () => {
  const cells = new Uint8Array(64 * 64);
  const out = paintCells(cells, 64, 64, 64, 64, "flexible", 2, [[10, 10]]);
  assert.equal(cells.reduce((a, b) => a + b, 0), 0);
  // cells are pixels here: the disc of radius 2 around (10, 10) has 13 lattice points
  assert.equal(out.reduce((a, b) => a + b, 0), 13);
  assert.equal(out[10 * 64 + 10], 1);
});

const PYTHON = `${ROOT}.venv/bin/python`;
test("paintCells agrees with the server's MaskGrid.painted", { skip: !existsSync(PYTHON) && "no .venv/bin/python" }, () => {
  const rand = lcg(11);
  const cases = Array.from({ length: 25 }, (_, k) => {
    const [W, H] = [[256, 256], [128, 128], [40, 72]][k % 3];
    const pts = Array.from({ length: 1 + (k % 4) }, () => [rand() * (W - 1), rand() * (H - 1)]);
    return { W, H, mode: ["flexible", "fixed"][k % 2], radius: 0.5 + rand() * 30, pts };
  });
  const script = `
import json, sys
from server.core.mask import MaskGrid
out = []
for c in json.load(sys.stdin):
    g = MaskGrid.empty(c["W"], c["H"]).painted(c["mode"], c["radius"], [tuple(p) for p in c["pts"]])
    out.append(list(g.cells))
print(json.dumps(out))
`;
  const r = spawnSync(PYTHON, ["-c", script], { cwd: ROOT, input: JSON.stringify(cases), encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  const expected = JSON.parse(r.stdout);
  cases.forEach((c, k) => {
    const [gw, gh] = maskGridSize(c.W, c.H);
    const got = paintCells(new Uint8Array(gw * gh), gw, gh, c.W, c.H, c.mode, c.radius, c.pts);
    assert.deepEqual([...got], expected[k], `case ${k}`);
  });
});
