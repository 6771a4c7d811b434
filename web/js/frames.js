// Frame pipeline: JPEG bytes -> ImageBitmap (decoded off the main thread by createImageBitmap)
// -> drawn -> acknowledged. At most one decode runs; of the frames that arrive meanwhile only the
// newest is kept (latest wins), so a slow device skips frames instead of queueing them. Every
// bitmap is closed once it is replaced or skipped. DOM-free apart from the injected decoder.

/** Measures frames per second over a sliding window of draw times. */
export class RateMeter {
  constructor(windowMs = 2000, now = () => performance.now()) {
    this.windowMs = windowMs;
    this.now = now;
    this.times = [];
  }

  tick() {
    const t = this.now();
    this.times.push(t);
    this.trim(t);
  }

  trim(t) {
    while (this.times.length && t - this.times[0] > this.windowMs) this.times.shift();
  }

  /** Events per second over the window (0 when fewer than two events). */
  get rate() {
    this.trim(this.now());
    const n = this.times.length;
    if (n < 2) return 0;
    const span = this.times[n - 1] - this.times[0];
    return span > 0 ? ((n - 1) * 1000) / span : 0;
  }

  reset() {
    this.times = [];
  }
}

/**
 * Options: decodeImage(Uint8Array) -> Promise<ImageBitmap-like with close()>,
 * onReady(bitmap, frame): draw it (the pipeline closes the previous one), ack(seq).
 */
export class FramePipeline {
  constructor({ decodeImage, onReady, ack, onError = () => {} }) {
    this.decodeImage = decodeImage;
    this.onReady = onReady;
    this.ack = ack;
    this.onError = onError;
    this.busy = false;
    this.waiting = null; // newest frame not yet being decoded
    this.lastSeq = 0; // newest seq handed to onReady
    this.current = null; // bitmap on screen
    this.generation = 0; // bumped by reset(): late decodes of an old connection are dropped
    this.skipped = 0;
    this.paused = false; // hidden tab: hold the newest frame, decode and ack nothing
  }

  /** A `frame` message arrived. */
  push(frame) {
    if (frame.seq <= this.lastSeq) return;
    if (this.busy || this.paused) {
      if (this.waiting) this.skipped += 1;
      this.waiting = frame;
      return;
    }
    this.run(frame);
  }

  async run(frame) {
    this.busy = true;
    const gen = this.generation;
    let bitmap = null;
    try {
      bitmap = await this.decodeImage(frame.jpeg);
    } catch (e) {
      this.onError(e, frame);
    }
    if (gen !== this.generation || frame.seq <= this.lastSeq) {
      bitmap?.close?.();
    } else if (bitmap) {
      const previous = this.current;
      this.current = bitmap;
      this.lastSeq = frame.seq;
      this.onReady(bitmap, frame);
      if (previous && previous !== bitmap) previous.close?.();
      this.ack(frame.seq);
    }
    this.busy = false;
    if (gen !== this.generation || this.paused) return;
    const next = this.waiting;
    this.waiting = null;
    if (next && next.seq > this.lastSeq) this.run(next);
  }

  /**
   * Pause while the page is hidden: frames are not decoded or acknowledged, so the server keeps
   * only the newest one for this tab (its credits are spent) instead of streaming to nobody.
   */
  setPaused(paused) {
    this.paused = paused;
    if (paused || this.busy) return;
    const next = this.waiting;
    this.waiting = null;
    if (next && next.seq > this.lastSeq) this.run(next);
  }

  /** A new snapshot: seqs restart (after a server restart); keep the picture until a new one. */
  reset() {
    this.generation += 1;
    this.busy = false;
    this.waiting = null;
    this.lastSeq = 0;
  }
}

/** The browser's decoder: createImageBitmap on a Blob decodes off the main thread. */
export function browserDecodeImage(bytes) {
  return createImageBitmap(new Blob([bytes], { type: "image/jpeg" }));
}
