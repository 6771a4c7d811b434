// Keyboard shortcuts: one table used both to handle keys and to draw the help overlay ('?').
// DOM-free: matchShortcut takes a KeyboardEvent-like object.

/** [action, keys shown in the help, description, matcher(e)] */
export const SHORTCUTS = Object.freeze([
  ["run", ["Space"], "Start or stop the drag", (e) => e.key === " " && !mod(e)],
  ["undo", ["Z"], "Undo your own last action (also Ctrl+Z / ⌘Z)", (e) => lower(e) === "z" && !e.shiftKey && !e.altKey],
  ["redo", ["Shift", "Z"], "Redo what you undid (also Ctrl+Shift+Z, Ctrl+Y)", (e) => (lower(e) === "z" && e.shiftKey && !e.altKey) || (lower(e) === "y" && (e.ctrlKey || e.metaKey))],
  ["delete", ["Delete"], "Delete the selected pair (or right-click it)", (e) => (e.key === "Delete" || e.key === "Backspace") && !mod(e)],
  ["cancel", ["Esc"], "Cancel placing a point, deselect", (e) => e.key === "Escape"],
  ["tool-points", ["P"], "Points tool", plain("p")],
  ["tool-flexible", ["F"], "Paint the area that may move", plain("f")],
  ["tool-fixed", ["X"], "Paint a fixed area", plain("x")],
  ["tool-erase", ["E"], "Erase the mask", plain("e")],
  ["brush-smaller", ["["], "Smaller brush", (e) => e.key === "[" && !mod(e)],
  ["brush-larger", ["]"], "Larger brush", (e) => e.key === "]" && !mod(e)],
  ["mask-toggle", ["M"], "Show or hide the mask", plain("m")],
  ["mask-clear", ["Shift", "M"], "Clear the mask", (e) => lower(e) === "m" && e.shiftKey && !mod(e)],
  ["points-clear", ["Shift", "C"], "Clear all points", (e) => lower(e) === "c" && e.shiftKey && !mod(e)],
  ["random-image", ["R"], "New image from a random seed", plain("r")],
  ["mode", ["O"], "Switch mode: optimize / predict", plain("o")],
  ["zoom-in", ["+"], "Zoom in (also Ctrl/⌘+wheel or pinch on the image)", (e) => (e.key === "+" || e.key === "=") && !mod(e)],
  ["zoom-out", ["-"], "Zoom out", (e) => (e.key === "-" || e.key === "_") && !mod(e)],
  ["zoom-fit", ["0"], "Fit: the whole image, at most 4× its size", (e) => e.key === "0" && !mod(e)],
  ["zoom-actual", ["1"], "Actual size (100%)", (e) => e.key === "1" && !mod(e)],
  ["panel", ["Tab"], "Show or hide the side panel (narrow screens)", (e) => e.key === "Tab" && !e.shiftKey && !mod(e) && e.narrow],
  ["help", ["?"], "This help", (e) => e.key === "?"],
]);

function lower(e) {
  return String(e.key || "").toLowerCase();
}

function mod(e) {
  return e.ctrlKey || e.metaKey || e.altKey;
}

function plain(k) {
  return (e) => lower(e) === k && !e.shiftKey && !mod(e);
}

/** The action for a key event, or null. Ctrl/⌘ with Z are undo/redo; other Ctrl combos are left alone. */
export function matchShortcut(e) {
  if ((e.ctrlKey || e.metaKey) && !["z", "y"].includes(lower(e))) return null;
  for (const [action, , , match] of SHORTCUTS) if (match(e)) return action;
  return null;
}
