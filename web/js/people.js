// Who you are and who the others are: this browser's identity secret (kept in localStorage and
// sent in the hello, so a room gives you your member id, name and colour back after a server
// restart: shared/protocol.md section 3), the one-time name prompt, and the card that an avatar
// opens (who it is, where their cursor is). DOM parts take their elements; the rest is plain.

import { cleanName, randomId } from "./protocol.js";

export const SECRET_KEY = "livedrag.secret";
export const NAME_ASKED_KEY = "livedrag.nameAsked";
const SECRET_RE = /^[A-Za-z0-9_-]{22,64}$/;

/**
 * This browser's identity secret: made once (32 random url-safe characters, 192 bits) and kept.
 * Where storage is unavailable (private mode) it lasts as long as the page.
 * @param {{get(k: string, d?: any): any, set(k: string, v: any): void}} store
 */
export function browserSecret(store, make = () => randomId(32)) {
  const kept = store.get(SECRET_KEY);
  if (typeof kept === "string" && SECRET_RE.test(kept)) return kept;
  const secret = make();
  store.set(SECRET_KEY, secret);
  return secret;
}

/** Whether to ask for a name: none is kept and this browser has not been asked yet. */
export function shouldAskName(store, nameKey) {
  return !cleanName(store.get(nameKey, "")) && store.get(NAME_ASKED_KEY) !== "1";
}

/**
 * The small, non-blocking name dialog: the page works behind it; Save keeps the name and sends
 * it (onName), "Not now" remembers that this browser was asked. Either way it is not shown again.
 */
export class NamePrompt {
  constructor({ form, input, skip }, { store, nameKey, onName }) {
    this.form = form;
    this.input = input;
    this.store = store;
    this.nameKey = nameKey;
    this.onName = onName;
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const name = cleanName(input.value);
      if (!name) {
        input.setAttribute("aria-invalid", "true");
        input.focus();
        return;
      }
      store.set(nameKey, name);
      this.close();
      onName(name);
    });
    skip.addEventListener("click", () => this.close());
    input.addEventListener("keydown", (e) => {
      if (e.key === "Escape") this.close();
      e.stopPropagation(); // typing here is not a shortcut
    });
  }

  get open() {
    return !this.form.hidden;
  }

  /** Show it when this browser has no name and was never asked. */
  maybeShow() {
    if (this.open || !shouldAskName(this.store, this.nameKey)) return;
    this.form.hidden = false;
  }

  close() {
    this.store.set(NAME_ASKED_KEY, "1");
    this.form.hidden = true;
  }

  /** Close it when a name was kept another way (the people list's Rename). */
  sync() {
    if (this.open && cleanName(this.store.get(this.nameKey, ""))) this.close();
  }
}

/** How a member's cursor reads in words: "at 120, 84 on the image", or why it is not there. */
export function cursorText(cursor, isYou) {
  if (isYou) return "This is you.";
  if (!cursor) return "Their cursor is not over the image.";
  const [x, y] = cursor.pos;
  const where = `at ${Math.round(x)}, ${Math.round(y)} on the image`;
  return cursor.idle ? `Their cursor rests ${where}.` : `Their cursor is ${where}.`;
}

/**
 * The card an avatar opens: the member's colour, name and role, their pairs, and where their
 * cursor is (the stage then points it out: onSpotlight(member id)).
 */
export class PersonCard {
  constructor(els, { model, onSpotlight }) {
    this.els = els; // {pop, swatch, name, role, cursor, pairs}
    this.model = model;
    this.onSpotlight = onSpotlight;
    this.id = null;
    this.anchor = null;
    document.addEventListener("click", (e) => {
      if (this.id && !els.pop.contains(e.target) && !this.anchor?.contains(e.target)) this.close();
    });
    document.addEventListener("keydown", (e) => {
      if (this.id && e.key === "Escape") this.close();
    });
  }

  toggle(id, anchor) {
    if (this.id === id) {
      this.close();
      return;
    }
    this.id = id;
    this.anchor = anchor;
    this.els.pop.hidden = false;
    this.update();
    this.place();
    if (id !== this.model.you) this.onSpotlight(id);
  }

  close() {
    this.id = null;
    this.anchor = null;
    this.els.pop.hidden = true;
  }

  /** Keep the card current (members, cursors and pairs change while it is open). */
  update() {
    if (!this.id) return;
    const m = this.model.members.get(this.id);
    if (!m) {
      this.close();
      return;
    }
    const you = m.id === this.model.you;
    this.els.swatch.style.background = m.colour;
    this.els.name.textContent = you ? `${m.name} (you)` : m.name;
    this.els.role.textContent = m.role === "editor" ? "Editor" : "Viewer";
    const cursor = this.model.otherCursors().find((c) => c.id === m.id) || null;
    this.els.cursor.textContent = cursorText(cursor, you);
    const owned = (this.model.state?.pairs || []).filter((p) => p.owner === m.id).length;
    this.els.pairs.textContent = owned ? `${owned} point pair${owned === 1 ? "" : "s"} placed by ${you ? "you" : "them"}.` : "";
  }

  place() {
    if (!this.anchor) return;
    const r = this.anchor.getBoundingClientRect();
    const pop = this.els.pop;
    const w = pop.offsetWidth;
    pop.style.top = `${Math.round(r.bottom + 8)}px`;
    pop.style.left = `${Math.round(Math.max(8, Math.min(window.innerWidth - w - 8, r.left + r.width / 2 - w / 2)))}px`;
  }
}
