// Display scale of the image: the "fit" rule, the zoom steps, the canvas pixel budget and the
// size of an upscaled export. DOM-free, so node tests cover it; the stage applies it.
//
// A zoom is "fit" or a number of CSS px per image pixel. Fit is the largest scale that shows the
// whole image in the available area but never more than MAX_FIT_UPSCALE times its native size: a
// 64-256 px model blown up to fill a laptop screen looks like a blur, and image editors open
// pictures at their own size. Zooming past that is the user's choice (the zoom control).

export const FIT = "fit";
export const MAX_FIT_UPSCALE = 4; // fit never shows more than 4 CSS px per image pixel
export const ZOOM_STEPS = Object.freeze([0.25, 0.5, 1, 2, 4, 8, 16]); // the +/- ladder
export const SMOOTH_UP_TO = 4; // smooth resampling up to this scale; beyond it, pixels (nearest)
const MIN_SIDE_PX = 128; // a step below 1x is offered only while the image stays this large
const MAX_SIDE_PX = 8192; // and no step that makes it larger than this (CSS px)
const MAX_CANVAS_PIXELS = 4096 * 4096; // backing store of one canvas (device px)

/** The fit scale: the whole W x H image inside availW x availH CSS px, at most maxUpscale. */
export function fitScale(W, H, availW, availH, maxUpscale = MAX_FIT_UPSCALE) {
  if (!(W > 0 && H > 0)) return 1;
  const s = Math.min(availW / W, availH / H, maxUpscale);
  return s > 0 ? s : Math.min(1, maxUpscale);
}

/** A zoom read back from storage: "fit", or a positive number (made valid for an image later). */
export function parseZoom(text) {
  const z = Number(text);
  return text !== FIT && Number.isFinite(z) && z > 0 ? z : FIT;
}

/** The zoom steps offered for a W x H image: 1x, and others while its size stays sensible. */
export function zoomSteps(W, H) {
  const side = Math.max(W, H, 1);
  const steps = ZOOM_STEPS.filter((s) => s === 1 || (side * s <= MAX_SIDE_PX && (s > 1 || side * s >= MIN_SIDE_PX)));
  return steps.length ? steps : [1];
}

/** A stored or chosen zoom made valid for this image: "fit", or the nearest offered step. */
export function normaliseZoom(zoom, W, H) {
  if (zoom === FIT || zoom == null) return FIT;
  const z = Number(zoom);
  if (!Number.isFinite(z) || z <= 0) return FIT;
  const steps = zoomSteps(W, H);
  return steps.reduce((best, s) => (Math.abs(Math.log(s / z)) < Math.abs(Math.log(best / z)) ? s : best), steps[0]);
}

/** CSS px per image pixel for a zoom ("fit" or a step) given the fit scale. */
export function scaleOf(zoom, fit) {
  return zoom === FIT ? fit : zoom;
}

/**
 * The next zoom from the shown scale: dir +1 the next larger step, -1 the next smaller one (from
 * fit too: the step above or below the fit scale). Stays put at the ends of the ladder.
 */
export function stepZoom(scale, dir, W, H) {
  const steps = zoomSteps(W, H);
  const eps = 1e-6;
  if (dir > 0) return steps.find((s) => s > scale + eps) ?? steps.at(-1);
  return [...steps].reverse().find((s) => s < scale - eps) ?? steps[0];
}

/** Whether a scale is drawn with visible pixels (nearest neighbour) rather than smoothed. */
export function pixelated(scale) {
  return scale > SMOOTH_UP_TO + 1e-6;
}

/** Device px per CSS px for a canvas of cssW x cssH: the screen's ratio, within the budget. */
export function canvasRatio(cssW, cssH, dpr) {
  const want = Math.max(1, Math.min(3, dpr || 1));
  const budget = Math.sqrt(MAX_CANVAS_PIXELS / Math.max(1, cssW * cssH));
  return Math.min(want, budget);
}

/** The readout of a zoom: "Fit" plus the percentage it comes to, or the step's percentage. */
export function zoomLabel(zoom, scale) {
  const pct = `${Math.round(scale * 100)}%`;
  return zoom === FIT ? `Fit (${pct})` : pct;
}

/**
 * The factor of the upscaled PNG export: 4x, more for small images so the result is at least
 * 512 px, less for big ones so it stays at most 4096 px; always at least 2x.
 */
export function exportFactor(W, H) {
  const side = Math.max(W, H, 1);
  const k = Math.max(4, Math.ceil(512 / side));
  return Math.max(2, Math.min(k, Math.floor(4096 / side)));
}

/** The file name of an exported PNG: it says the size, e.g. "room-v3-128x128.png". */
export function pngName(tag, w, h) {
  return `${tag}-${w}x${h}.png`;
}
