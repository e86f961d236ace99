// Small pieces of the browser client: URLs, ids, delays, promises, events.

/** ``url`` (http(s)://host[/prefix], ws(s)://host[/prefix]/ws, or relative) as the /ws URL. */
export function socketUrl(url, base = globalThis.location?.href) {
  const u = new URL(url ?? ".", base);
  const schemes = { "http:": "ws:", "https:": "wss:", "ws:": "ws:", "wss:": "wss:" };
  if (!schemes[u.protocol]) throw new TypeError(`not a server URL: ${url}`);
  u.protocol = schemes[u.protocol];
  if (!u.pathname.endsWith("/ws")) u.pathname = u.pathname.replace(/\/?$/, "/ws");
  u.hash = "";
  return u;
}

/** A random (version 4) UUID; crypto.randomUUID exists only on https and localhost pages. */
export function uuid4() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Delay before reconnect ``attempt`` (0-based): exponential, capped, between half and all of it. */
export function backoff(attempt, min, max) {
  const ceiling = Math.min(max, min * 2 ** Math.min(attempt, 20));
  return ceiling / 2 + (Math.random() * ceiling) / 2;
}

/** A promise with its resolve and reject, already marked as handled. */
export function deferred() {
  let resolve, reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => {}); // a caller that never awaits it gets no "unhandled rejection"
  return { promise, resolve, reject };
}

/** ``on(name, fn)`` / ``off`` listeners; one that throws is reported, never breaks the emitter. */
export class Emitter {
  constructor() {
    this._listeners = new Map();
  }

  /** Call ``fn(detail)`` on event ``name``; returns a function that removes it. */
  on(name, fn) {
    if (!this._listeners.has(name)) this._listeners.set(name, new Set());
    this._listeners.get(name).add(fn);
    return () => this.off(name, fn);
  }

  off(name, fn) {
    this._listeners.get(name)?.delete(fn);
  }

  _emit(name, detail) {
    for (const fn of [...(this._listeners.get(name) || [])]) {
      try {
        fn(detail);
      } catch (err) {
        if (name !== "error") this._report(err);
        else console.error(err);
      }
    }
  }

  /** An error for the ``error`` listeners, or the console when there are none. */
  _report(err) {
    if (this._listeners.get("error")?.size) this._emit("error", err);
    else console.error("tornado-pubsub:", err);
  }
}
