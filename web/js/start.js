// The start page: create a room (POST /api/rooms) and go to its edit link, or open a pasted link.

import { parseFragment, parseRoomPath, PROTOCOL_VERSION } from "./protocol.js";
import { $, RECENT_KEY, store } from "./ui.js";

async function showServerInfo() {
  const foot = $("server-info");
  try {
    const r = await fetch("/api/info", { headers: { Accept: "application/json" } });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const info = await r.json();
    const res = Number.isInteger(info.resolution) ? `${info.resolution}×${info.resolution} px` : null;
    const modes = Array.isArray(info.modes) && info.modes.length ? `modes: ${info.modes.join(", ")}` : null;
    const many = Array.isArray(info.models) && info.models.length > 1;
    const parts = many ? [`${info.models.length} models`, `default ${info.default_model}`] : [info.model && `model ${info.model}`, res, modes];
    foot.textContent = parts.filter(Boolean).join(" · ") || "Server ready";
    if (many) showModels(info.models, info.default_model);
    const v = info.protocol ?? info.protocol_version;
    if (v != null && v !== PROTOCOL_VERSION) {
      foot.textContent += " · this page is out of date: reload it";
      foot.classList.add("form-error");
    }
  } catch (e) {
    foot.textContent = `The server is not answering (${e.message}).`;
  }
}

/** The model picker: one card per model (sample images, resolution, licence, source, modes),
 * shown when the server offers more than one. */
function showModels(models, chosen) {
  const list = $("models");
  const cards = models
    .filter((m) => m && typeof m.name === "string")
    .map((m) => {
      const label = document.createElement("label");
      label.className = "model-option";
      const input = document.createElement("input");
      input.type = "radio";
      input.name = "model";
      input.value = m.name;
      input.checked = m.name === chosen;
      const img = document.createElement("img");
      img.alt = `Sample images of ${m.name}`;
      img.loading = "lazy";
      img.decoding = "async";
      img.src = `/api/models/${encodeURIComponent(m.name)}/samples.jpg`;
      img.addEventListener("error", () => img.replaceWith(note("No samples: the model could not be loaded.", "model-error")));
      const name = note(m.default ? `${m.name} (default)` : m.name, "model-name");
      const modes = Array.isArray(m.modes) ? m.modes.join(", ") : "optimize";
      const res = Number.isInteger(m.resolution) ? `${m.resolution} px` : "";
      const meta = note([res, modes].filter(Boolean).join(" · "), "model-meta");
      const card = note([m.licence && `licence: ${m.licence}`, m.source].filter(Boolean).join(" · "), "model-meta");
      label.append(input, img, name, meta, card);
      if (m.error) label.append(note(m.error, "model-error"));
      label.title = m.source || m.name;
      return label;
    });
  list.replaceChildren(...cards);
  $("model-picker").hidden = cards.length < 2;
}

function note(text, cls) {
  const el = document.createElement("span");
  el.className = cls;
  el.textContent = text;
  return el;
}

async function createRoom(e) {
  e.preventDefault();
  const err = $("create-error");
  err.hidden = true;
  const body = {};
  const seedText = $("seed").value.trim();
  if (seedText !== "") {
    const seed = Number(seedText);
    if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) return fail(err, "The seed is a whole number from 0 to 4294967295.");
    body.seed = seed;
  }
  const tText = $("truncation").value.trim();
  if (tText !== "") {
    const t = Number(tText);
    if (!Number.isFinite(t) || t < 0 || t > 2) return fail(err, "Truncation ψ is a number from 0 to 2.");
    body.truncation = t;
  }
  const picked = document.querySelector('input[name="model"]:checked');
  if (picked && !$("model-picker").hidden) body.model = picked.value;
  const button = $("create");
  button.disabled = true;
  button.textContent = "Creating…";
  try {
    const r = await fetch("/api/rooms", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
    });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(data.error?.message || data.message || data.detail || data.error || `HTTP ${r.status}`);
    if (!data.room || !data.edit_token) throw new Error("the server's answer has no room");
    const view = data.view_token ? `&view=${encodeURIComponent(data.view_token)}` : "";
    location.assign(`/r/${encodeURIComponent(data.room)}#edit=${encodeURIComponent(data.edit_token)}${view}`);
  } catch (ex) {
    fail(err, `Could not create a room: ${ex.message}`);
    button.disabled = false;
    button.textContent = "Create room";
  }
}

function openLink(e) {
  e.preventDefault();
  const err = $("open-error");
  err.hidden = true;
  const text = $("link").value.trim();
  let url;
  try {
    url = new URL(text, location.origin);
  } catch {
    return fail(err, "That is not a link.");
  }
  const room = parseRoomPath(url.pathname);
  const caps = parseFragment(url.hash);
  if (!room) return fail(err, "A room link looks like …/r/ROOM#edit=KEY or …/r/ROOM#view=KEY.");
  if (!caps.edit && !caps.view) return fail(err, "The link is missing its key (the part after #): copy the whole link.");
  location.assign(url.href);
}

function fail(el, text) {
  el.textContent = text;
  el.hidden = false;
}

function showRecent() {
  let list = [];
  try {
    list = JSON.parse(store.get(RECENT_KEY, "[]"));
  } catch {
    list = [];
  }
  if (!Array.isArray(list)) return;
  const items = list.filter((r) => r && typeof r.room === "string" && typeof r.link === "string" && r.link.startsWith("/r/"));
  if (!items.length) return;
  $("recent").replaceChildren(
    ...items.map((r) => {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = r.link;
      const id = document.createElement("span");
      id.className = "room-id";
      id.textContent = r.room;
      const role = document.createElement("span");
      role.className = "role";
      role.textContent = `${r.role === "edit" ? "edit" : "view"} · ${ago(r.t)}`;
      a.append(id, role);
      li.append(a);
      return li;
    }),
  );
  $("recent-card").hidden = false;
}

function ago(t) {
  const s = Math.max(0, (Date.now() - Number(t)) / 1000);
  if (!Number.isFinite(s)) return "";
  if (s < 90) return "just now";
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 129600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}

$("create-form").addEventListener("submit", createRoom);
$("open-form").addEventListener("submit", openLink);
showServerInfo();
showRecent();
