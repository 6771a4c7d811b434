// The DOM-free parts of people.js: this browser's identity secret, when to ask for a name, and how
// a cursor reads in the avatar card.
import assert from "node:assert/strict";
import { test } from "node:test";

import { browserSecret, cursorText, NAME_ASKED_KEY, SECRET_KEY, shouldAskName } from "../js/people.js";
import { SPEC } from "../js/spec.js";

function memoryStore(init = {}) {
  const m = new Map(Object.entries(init));
  return { get: (k, d = null) => (m.has(k) ? m.get(k) : d), set: (k, v) => (v == null ? m.delete(k) : m.set(k, v)), m };
}

test("the secret is made once, kept, and matches the protocol's pattern", () => {
  const store = memoryStore();
  const s = browserSecret(store);
  assert.match(s, new RegExp(SPEC.patterns.secret));
  assert.equal(s.length, 32);
  assert.equal(store.get(SECRET_KEY), s);
  assert.equal(browserSecret(store), s);
});

test("a damaged kept secret is replaced", () => {
  const store = memoryStore({ [SECRET_KEY]: "short" });
  const s = browserSecret(store, () => "x".repeat(32));
  assert.equal(s, "x".repeat(32));
  assert.equal(store.get(SECRET_KEY), s);
});

test("a name is asked for once: not when one is kept, not after Not now", () => {
  assert.equal(shouldAskName(memoryStore(), "livedrag.name"), true);
  assert.equal(shouldAskName(memoryStore({ "livedrag.name": "Ada" }), "livedrag.name"), false);
  assert.equal(shouldAskName(memoryStore({ "livedrag.name": "   " }), "livedrag.name"), true);
  assert.equal(shouldAskName(memoryStore({ [NAME_ASKED_KEY]: "1" }), "livedrag.name"), false);
});

test("a cursor reads as a place on the image, resting when idle, or absent", () => {
  assert.equal(cursorText({ pos: [12.4, 80.6], idle: false }, false), "Their cursor is at 12, 81 on the image.");
  assert.equal(cursorText({ pos: [1, 2], idle: true }, false), "Their cursor rests at 1, 2 on the image.");
  assert.equal(cursorText(null, false), "Their cursor is not over the image.");
  assert.equal(cursorText(null, true), "This is you.");
});
