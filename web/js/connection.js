// One websocket to a room, kept alive: hello on open, ping every ping_interval_s, message ids,
// automatic reconnect with exponential backoff and jitter, close codes turned into a decision
// (retry now, retry slowly, give up). DOM-free: the WebSocket class and the timers are
// injectable so node tests can drive it. Protocol: shared/protocol.md sections 3, 10, 11.

import { closeInfo, decode, encode, LIMITS, msg, VIEWER_MAY_SEND, withId } from "./protocol.js";

/** Connection states (the UI maps them to its banner and to enabling edits). */
export const ConnState = Object.freeze({
  CONNECTING: "connecting", // socket opening or hello sent, no welcome yet
  JOINED: "joined", // welcome received: live
  WAITING: "waiting", // closed; a reconnect is scheduled
  FAILED: "failed", // closed for good (bad link, version mismatch, ...): see `failure`
  STOPPED: "stopped", // closed by the page
});

/** How soon to retry after a close, by close code (shared/protocol.md section 11). */
export const RetryPolicy = Object.freeze({
  NORMAL: "normal", // 0.25 s doubling to 1.2 s: back within about 2 s of the server's return
  NOW: "now", // too_slow: at once, then normal
  SLOWLY: "slowly", // room_full, server_full: from 5 s
  PAUSE: "pause", // rate_limited: from 10 s
  NEVER: "never",
});

/**
 * Reconnect delays (seconds). A dropped connection (a restart, a crash, the network) is retried
 * at most 1.2 s apart (+-25 %), so the page is back within about 2 s of the server's return; a
 * server that is down costs one refused TCP connection per tab and second or so. A full room or
 * server and a rate limit wait longer (from 5 s and 10 s, doubling to 30 s).
 */
export const BACKOFF = Object.freeze({ baseS: 0.25, maxS: 1.2, slowS: 5, pauseS: 10, slowMaxS: 30, jitter: 0.25 });

/** The retry policy for a websocket close code (network failures and unknown codes: NORMAL). */
export function retryPolicy(code) {
  const info = closeInfo(code);
  if (!info) return code === 1008 ? RetryPolicy.NEVER : RetryPolicy.NORMAL;
  if (!info.reconnect) return RetryPolicy.NEVER;
  switch (info.name) {
    case "too_slow":
      return RetryPolicy.NOW;
    case "room_full":
    case "server_full":
      return RetryPolicy.SLOWLY;
    case "rate_limited":
      return RetryPolicy.PAUSE;
    default:
      return RetryPolicy.NORMAL;
  }
}

/**
 * Seconds to wait before reconnect attempt number `attempt` (0-based) under `policy`: the base
 * delay doubles per attempt up to its cap (1.2 s; 30 s when slowed down), then gets +-25 %
 * jitter (`rand` in [0, 1)).
 */
export function backoffDelay(attempt, policy = RetryPolicy.NORMAL, rand = Math.random()) {
  if (policy === RetryPolicy.NOW && attempt === 0) return 0.05 + 0.2 * rand;
  const slowed = policy === RetryPolicy.SLOWLY || policy === RetryPolicy.PAUSE;
  const base = policy === RetryPolicy.SLOWLY ? BACKOFF.slowS : policy === RetryPolicy.PAUSE ? BACKOFF.pauseS : BACKOFF.baseS;
  const d = Math.min(slowed ? BACKOFF.slowMaxS : BACKOFF.maxS, base * 2 ** attempt);
  return d * (1 - BACKOFF.jitter + 2 * BACKOFF.jitter * rand);
}

/**
 * Options: url (ws URL of /ws/{room}), cap, clientId, secret (this browser's identity, kept in
 * localStorage: the room gives it its member id back after a restart), getName() -> display name,
 * onMessage(msg), onState(conn), WebSocket (class), timers {setTimeout, clearTimeout,
 * setInterval, clearInterval, now}, random().
 */
export class Connection {
  constructor(opts) {
    this.url = opts.url;
    this.cap = opts.cap;
    this.clientId = opts.clientId;
    this.secret = opts.secret || null;
    this.getName = opts.getName || (() => "");
    this.onMessage = opts.onMessage || (() => {});
    this.onState = opts.onState || (() => {});
    this.WebSocket = opts.WebSocket || globalThis.WebSocket;
    this.timers = opts.timers || globalThis;
    this.now = opts.now || (() => Date.now());
    this.random = opts.random || Math.random;
    this.state = ConnState.STOPPED;
    this.ws = null;
    this.role = null;
    this.nextId = 1;
    this.attempt = 0;
    this.policy = RetryPolicy.NORMAL;
    this.retryAt = null; // time (ms) of the scheduled reconnect
    this.lastClose = null; // {code, reason, info}
    this.failure = null; // {code, name, reason} when FAILED
    this.offlineSince = null; // ms since when we have not been joined (null: joined)
    this.lastReceived = 0;
    this.pingIntervalS = LIMITS.ping_interval_s;
    this.retryTimer = null;
    this.pingTimer = null;
    this.debug = !!opts.debug; // log every message but frames, acks and cursors to the console
  }

  /** Open the connection (and keep it open). */
  start() {
    if (this.state !== ConnState.STOPPED) return;
    this.offlineSince = this.now();
    this.open();
  }

  /** Close for good (page leaving). */
  stop() {
    this.clearTimers();
    this.detach(1000, "leaving");
    this.setState(ConnState.STOPPED);
  }

  /** Retry at once (the user pressed "retry now", or the network came back). */
  retryNow() {
    if (this.state !== ConnState.WAITING) return;
    this.timers.clearTimeout(this.retryTimer);
    this.open();
  }

  get joined() {
    return this.state === ConnState.JOINED;
  }

  /**
   * Send a client message when joined. Versioned messages, set_name and ping get the next
   * message id (returned); others return 0. Returns null when not sent (offline, or a viewer
   * sending an edit: the server would refuse it).
   */
  send(m, { numbered = m.t !== "ack" && m.t !== "cursor" } = {}) {
    if (!this.joined || !this.ws) return null;
    if (this.role === "viewer" && !VIEWER_MAY_SEND.has(m.t)) return null;
    let id = 0;
    if (numbered) {
      id = this.nextId;
      this.nextId = this.nextId >= 0xffffffff ? 1 : this.nextId + 1;
      m = withId(m, id);
    }
    if (this.debug && m.t !== "ack" && m.t !== "cursor") console.debug("livedrag >", JSON.stringify(m));
    try {
      this.ws.send(encode(m));
    } catch {
      return null;
    }
    return id;
  }

  // --- internals -------------------------------------------------------------------------------

  open() {
    this.clearTimers();
    this.retryAt = null;
    this.setState(ConnState.CONNECTING);
    let ws;
    try {
      ws = new this.WebSocket(this.url);
    } catch (e) {
      this.closed(1006, String(e?.message || e));
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.lastReceived = this.now();
      ws.send(encode(msg.hello(this.cap, this.getName(), this.clientId, this.secret)));
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this.lastReceived = this.now();
      if (typeof ev.data === "string") return; // the protocol is binary-only
      let m;
      try {
        m = decode(ev.data);
      } catch (e) {
        console.warn("livedrag: undecodable message from the server", e);
        return;
      }
      if (this.debug && m.t !== "frame" && !(m.t === "presence" && m.ev === "cursor")) {
        console.debug("livedrag <", JSON.stringify(m, (k, v) => (v instanceof Uint8Array ? `<${v.length} bytes>` : v)));
      }
      if (m.t === "welcome") this.onWelcome(m);
      this.onMessage(m);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.closed(ev.code, ev.reason || "");
    };
    ws.onerror = () => {}; // a close event always follows
  }

  onWelcome(m) {
    this.role = m.role;
    this.attempt = 0;
    this.policy = RetryPolicy.NORMAL;
    this.lastClose = null;
    this.offlineSince = null;
    const interval = Number(m.limits?.ping_interval_s) || LIMITS.ping_interval_s;
    this.pingIntervalS = interval;
    this.timers.clearInterval(this.pingTimer);
    this.pingTimer = this.timers.setInterval(() => this.keepAlive(), interval * 1000);
    this.setState(ConnState.JOINED);
  }

  /** Ping; if the server has been silent for 2.5 ping intervals, drop the socket and reconnect. */
  keepAlive() {
    if (!this.joined) return;
    if (this.now() - this.lastReceived > 2.5 * this.pingIntervalS * 1000) {
      this.detach(4000, "no answer");
      this.closed(1006, "server not answering");
      return;
    }
    this.send(msg.ping());
  }

  closed(code, reason) {
    this.timers.clearInterval(this.pingTimer);
    this.pingTimer = null;
    if (this.state === ConnState.STOPPED) return;
    if (this.offlineSince == null) this.offlineSince = this.now();
    const info = closeInfo(code);
    this.lastClose = { code, reason, info };
    const policy = retryPolicy(code);
    if (policy === RetryPolicy.NEVER) {
      this.failure = { code, name: info?.name ?? "closed", reason: reason || info?.reason || "" };
      this.setState(ConnState.FAILED);
      return;
    }
    if (policy !== this.policy && policy !== RetryPolicy.NORMAL) {
      this.policy = policy;
      this.attempt = 0;
    }
    const delayS = backoffDelay(this.attempt, policy === RetryPolicy.NORMAL ? this.policy : policy, this.random());
    this.attempt += 1;
    this.retryAt = this.now() + delayS * 1000;
    this.retryTimer = this.timers.setTimeout(() => this.open(), delayS * 1000);
    this.setState(ConnState.WAITING);
  }

  detach(code, reason) {
    const ws = this.ws;
    this.ws = null;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(code, reason);
    } catch {
      /* already closing */
    }
  }

  clearTimers() {
    this.timers.clearTimeout(this.retryTimer);
    this.timers.clearInterval(this.pingTimer);
    this.retryTimer = this.pingTimer = null;
  }

  setState(s) {
    this.state = s;
    this.onState(this);
  }
}
