// REST and WebSocket URLs, and the API key: asked once on the first 401,
// kept in this tab's sessionStorage, sent as X-API-Key (REST); the tail's
// client sends it as the api_key query parameter (browsers cannot set
// headers on a WebSocket).

const KEY_STORAGE = "tornado-pubsub.api_key";

// The page lives at <prefix>/dashboard; "." is <prefix>/ for any prefix.
const BASE = new URL(".", window.location.href);

export class AuthCancelled extends Error {
  constructor() {
    super("an API key is required");
    this.name = "AuthCancelled";
  }
}

export class Api {
  /** askKey(reason) -> Promise<string|null>: shows the key prompt (null: cancelled). */
  constructor(askKey) {
    this.askKey = askKey;
    this.pendingKey = null; // one prompt shared by every request that got a 401
    this.listeners = new Set();
  }

  get key() {
    try {
      return window.sessionStorage.getItem(KEY_STORAGE);
    } catch (_) {
      return null; // storage disabled: the key lives only as long as the prompt
    }
  }

  setKey(key) {
    try {
      if (key) window.sessionStorage.setItem(KEY_STORAGE, key);
      else window.sessionStorage.removeItem(KEY_STORAGE);
    } catch (_) {
      /* storage disabled */
    }
    this.listeners.forEach((fn) => fn(key));
  }

  onKeyChange(fn) {
    this.listeners.add(fn);
  }

  /** fetch JSON; on 401 ask for the key (once for all callers) and retry. */
  async request(method, path, body) {
    for (let attempt = 0; attempt < 5; attempt += 1) {
      const sentKey = this.key;
      const response = await this.send(method, path, body, sentKey);
      if (response.status !== 401) return response;
      await this.obtainKey(sentKey);
    }
    throw new AuthCancelled();
  }

  async send(method, path, body, key) {
    const headers = { Accept: "application/json" };
    if (key) headers["X-API-Key"] = key;
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(new URL(path, BASE), init);
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null; // an empty or non-JSON body (e.g. a proxy's error page)
    }
    return { status: response.status, ok: response.ok, data };
  }

  async obtainKey(rejectedKey) {
    if (this.key !== rejectedKey) return; // someone else already entered a new key
    if (!this.pendingKey) {
      const reason = rejectedKey ? "That key was rejected. Try again." : null;
      this.pendingKey = this.askKey(reason).finally(() => {
        this.pendingKey = null;
      });
    }
    const key = await this.pendingKey;
    if (!key) throw new AuthCancelled();
    this.setKey(key);
  }

  /** The /ws URL (the client adds the key as the api_key query parameter). */
  socketUrl() {
    const url = new URL("ws", BASE);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return url.toString();
  }
}

/** The server's error message from a JSON error body, or a fallback. */
export function errorText(response) {
  const err = response && response.data && response.data.error;
  if (err && typeof err.message === "string") return `${err.code}: ${err.message}`;
  return `HTTP ${response ? response.status : "error"}`;
}
