// Rate limiting for outgoing presence and point moves: at most one call per interval, and the
// last value always goes out (a trailing call carries the newest arguments). DOM-free.

/**
 * Returns a function f(...args) that calls fn at most once per `intervalMs`; calls in between
 * only remember their arguments, and the newest ones are sent when the interval ends.
 * f.flush() sends a remembered call now; f.cancel() forgets it.
 */
export function throttle(fn, intervalMs, timers = globalThis, now = () => Date.now()) {
  let last = -Infinity;
  let timer = null;
  let pendingArgs = null;

  const fire = () => {
    timer = null;
    if (!pendingArgs) return;
    const args = pendingArgs;
    pendingArgs = null;
    last = now();
    fn(...args);
  };

  const throttled = (...args) => {
    pendingArgs = args;
    const wait = last + intervalMs - now();
    if (wait <= 0 && timer === null) fire();
    else if (timer === null) timer = timers.setTimeout(fire, Math.max(0, wait));
  };
  throttled.flush = () => {
    if (timer !== null) timers.clearTimeout(timer);
    fire();
  };
  throttled.cancel = () => {
    if (timer !== null) timers.clearTimeout(timer);
    timer = null;
    pendingArgs = null;
  };
  throttled.setInterval = (ms) => {
    intervalMs = ms;
  };
  return throttled;
}
