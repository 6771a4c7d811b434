// The display scale rules (web/js/zoom.js): fit never upscales more than 4x, the zoom ladder,
// the canvas budget and the upscaled export's size; and the zoom shortcuts.
import assert from "node:assert/strict";
import { test } from "node:test";

import { matchShortcut } from "../js/shortcuts.js";
import {
  canvasRatio,
  exportFactor,
  FIT,
  fitScale,
  MAX_FIT_UPSCALE,
  normaliseZoom,
  parseZoom,
  pixelated,
  pngName,
  scaleOf,
  stepZoom,
  zoomLabel,
  zoomSteps,
} from "../js/zoom.js";

test("fit: as large as the area allows but never more than 4x the native size", () => {
  const laptop = [1000, 620]; // the stage of a 1366x768 screen, roughly
  assert.equal(MAX_FIT_UPSCALE, 4);
  assert.equal(fitScale(64, 64, ...laptop), 4); // 256 px, not 620
  assert.equal(fitScale(128, 128, ...laptop), 4); // 512 px
  assert.equal(fitScale(256, 256, ...laptop), 620 / 256); // the area limits it
  assert.equal(fitScale(512, 512, ...laptop), 620 / 512);
  assert.equal(fitScale(1024, 1024, ...laptop), 620 / 1024); // below 1x: the whole image shows
  assert.equal(fitScale(256, 128, 400, 1000), 400 / 256); // the narrow side of the area wins
  assert.equal(fitScale(128, 128, 10_000, 10_000, 2), 2); // the cap is a parameter
  assert.equal(fitScale(0, 0, 100, 100), 1); // no image yet
  assert.ok(fitScale(64, 64, 0, 0) > 0);
});

test("zoom steps: 1x, below it only for big images, above it up to 8192 px", () => {
  assert.deepEqual(zoomSteps(64, 64), [1, 2, 4, 8, 16]);
  assert.deepEqual(zoomSteps(128, 128), [1, 2, 4, 8, 16]);
  assert.deepEqual(zoomSteps(256, 256), [0.5, 1, 2, 4, 8, 16]);
  assert.deepEqual(zoomSteps(1024, 1024), [0.25, 0.5, 1, 2, 4, 8]);
  assert.deepEqual(zoomSteps(16, 16), [1, 2, 4, 8, 16]);
  assert.deepEqual(zoomSteps(16384, 16384), [0.25, 0.5, 1]); // 1x always, even past the bound
  for (const side of [32, 64, 128, 256, 512, 1024]) assert.ok(zoomSteps(side, side).includes(1));
});

test("zoom: stored values come back valid for the image; +/- walk the ladder from any scale", () => {
  assert.equal(parseZoom(null), FIT);
  assert.equal(parseZoom("fit"), FIT);
  assert.equal(parseZoom("2"), 2);
  assert.equal(parseZoom("-1"), FIT);
  assert.equal(parseZoom("nonsense"), FIT);
  assert.equal(normaliseZoom(FIT, 64, 64), FIT);
  assert.equal(normaliseZoom(8, 64, 64), 8);
  assert.equal(normaliseZoom(16, 1024, 1024), 8); // too big for this model: the nearest step
  assert.equal(normaliseZoom(0.25, 64, 64), 1);
  assert.equal(normaliseZoom(3, 128, 128), 4); // nearest on a log scale (3 is nearer 4 than 2)
  assert.equal(scaleOf(FIT, 3.2), 3.2);
  assert.equal(scaleOf(2, 3.2), 2);
  // from fit at 3.2x: in goes to 4x, out to 2x; from a step, to its neighbours
  assert.equal(stepZoom(3.2, 1, 128, 128), 4);
  assert.equal(stepZoom(3.2, -1, 128, 128), 2);
  assert.equal(stepZoom(4, 1, 128, 128), 8);
  assert.equal(stepZoom(4, -1, 128, 128), 2);
  assert.equal(stepZoom(16, 1, 128, 128), 16); // the ends stay put
  assert.equal(stepZoom(1, -1, 128, 128), 1);
  assert.equal(stepZoom(0.6, -1, 1024, 1024), 0.5); // a 1024 px model fitted below 1x
});

test("zoom: smooth up to 4x, pixels beyond; labels; canvases within their pixel budget", () => {
  assert.equal(pixelated(1), false);
  assert.equal(pixelated(4), false);
  assert.equal(pixelated(8), true);
  assert.equal(zoomLabel(FIT, 4), "Fit (400%)");
  assert.equal(zoomLabel(FIT, 0.6054), "Fit (61%)");
  assert.equal(zoomLabel(2, 2), "200%");
  assert.equal(canvasRatio(512, 512, 2), 2);
  assert.equal(canvasRatio(512, 512, 0), 1);
  assert.equal(canvasRatio(512, 512, 5), 3);
  assert.equal(canvasRatio(8192, 8192, 2), 0.5); // 1024 px at 8x: 4096 canvas px a side
  assert.ok(8192 * canvasRatio(8192, 8192, 2) <= 4096);
});

test("export: the upscaled PNG is 4x, at least 512 px and at most 4096 px; names say the size", () => {
  assert.equal(exportFactor(32, 32), 16);
  assert.equal(exportFactor(64, 64), 8);
  assert.equal(exportFactor(128, 128), 4);
  assert.equal(exportFactor(256, 256), 4);
  assert.equal(exportFactor(1024, 1024), 4);
  assert.equal(exportFactor(2048, 2048), 2); // never below 2x
  assert.equal(pngName("abc-v3", 128, 128), "abc-v3-128x128.png");
});

test("zoom shortcuts: + (or =), -, 0 and 1, without Ctrl/⌘ (the browser's own zoom)", () => {
  const key = (k, mods = {}) => matchShortcut({ key: k, shiftKey: false, ctrlKey: false, metaKey: false, altKey: false, ...mods });
  assert.equal(key("+", { shiftKey: true }), "zoom-in");
  assert.equal(key("="), "zoom-in");
  assert.equal(key("-"), "zoom-out");
  assert.equal(key("0"), "zoom-fit");
  assert.equal(key("1"), "zoom-actual");
  assert.equal(key("+", { ctrlKey: true }), null);
  assert.equal(key("-", { metaKey: true }), null);
  assert.equal(key("0", { ctrlKey: true }), null);
});
