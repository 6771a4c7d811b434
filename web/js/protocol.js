// The livedrag wire protocol on the client: msgpack codec, strict validation of outgoing messages,
// message builders, coordinate conversion and the mask brush, all per shared/protocol.md.
// DOM-free: node imports it in web/tests/. The contract's tables come from ./spec.js (generated
// from shared/protocol.json); msgpack is the vendored @msgpack/msgpack ESM build.

import { decode as mpDecode, encode as mpEncode } from "../vendor/msgpack/index.mjs";
import { SPEC } from "./spec.js";

export const PROTOCOL_VERSION = SPEC.protocol_version;
export const LIMITS = SPEC.limits;
export const MASK_CELL = SPEC.mask_cell;
export const PAINT_VALUE = Object.freeze({
  flexible: MASK_CELL.flexible,
  fixed: MASK_CELL.fixed,
  erase: MASK_CELL.none,
});

/** A message was refused: `code` is a contract error code, `field` the offending path if any. */
export class ProtocolError extends Error {
  constructor(code, message, field = null) {
    super(message ? `${code}: ${message}` : code);
    this.name = "ProtocolError";
    this.code = code;
    this.field = field;
  }
}

// ---------------------------------------------------------------------------------------------
// msgpack

const ENCODE_OPTIONS = Object.freeze({ ignoreUndefined: true });

/** One message (a plain object) -> msgpack bytes. Uint8Array becomes bin, whole numbers ints. */
export function encode(msg) {
  return mpEncode(msg, ENCODE_OPTIONS);
}

/** msgpack bytes -> a message object with a string `t`; anything else is a ProtocolError. */
export function decode(data) {
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  let obj;
  try {
    obj = mpDecode(bytes);
  } catch (e) {
    throw new ProtocolError("malformed", `cannot decode msgpack: ${e.message}`);
  }
  if (!isPlainMap(obj)) throw new ProtocolError("malformed", "expected a map");
  if (typeof obj.t !== "string") throw new ProtocolError("malformed", "missing message type t", "t");
  return obj;
}

/** A message as JSON-ready data: bytes become {"$bin": "<base64>"} (the golden files' form). */
export function toJsonForm(v) {
  if (v instanceof Uint8Array) return { $bin: bytesToBase64(v) };
  if (Array.isArray(v)) return v.map(toJsonForm);
  if (isPlainMap(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toJsonForm(x)]));
  return v;
}

/** Inverse of toJsonForm: {"$bin": "<base64>"} becomes a Uint8Array. */
export function fromJsonForm(v) {
  if (Array.isArray(v)) return v.map(fromJsonForm);
  if (isPlainMap(v)) {
    const keys = Object.keys(v);
    if (keys.length === 1 && keys[0] === "$bin") return base64ToBytes(v.$bin);
    return Object.fromEntries(keys.map((k) => [k, fromJsonForm(v[k])]));
  }
  return v;
}

function bytesToBase64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

function base64ToBytes(b64) {
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

function isPlainMap(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof Uint8Array);
}

// ---------------------------------------------------------------------------------------------
// validation (mirrors server/core/protocol.py over the same tables)

/**
 * Check a client message against the contract; returns a normalised copy (names trimmed) or
 * throws ProtocolError (`unknown_type`, `invalid_field` or `out_of_bounds`). `bounds` = [W, H]
 * checks points against the image.
 */
export function validateClient(msg, bounds = null) {
  if (!isPlainMap(msg)) throw new ProtocolError("malformed", "expected a map");
  const spec = typeof msg.t === "string" ? SPEC.client_messages[msg.t] : undefined;
  if (!spec || !Object.hasOwn(SPEC.client_messages, msg.t)) {
    throw new ProtocolError("unknown_type", `unknown message type ${String(msg.t).slice(0, 40)}`, "t");
  }
  const out = { t: msg.t, ...checkFields(withoutT(msg), spec.fields, "", bounds) };
  if (spec.when) checkWhen(out, spec.when);
  return out;
}

/** The contract's cross-field rule: fields required or forbidden by one field's value (blend's source). */
function checkWhen(m, when) {
  const value = m[when.field];
  for (const name of Object.hasOwn(when.required, value) ? when.required[value] : []) {
    if (!(name in m)) throw invalid(name, `required with ${when.field} ${value}`);
  }
  for (const name of Object.hasOwn(when.forbidden, value) ? when.forbidden[value] : []) {
    if (name in m) throw invalid(name, `not allowed with ${when.field} ${value}`);
  }
}

/** Check a server message against the contract (tests use it; the client trusts the server). */
export function validateServer(msg, bounds = null) {
  if (!isPlainMap(msg)) throw new ProtocolError("malformed", "expected a map");
  const spec = typeof msg.t === "string" ? SPEC.server_messages[msg.t] : undefined;
  if (!spec || !Object.hasOwn(SPEC.server_messages, msg.t)) {
    throw new ProtocolError("unknown_type", `unknown server message type ${String(msg.t)}`, "t");
  }
  const out = { t: msg.t, ...checkFields(withoutT(msg), spec.fields, "", bounds) };
  if (spec.variants) {
    for (const name of spec.variants[out.ev] || []) {
      if (!(name in out)) throw invalid(name, `required for ev=${out.ev}`);
    }
  }
  return out;
}

function withoutT(msg) {
  const { t: _t, ...rest } = msg;
  return rest;
}

function checkFields(obj, fields, path, bounds) {
  for (const key of Object.keys(obj)) {
    if (!Object.hasOwn(fields, key)) throw invalid(`${path}${key}`, "unknown field");
  }
  const out = {};
  for (const [key, f] of Object.entries(fields)) {
    if (Object.hasOwn(obj, key) && obj[key] !== undefined) out[key] = check(obj[key], f, `${path}${key}`, bounds);
    else if (f.required) throw invalid(`${path}${key}`, "missing");
  }
  return out;
}

function check(v, f, path, bounds) {
  if (v === null) {
    if (f.nullable) return null;
    throw invalid(path, "must not be null");
  }
  switch (f.type) {
    case "int":
      if (typeof v !== "number" || !Number.isInteger(v)) throw invalid(path, `expected int, got ${typeName(v)}`);
      checkRange(v, f, path);
      return v;
    case "float":
      if (typeof v !== "number") throw invalid(path, `expected number, got ${typeName(v)}`);
      if (!Number.isFinite(v)) throw invalid(path, "must be finite");
      checkRange(v, f, path);
      return v;
    case "bool":
      if (typeof v !== "boolean") throw invalid(path, `expected bool, got ${typeName(v)}`);
      return v;
    case "str":
    case "name": {
      if (typeof v !== "string") throw invalid(path, `expected str, got ${typeName(v)}`);
      if (f.type === "name") {
        v = v.trim();
        if (!isPrintable(v)) throw invalid(path, "must be printable");
      }
      checkLength([...v].length, f, path);
      if (f.pattern && !regex(f.pattern).test(v)) throw invalid(path, "has characters or a length that are not allowed");
      return v;
    }
    case "enum":
      if (typeof v !== "string" || !f.values.includes(v)) throw invalid(path, `expected one of ${f.values.join(", ")}`);
      return v;
    case "bin":
      if (!(v instanceof Uint8Array)) throw invalid(path, `expected bin, got ${typeName(v)}`);
      checkLength(v.length, f, path);
      return v;
    case "point":
      return checkPoint(v, path, bounds);
    case "list":
      if (!Array.isArray(v)) throw invalid(path, `expected array, got ${typeName(v)}`);
      checkLength(v.length, f, path);
      return v.map((item, i) => check(item, f.items, `${path}[${i}]`, bounds));
    case "map":
      if (!isPlainMap(v)) throw invalid(path, `expected map, got ${typeName(v)}`);
      checkLength(Object.keys(v).length, f, path);
      return checkFields(v, f.fields, `${path}.`, bounds);
    case "dict": {
      if (!isPlainMap(v)) throw invalid(path, `expected map, got ${typeName(v)}`);
      checkLength(Object.keys(v).length, f, path);
      const out = {};
      for (const [key, item] of Object.entries(v)) {
        if (f.pattern && !regex(f.pattern).test(key)) throw invalid(path, `bad key ${key.slice(0, 40)}`);
        out[key] = f.items ? check(item, f.items, `${path}.${key}`, bounds) : item;
      }
      return out;
    }
    default:
      throw new Error(`unknown field kind ${f.type}`); // a bug in the spec, not in the message
  }
}

function checkPoint(v, path, bounds) {
  if (!Array.isArray(v) || v.length !== 2) throw invalid(path, "expected [x, y]");
  const [x, y] = v;
  if (typeof x !== "number" || typeof y !== "number") throw invalid(path, "coordinates must be numbers");
  if (!Number.isFinite(x) || !Number.isFinite(y)) throw invalid(path, "coordinates must be finite");
  if (bounds) {
    const [w, h] = bounds;
    if (!(x >= 0 && x < w && y >= 0 && y < h)) {
      throw new ProtocolError("out_of_bounds", `${path}: (${x}, ${y}) is outside the ${w}x${h} image`, path);
    }
  }
  return [x, y];
}

function checkRange(v, f, path) {
  const lo = f.min ?? -Infinity;
  const hi = f.max ?? Infinity;
  if (v < lo || v > hi) throw invalid(path, `must be in [${lo}, ${hi}]`);
}

function checkLength(n, f, path) {
  const lo = f.min_len ?? 0;
  const hi = f.max_len ?? Infinity;
  if (n < lo || n > hi) throw invalid(path, `length must be in [${lo}, ${hi}]`);
}

const regexCache = new Map();
function regex(pattern) {
  let rx = regexCache.get(pattern);
  if (!rx) regexCache.set(pattern, (rx = new RegExp(pattern, "u")));
  return rx;
}

// Python's str.isprintable(): no control, format, surrogate, private-use, unassigned or separator
// characters, except the ASCII space.
const NOT_PRINTABLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}]|(?! )\p{Zs}/u;

export function isPrintable(s) {
  return !NOT_PRINTABLE.test(s);
}

function invalid(path, what) {
  return new ProtocolError("invalid_field", `${path}: ${what}`, path);
}

function typeName(v) {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (v instanceof Uint8Array) return "bin";
  if (typeof v === "number") return Number.isInteger(v) ? "int" : "float";
  return typeof v === "object" ? "map" : typeof v;
}

// ---------------------------------------------------------------------------------------------
// names

/** A display name as the server will see it: trimmed, printable, at most max_name_chars. */
export function cleanName(name) {
  const chars = [...String(name ?? "").replace(NOT_PRINTABLE_GLOBAL, "").trim()];
  return chars.slice(0, LIMITS.max_name_chars).join("").trim();
}
const NOT_PRINTABLE_GLOBAL = new RegExp(NOT_PRINTABLE.source, "gu");

// ---------------------------------------------------------------------------------------------
// message builders (the connection adds `id`)

export const msg = Object.freeze({
  hello: (cap, name, clientId, secret) => {
    const m = { t: "hello", v: PROTOCOL_VERSION, cap, name: cleanName(name) };
    if (clientId) m.client_id = clientId;
    if (secret) m.secret = secret;
    return m;
  },
  addPair: (pair, handle, target) => ({ t: "add_pair", pair, handle: point(handle), target: point(target) }),
  movePoint: (pair, which, pos) => ({ t: "move_point", pair, which, pos: point(pos) }),
  removePair: (pair) => ({ t: "remove_pair", pair }),
  clearPoints: () => ({ t: "clear_points" }),
  paintMask: (mode, radius, points) => ({ t: "paint_mask", mode, radius, points: points.map(point) }),
  clearMask: () => ({ t: "clear_mask" }),
  setParams: (params) => ({ t: "set_params", params: { ...params } }),
  start: () => ({ t: "start" }),
  stop: () => ({ t: "stop" }),
  newImage: (seed, truncation) => (truncation == null ? { t: "new_image", seed } : { t: "new_image", seed, truncation }),
  reset: () => ({ t: "reset" }),
  undo: () => ({ t: "undo" }),
  redo: () => ({ t: "redo" }),
  setName: (name) => ({ t: "set_name", name: cleanName(name) }),
  cursor: (pos) => ({ t: "cursor", pos: pos == null ? null : point(pos) }),
  ack: (seq) => ({ t: "ack", seq }),
  ping: () => ({ t: "ping" }),
  /** Blend a source into the mask's flexible area: blend("seed", {seed, truncation?, steps?}) or blend("upload", {steps?}). */
  blend: (source, { seed, truncation, steps } = {}) => {
    const m = { t: "blend", source };
    if (seed != null) m.seed = seed;
    if (truncation != null) m.truncation = truncation;
    if (steps != null) m.steps = steps;
    return m;
  },
});

/** A copy of a message with message id `id`, placed right after `t` (the golden files' order). */
export function withId(m, id) {
  const { t, id: _old, ...rest } = m;
  return { t, id, ...rest };
}

function point(p) {
  return [p[0], p[1]];
}

/** Message types that change the room (answered by an `op` or an `error`). */
export const VERSIONED = Object.freeze(
  new Set(Object.entries(SPEC.client_messages).filter(([, s]) => s.versioned).map(([t]) => t)),
);

/** Message types a viewer may send. */
export const VIEWER_MAY_SEND = Object.freeze(
  new Set(Object.entries(SPEC.client_messages).filter(([, s]) => s.role === "any").map(([t]) => t)),
);

// ---------------------------------------------------------------------------------------------
// coordinates

/**
 * A canvas position (CSS px offset cx, cy in a canvas of CSS size cw x ch) -> image pixels
 * [x, y] of a W x H image: x = cx * W / cw - 0.5 clamped to [0, W - 1] (same for y).
 */
export function canvasToImage(cx, cy, cw, ch, W, H) {
  return [clamp((cx * W) / cw - 0.5, 0, W - 1), clamp((cy * H) / ch - 0.5, 0, H - 1)];
}

/** Inverse of canvasToImage (no clamping): image pixels -> CSS px in a cw x ch canvas. */
export function imageToCanvas(x, y, cw, ch, W, H) {
  return [((x + 0.5) * cw) / W, ((y + 0.5) * ch) / H];
}

/** Whether [x, y] lies inside a W x H image (0 <= x < W, 0 <= y < H). */
export function inBounds(p, W, H) {
  return p[0] >= 0 && p[0] < W && p[1] >= 0 && p[1] < H;
}

export function clamp(v, lo, hi) {
  return v < lo ? lo : v > hi ? hi : v;
}

// ---------------------------------------------------------------------------------------------
// mask

/** Grid size of the mask of a W x H image: min(W, 64) x min(H, 64). */
export function maskGridSize(W, H) {
  return [Math.min(W, LIMITS.mask_max_cells), Math.min(H, LIMITS.mask_max_cells)];
}

/**
 * One brush stroke on a mask grid (same rule as the server, shared/protocol.md section 4):
 * cells whose centre ((i + 0.5) * W/gw - 0.5, ...) lies within `radius` of the polyline through
 * `points` get the mode's value. Returns a new Uint8Array; `cells` is not changed.
 */
export function paintCells(cells, gw, gh, W, H, mode, radius, points) {
  const value = PAINT_VALUE[mode];
  if (value === undefined) throw new ProtocolError("invalid_field", `unknown paint mode ${mode}`, "mode");
  const out = Uint8Array.from(cells);
  if (!points.length) return out;
  const sx = W / gw;
  const sy = H / gh;
  const r2 = radius * radius;
  let minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity; // prettier-ignore
  for (const [x, y] of points) {
    minX = Math.min(minX, x); minY = Math.min(minY, y); maxX = Math.max(maxX, x); maxY = Math.max(maxY, y); // prettier-ignore
  }
  const i0 = Math.max(0, Math.floor((minX - radius + 0.5) / sx - 0.5));
  const j0 = Math.max(0, Math.floor((minY - radius + 0.5) / sy - 0.5));
  const i1 = Math.min(gw, Math.ceil((maxX + radius + 0.5) / sx - 0.5) + 1);
  const j1 = Math.min(gh, Math.ceil((maxY + radius + 0.5) / sy - 0.5) + 1);
  const segs = points.length === 1 ? [[points[0], points[0]]] : points.slice(1).map((b, k) => [points[k], b]);
  for (let j = j0; j < j1; j++) {
    const py = (j + 0.5) * sy - 0.5;
    for (let i = i0; i < i1; i++) {
      const px = (i + 0.5) * sx - 0.5;
      for (const [[ax, ay], [bx, by]] of segs) {
        const dx = bx - ax;
        const dy = by - ay;
        const seg2 = dx * dx + dy * dy;
        const t = seg2 > 0 ? clamp(((px - ax) * dx + (py - ay) * dy) / seg2, 0, 1) : 0;
        const ex = px - (ax + t * dx);
        const ey = py - (ay + t * dy);
        if (ex * ex + ey * ey <= r2) {
          out[j * gw + i] = value;
          break;
        }
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// close codes, errors, ids

const CLOSE_BY_CODE = new Map(Object.entries(SPEC.close_codes).map(([name, c]) => [c.code, { name, ...c }]));

/** {name, code, reason, reconnect} for a contract close code, or null for other codes. */
export function closeInfo(code) {
  return CLOSE_BY_CODE.get(code) ?? null;
}

/** The contract's field spec of one room parameter (type, min, max, nullable). */
export function paramSpec(key) {
  return SPEC.types.params.fields[key] ?? null;
}

/** The contract's default message for an error code. */
export function errorText(code) {
  return SPEC.errors[code]?.message ?? code;
}

const ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

/** A random id of `n` characters from [A-Za-z0-9_-] (crypto-strength where available). */
export function randomId(n = 16, rng = globalThis.crypto) {
  const bytes = new Uint8Array(n);
  if (rng?.getRandomValues) rng.getRandomValues(bytes);
  else for (let i = 0; i < n; i++) bytes[i] = Math.floor(Math.random() * 256);
  let s = "";
  for (const b of bytes) s += ID_ALPHABET[b & 63];
  return s;
}

/** A random seed in 0..2^32-1. */
export function randomSeed(rng = globalThis.crypto) {
  const a = new Uint32Array(1);
  if (rng?.getRandomValues) rng.getRandomValues(a);
  else a[0] = Math.floor(Math.random() * 2 ** 32);
  return a[0];
}

/** Read the capability from a room link's fragment: {edit, view} (either may be null). */
export function parseFragment(hash) {
  const params = new URLSearchParams(String(hash || "").replace(/^#/, ""));
  const tokenOk = (v) => (v && regex(SPEC.patterns.token).test(v) ? v : null);
  return { edit: tokenOk(params.get("edit")), view: tokenOk(params.get("view")) };
}

/** The room id from a room page path `/r/{room}`, or null. */
export function parseRoomPath(pathname) {
  const m = /^\/r\/([^/?#]+)\/?$/.exec(String(pathname || ""));
  if (!m) return null;
  const room = decodeURIComponent(m[1]);
  return regex(SPEC.patterns.id).test(room) ? room : null;
}
