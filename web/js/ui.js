// Small DOM utilities shared by the pages: element lookup, toasts, clipboard, local storage.

export const $ = (id) => document.getElementById(id);

/** Show a short message at the bottom of the page. kind: "info" | "error" | "ok". */
export function toast(text, kind = "info", ms = 3200) {
  const box = $("toasts");
  if (!box) return;
  // the same message twice in a row: refresh it instead of stacking
  const last = box.lastElementChild;
  if (last && last.textContent === text) {
    clearTimeout(last._timer);
    last._timer = setTimeout(() => dismiss(last), ms);
    return;
  }
  const el = document.createElement("div");
  el.className = `toast is-${kind}`;
  el.setAttribute("role", kind === "error" ? "alert" : "status");
  el.textContent = text;
  box.append(el);
  while (box.children.length > 4) box.firstElementChild.remove();
  el._timer = setTimeout(() => dismiss(el), ms);
}

function dismiss(el) {
  el.classList.add("is-leaving");
  setTimeout(() => el.remove(), 260);
}

/** Copy text to the clipboard (falls back to selecting an input). Returns whether it worked. */
export async function copyText(text, input = null) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    if (input) {
      input.focus();
      input.select();
      try {
        return document.execCommand("copy");
      } catch {
        return false;
      }
    }
    return false;
  }
}

/** localStorage that never throws (private mode, disabled storage). */
export const store = {
  get(key, fallback = null) {
    try {
      const v = localStorage.getItem(key);
      return v == null ? fallback : v;
    } catch {
      return fallback;
    }
  },
  set(key, value) {
    try {
      if (value == null) localStorage.removeItem(key);
      else localStorage.setItem(key, value);
    } catch {
      /* storage unavailable: keep going without it */
    }
  },
};

export const NAME_KEY = "livedrag.name";
export const RECENT_KEY = "livedrag.recent";

/** Text of an element, set only when it changed (avoids layout work every frame). */
export function setText(el, text) {
  if (el && el.textContent !== text) el.textContent = text;
}

/** Whether the keyboard focus is in a text field (shortcuts stay off there). */
export function typingInField(e) {
  const t = e.target;
  if (!t || !(t instanceof HTMLElement)) return false;
  if (t.isContentEditable) return true;
  if (t.tagName === "TEXTAREA" || t.tagName === "SELECT") return true;
  if (t.tagName === "INPUT") return !["button", "checkbox", "radio", "range", "submit"].includes(t.type);
  return false;
}

export function initials(name) {
  const parts = String(name || "?").trim().split(/\s+/).filter(Boolean);
  const first = (w) => [...w][0] || "";
  return parts.length > 1 ? first(parts[0]) + first(parts[1]) : first(parts[0] || "?");
}
