// tornado-pubsub browser client: an ES module with no dependency and no build
// step, served by the server at /client.js.
//
//   import { PubSubClient } from "https://pubsub.example.com/client.js";
//   const client = new PubSubClient("https://pubsub.example.com", { getToken });
//   client.on("state", ({ state }) => console.log(state));
//   const sub = client.subscribe("orders", (ev) => show(ev.seq, ev.payload), {
//     lastN: 10,
//     onGap: (gap) => reload(gap), // only when messages were really lost
//   });
//   client.connect();
//   const { seq, duplicate } = await client.publish("orders", { n: 1 });
//
// Guarantees (PROTOCOL.md sections 1.4, 5.3, 6):
// - Per subscription, onEvent sees events in seq order and never the same seq
//   of one epoch twice.  After a lost connection the client reconnects (backoff
//   with jitter, bounded) and resubscribes with since_seq and epoch of the last
//   event delivered; the server replays what was missed.  When it cannot
//   (history evicted, topic recreated, server dropped events for a slow
//   reader), onGap is called once, just before the first event after the gap.
// - publish() gives each message a UUID and, when the connection drops before
//   the ack, sends the same message again (same id) after the reconnect; the
//   server acks a repeat with duplicate: true and delivers it once.
// - Failures are PubSubError objects carrying the protocol code (or a client
//   code: CONNECTION_LOST, TIMEOUT, CLOSED, UNREACHABLE, TOO_BIG, QUEUE_FULL).
//
// Threats: the server is trusted for what it sends on this topic, but every
// frame is parsed defensively (non-JSON and unknown frames are ignored), the
// queue of unsent requests is bounded (maxQueued), and a connection that goes
// silent is detected by pings (pingInterval, pongTimeout) instead of hanging.

import { CLOSED, CONNECTION_LOST, PubSubError, QUEUE_FULL, TIMEOUT, TOO_BIG, UNREACHABLE, errorOf } from "./client/errors.js";
import { Subscription } from "./client/subscription.js";
import { Emitter, backoff, deferred, socketUrl, uuid4 } from "./client/support.js";

export { CLOSED, CONNECTION_LOST, PubSubError, QUEUE_FULL, TIMEOUT, TOO_BIG, UNREACHABLE } from "./client/errors.js";
export { Subscription } from "./client/subscription.js";
export { backoff, socketUrl, uuid4 } from "./client/support.js";

const DEFAULTS = {
  token: null, // a JWT, sent as the token query parameter
  getToken: null, // async () => JWT: called for every connection and on token_expiring
  apiKey: null, // the admin key, sent as the api_key query parameter
  clientId: null, // labels this client's subscriptions in the server's logs and presence
  timeout: 10000, // ms a publish, presence or ping may take, retries included
  minReconnectDelay: 500, // ms; doubles per failed attempt up to maxReconnectDelay
  maxReconnectDelay: 10000,
  maxReconnectAttempts: Infinity, // consecutive failed attempts before giving up
  pingInterval: 25000, // ms of silence from the server before the client pings
  pongTimeout: 10000, // ms the server then has to answer before the connection is dropped
  maxQueued: 1000, // publish/presence/ping requests waiting for a connection
};

// Close codes after which reconnecting would be refused again (PROTOCOL.md 1.3).
const CLOSE_TOKEN_EXPIRED = 4401;
const CLOSE_KICKED = 4403;
const CLOSE_TOO_BIG = 1009;
// A connection that lived shorter than this did not reset the backoff, so a
// server that accepts and then closes at once is not hammered.
const STABLE_MS = 5000;
// The latest a token refresh waits after token_expiring: half the server's 30 s warning.
const MAX_REFRESH_DELAY = 15000;
// Errors that mean "not now": the request is sent again on the next connection.
const RETRY_LATER = new Set(["SHUTTING_DOWN"]);

/**
 * One WebSocket to a tornado-pubsub server, reconnected and resumed until
 * ``close()``.  States: ``disconnected`` (before connect and after close or
 * giving up), ``connecting`` (first attempt), ``connected``, ``reconnecting``
 * (backoff and later attempts).  Events (``on(name, fn)``): ``state``,
 * ``connecting``, ``connected``, ``disconnected``, ``reconnecting``, ``error``,
 * ``info`` (server notices), ``auth`` (a token refresh was accepted) and
 * ``token_expiring`` (when there is no ``getToken`` to refresh with).
 */
export class PubSubClient extends Emitter {
  constructor(url, options = {}) {
    super();
    this.url = socketUrl(url);
    this.options = { ...DEFAULTS, ...options };
    this.clientId = this.options.clientId || `js-${uuid4().slice(0, 8)}`;
    this.state = "disconnected";
    this.subscriptions = new Map(); // topic -> Subscription
    this.reconnects = 0;
    this._requests = new Set(); // publish/presence/ping entries until settled
    this._replies = new Map(); // request_id -> handler, for the current socket only
    this._rids = 0;
    this._socket = null;
    this._started = false;
    this._closed = false;
    this._everConnected = false;
    this._attempt = 0; // consecutive failed attempts
    this._openedAt = 0;
    this._timer = null; // reconnect backoff or connect timeout
    this._watch = null; // liveness check
    this._refresh = null; // the pending token refresh (see _scheduleRefresh)
    this._lastFrameAt = 0;
    this._pingSentAt = 0;
    this._waiters = [];
    this._online = () => this._retryNow();
  }

  /** True while requests can be written to an open socket. */
  get connected() {
    return this.state === "connected" && this._socket !== null;
  }

  _setState(state) {
    if (this.state === state) return;
    const previous = this.state;
    this.state = state;
    this._emit("state", { state, previous });
  }

  // -- connection -------------------------------------------------------------

  /** Start connecting; resolves once connected, rejects (PubSubError) if the client closes or gives up first. */
  connect() {
    if (this._closed) return Promise.reject(new PubSubError(CLOSED, "client closed"));
    const waiter = deferred();
    if (this.connected) waiter.resolve(this);
    else this._waiters.push(waiter);
    if (!this._started) {
      this._started = true;
      globalThis.addEventListener?.("online", this._online);
      this._open();
    }
    return waiter.promise;
  }

  async _credential() {
    const { token, getToken } = this.options;
    if (getToken && (token == null || this._everConnected || this._attempt > 0)) return getToken();
    return token;
  }

  async _open() {
    this._timer = null;
    if (this._closed) return;
    this._setState(this._everConnected ? "reconnecting" : "connecting");
    this._emit("connecting", { attempt: this._attempt });
    let token;
    try {
      token = await this._credential();
    } catch (err) {
      this._report(err);
      if (!this._closed) this._retry(null);
      return;
    }
    if (this._closed) return;
    const url = new URL(this.url);
    if (token) url.searchParams.set("token", token);
    if (this.options.apiKey) url.searchParams.set("api_key", this.options.apiKey);
    let socket;
    try {
      socket = new WebSocket(url);
    } catch (err) {
      this._giveUp(new PubSubError(UNREACHABLE, `cannot open a WebSocket to ${this.url}: ${err.message}`));
      return;
    }
    this._socket = socket;
    let opened = false;
    // A handshake that hangs (a proxy, a stalled server) counts as a failed attempt.
    this._timer = setTimeout(() => this._drop(socket, 4000, "connect timeout"), this.options.timeout);
    socket.onopen = () => {
      opened = true;
      this._opened(socket);
    };
    socket.onmessage = (msg) => {
      if (this._socket === socket) this._frame(msg.data);
    };
    socket.onclose = (ev) => {
      if (this._socket === socket) this._lost(ev.code, ev.reason, opened);
    };
  }

  _opened(socket) {
    clearTimeout(this._timer);
    this._timer = null;
    const reconnected = this._everConnected;
    if (reconnected) this.reconnects += 1;
    this._everConnected = true;
    this._openedAt = this._lastFrameAt = Date.now();
    this._pingSentAt = 0;
    this._scheduleWatch(this.options.pingInterval);
    // Subscriptions first, so a publish retried below is seen by our own
    // subscriptions; both before any listener hears "connected" and adds more.
    for (const sub of this.subscriptions.values()) this._subscribeNow(sub);
    this._flush();
    this._setState("connected");
    this._emit("connected", { reconnected });
    for (const waiter of this._waiters.splice(0)) waiter.resolve(this);
  }

  /** Give up on ``socket`` now (it may never report its close). */
  _drop(socket, code, reason) {
    if (this._socket !== socket) return;
    try {
      socket.close(code, reason);
    } catch (_) {
      /* already closing */
    }
    this._lost(1006, reason, this.state === "connected");
  }

  _lost(code, reason, opened) {
    const socket = this._socket;
    this._socket = null;
    if (socket) socket.onopen = socket.onmessage = socket.onclose = null;
    clearTimeout(this._timer);
    clearTimeout(this._watch);
    clearTimeout(this._refresh); // the next connection presents a fresh token anyway
    this._timer = this._watch = this._refresh = null;
    this._dropReplies();
    const tooBig = code === CLOSE_TOO_BIG;
    for (const entry of this._requests) {
      if (!entry.sent) continue;
      entry.sent = false; // sent again, with the same message id, on the next connection
      if (tooBig) this._settle(entry, null, new PubSubError(TOO_BIG, "the server closed the connection: a frame exceeded its max_message_size"));
      else if (!entry.retry) this._settle(entry, null, new PubSubError(CONNECTION_LOST, "connection lost before the reply arrived"));
    }
    for (const sub of this.subscriptions.values()) {
      sub.live = false;
      clearTimeout(sub.retryTimer);
    }
    const error = opened
      ? new PubSubError(CONNECTION_LOST, `connection closed (${code}${reason ? ` ${reason}` : ""})`, { closeCode: code })
      : new PubSubError(UNREACHABLE, `could not connect to ${this.url.origin}${this.url.pathname} (server down, draining, or credential refused)`, { closeCode: code });
    if (this._closed) return;
    if (opened && Date.now() - this._openedAt >= STABLE_MS) this._attempt = 0;
    // Before the event, so its listeners see no usable socket.
    this._setState(this._everConnected ? "reconnecting" : "connecting");
    this._emit("disconnected", { code, reason, error });
    if (this._closed) return; // a listener closed the client
    if (code === CLOSE_KICKED) return this._giveUp(new PubSubError("FORBIDDEN", `disconnected by an administrator${reason ? `: ${reason}` : ""}`, { closeCode: code }));
    if (code === CLOSE_TOKEN_EXPIRED && !this.options.getToken) return this._giveUp(new PubSubError("UNAUTHORIZED", "token expired and no getToken to refresh it", { closeCode: code }));
    this._retry(error);
  }

  _retry(error) {
    if (this._closed) return;
    this._attempt += 1;
    if (this._attempt > this.options.maxReconnectAttempts) {
      return this._giveUp(error || new PubSubError(UNREACHABLE, "gave up reconnecting"));
    }
    const delay = backoff(this._attempt - 1, this.options.minReconnectDelay, this.options.maxReconnectDelay);
    this._setState(this._everConnected ? "reconnecting" : "connecting");
    this._emit("reconnecting", { attempt: this._attempt, delay, error });
    this._timer = setTimeout(() => this._open(), delay);
  }

  /** The browser is back online: skip the rest of the backoff. */
  _retryNow() {
    if (this._closed || this._socket || !this._timer) return;
    clearTimeout(this._timer);
    this._open();
  }

  _giveUp(error) {
    this._report(error);
    this._shutdown(error, "closed");
  }

  /** Close the connection for good; pending requests fail with CLOSED, subscriptions end. */
  close() {
    if (this._closed) return;
    const socket = this._socket;
    this._shutdown(new PubSubError(CLOSED, "client closed"), "closed");
    if (socket) socket.close(1000, "client closed");
  }

  _shutdown(error, reason) {
    this._closed = true;
    globalThis.removeEventListener?.("online", this._online);
    const socket = this._socket;
    if (socket) socket.onopen = socket.onmessage = socket.onclose = null;
    this._socket = null;
    clearTimeout(this._timer);
    clearTimeout(this._watch);
    clearTimeout(this._refresh);
    this._dropReplies();
    for (const entry of [...this._requests]) this._settle(entry, null, error);
    for (const sub of this.subscriptions.values()) sub.end(reason, error.code === CLOSED ? null : error);
    this.subscriptions.clear();
    for (const waiter of this._waiters.splice(0)) waiter.reject(error);
    this._setState("disconnected");
  }

  /** The socket is gone: every reply handler hears ``null`` (requests are settled by the caller). */
  _dropReplies() {
    const handlers = [...this._replies.values()];
    this._replies.clear();
    for (const handle of handlers) handle(null);
  }

  // -- liveness -----------------------------------------------------------------

  _scheduleWatch(ms) {
    clearTimeout(this._watch);
    this._watch = setTimeout(() => this._checkAlive(), ms);
  }

  _checkAlive() {
    const socket = this._socket;
    if (!socket || !this.connected) return;
    const now = Date.now();
    const { pingInterval, pongTimeout } = this.options;
    if (this._pingSentAt && this._lastFrameAt < this._pingSentAt && now - this._pingSentAt >= pongTimeout) {
      this._drop(socket, 4000, "no reply to ping");
    } else if (now - this._lastFrameAt >= pingInterval) {
      this._pingSentAt = now;
      this._sendNow({ type: "ping" }, () => {});
      this._scheduleWatch(pongTimeout);
    } else {
      this._scheduleWatch(pingInterval - (now - this._lastFrameAt));
    }
  }

  // -- frames from the server ---------------------------------------------------------

  _frame(raw) {
    this._lastFrameAt = Date.now();
    let frame;
    try {
      frame = JSON.parse(raw);
    } catch (_) {
      return; // the server sends JSON only: ignore anything else
    }
    if (!frame || typeof frame !== "object") return;
    if (frame.type === "event") {
      this.subscriptions.get(frame.topic)?.event(frame);
    } else if (frame.type === "info") {
      this._info(frame);
    } else if (typeof frame.request_id === "string" && this._replies.has(frame.request_id)) {
      const handle = this._replies.get(frame.request_id);
      this._replies.delete(frame.request_id);
      handle(frame);
    } else if (frame.type === "error") {
      this._report(errorOf(frame));
    }
  }

  _info(frame) {
    const sub = typeof frame.topic === "string" ? this.subscriptions.get(frame.topic) : undefined;
    switch (frame.msg) {
      case "ping":
        return;
      case "history_gap":
        if (sub?.live) sub.historyGap(frame);
        break;
      case "topic_deleted":
        if (sub) this._end(sub, "topic_deleted", new PubSubError("TOPIC_NOT_FOUND", `topic ${sub.topic} was deleted`));
        break;
      case "subscription_revoked":
        if (sub) this._end(sub, "revoked", new PubSubError("FORBIDDEN", `subscription to ${sub.topic} revoked`));
        break;
      case "join":
      case "leave":
        if (sub?.live) sub.presence(frame);
        break;
      case "token_expiring":
        this._scheduleRefresh(frame);
        break;
      default:
        break;
    }
    this._emit("info", frame);
  }

  /**
   * Refresh after half the time left before ``expires_at``, at most 15 s (at
   * once when it cannot be read or has passed).  The server warns at once when
   * less than 30 s are left, so refreshing a short-lived token at once would
   * be warned again at once, in a loop; the cap keeps a client whose clock
   * runs behind from waiting past the real exp.  A later warning replaces it.
   */
  _scheduleRefresh(info) {
    if (!this.options.getToken) {
      this._emit("token_expiring", { expiresAt: info.expires_at ?? null });
      return;
    }
    clearTimeout(this._refresh);
    const exp = Date.parse(info.expires_at);
    const delay = Number.isFinite(exp) ? Math.min(MAX_REFRESH_DELAY, Math.max(0, (exp - Date.now()) / 2)) : 0;
    this._refresh = setTimeout(() => {
      this._refresh = null;
      this._refreshToken();
    }, delay);
  }

  async _refreshToken() {
    const socket = this._socket;
    let token;
    try {
      token = await this.options.getToken();
    } catch (err) {
      this._report(err);
      return;
    }
    if (this._socket !== socket || !this.connected) return; // the next connection presents it
    this._sendNow({ type: "auth", token }, (reply) => {
      if (!reply) return;
      if (reply.type === "error") this._report(errorOf(reply));
      else this._emit("auth", { user: reply.user ?? null, expiresAt: reply.expires_at ?? null });
    });
  }

  // -- requests -------------------------------------------------------------------

  /** Send ``frame`` on the current socket; ``onReply`` gets its reply (ack, error, pong,
   * presence), or ``null`` if the socket goes first. */
  _sendNow(frame, onReply) {
    const rid = `r${++this._rids}`;
    const text = JSON.stringify({ ...frame, request_id: rid }); // throws on a payload JSON cannot hold
    this._replies.set(rid, onReply);
    this._socket.send(text);
  }

  /**
   * A request answered on whichever connection carries it: queued while
   * disconnected, sent again after a reconnect when ``retry``, settled by its
   * reply, the client's close, or ``timeout`` ms (retries included).
   */
  _request(frame, accept, { retry = true, timeout = this.options.timeout } = {}) {
    if (this._closed) return Promise.reject(new PubSubError(CLOSED, "client closed"));
    if (this._requests.size >= this.options.maxQueued) {
      return Promise.reject(new PubSubError(QUEUE_FULL, `${this._requests.size} requests are already waiting`));
    }
    const done = deferred();
    const entry = { frame, accept, retry, sent: false, done, timer: null };
    entry.timer = setTimeout(() => {
      const where = this.connected ? "no reply" : `not connected (${this.state})`;
      this._settle(entry, null, new PubSubError(TIMEOUT, `${frame.type} to ${frame.topic ?? "server"}: ${where} within ${timeout} ms`));
    }, timeout);
    this._requests.add(entry);
    if (this.connected) this._sendEntry(entry);
    return done.promise;
  }

  _sendEntry(entry) {
    entry.sent = true;
    try {
      this._sendNow(entry.frame, (reply) => this._replied(entry, reply));
    } catch (err) {
      this._settle(entry, null, err); // e.g. a BigInt or circular payload
    }
  }

  _replied(entry, reply) {
    if (!reply) return; // lost: _lost() decides between resending and failing it
    if (reply.type === "error" && RETRY_LATER.has(reply.error?.code) && entry.retry) {
      entry.sent = false; // the server is draining: the next connection takes it
      return;
    }
    if (reply.type === "error") this._settle(entry, null, errorOf(reply));
    else this._settle(entry, entry.accept(reply), null);
  }

  _flush() {
    for (const entry of this._requests) if (!entry.sent && this._socket) this._sendEntry(entry);
  }

  _settle(entry, value, error) {
    if (!this._requests.delete(entry)) return;
    clearTimeout(entry.timer);
    if (error) entry.done.reject(error);
    else entry.done.resolve(value);
  }

  // -- the API ------------------------------------------------------------------------

  /**
   * Subscribe ``onEvent({topic, id, payload, seq, epoch, ts})`` to ``topic``.
   * Options: ``lastN`` (replay up to N retained messages first), ``onGap(gap)``
   * (``{topic, reason, epoch, afterSeq, firstSeq, missed}``; reason
   * ``evicted``, ``epoch_changed`` or ``dropped``), ``onSubscribed``,
   * ``onEnd({reason, error})``, ``presence`` with ``onPresence``, and
   * ``sinceSeq`` with ``epoch`` to resume from a stored ``position``.
   * Works before ``connect()`` too: it is sent once connected.
   */
  subscribe(topic, onEvent, opts = {}) {
    if (this._closed) throw new PubSubError(CLOSED, "client closed");
    if (typeof onEvent !== "function") throw new TypeError("subscribe(topic, onEvent): onEvent must be a function");
    if (this.subscriptions.has(topic)) throw new PubSubError("ALREADY_SUBSCRIBED", `already subscribed to ${topic}; unsubscribe first`);
    if (opts.lastN && opts.sinceSeq != null) throw new TypeError("lastN and sinceSeq cannot be combined");
    const sub = new Subscription(this, topic, onEvent, opts);
    this.subscriptions.set(topic, sub);
    if (this.connected) this._subscribeNow(sub);
    return sub;
  }

  _subscribeNow(sub) {
    this._sendNow(sub.frame(this.clientId), (reply) => {
      if (!reply || this.subscriptions.get(sub.topic) !== sub) return;
      if (reply.type !== "error") return sub.acked(reply);
      const error = errorOf(reply);
      if (RETRY_LATER.has(error.code)) return; // the next connection resubscribes
      if (error.code === "INTERNAL") {
        // A passing server fault (e.g. its Redis is reconnecting): try again on this connection.
        const socket = this._socket;
        sub.retryTimer = setTimeout(() => {
          if (this._socket === socket && this.subscriptions.get(sub.topic) === sub) this._subscribeNow(sub);
        }, backoff(sub.retries++, this.options.minReconnectDelay, this.options.maxReconnectDelay));
        return this._report(error);
      }
      this._end(sub, "refused", error); // TOPIC_NOT_FOUND, FORBIDDEN, LIMIT_EXCEEDED, ...
    });
  }

  _end(sub, reason, error) {
    if (this.subscriptions.get(sub.topic) === sub) this.subscriptions.delete(sub.topic);
    sub.end(reason, error);
  }

  /** End the subscription to ``topic`` (a name or a Subscription); resolves once the
   * server acked (at once if not connected).  An ended subscription is left alone. */
  async unsubscribe(topic) {
    const sub = typeof topic === "string" ? this.subscriptions.get(topic) : topic;
    if (!sub || this.subscriptions.get(sub.topic) !== sub) return;
    topic = sub.topic;
    this._end(sub, "unsubscribed", null);
    if (!this.connected) return; // the server dropped it with the connection
    await new Promise((resolve) => this._sendNow({ type: "unsubscribe", topic, client_id: this.clientId }, resolve));
  }

  /**
   * Publish ``payload`` (any JSON value); resolves with ``{topic, id, seq, duplicate}``.
   * Sent again with the same ``id`` after a reconnect until acked or ``timeout``;
   * ``duplicate: true`` may mean a lost attempt of this very call had landed.
   */
  publish(topic, payload, { id = uuid4(), timeout } = {}) {
    const frame = { type: "publish", topic, message: { id, payload: payload === undefined ? null : payload } };
    return this._request(frame, (ack) => ({ topic: ack.topic ?? topic, id, seq: ack.seq ?? null, duplicate: Boolean(ack.duplicate) }), { timeout });
  }

  /** Who is subscribed to ``topic``: ``{topic, subscribers: [{connId, clientId, user}]}`` (PROTOCOL.md 6). */
  presence(topic, { timeout } = {}) {
    return this._request({ type: "presence", topic }, (reply) => ({
      topic: reply.topic ?? topic,
      subscribers: (reply.subscribers || []).map((s) => ({ connId: s.conn_id, clientId: s.client_id, user: s.user ?? null })),
    }), { timeout });
  }

  /** Round trip to the server in milliseconds. */
  async ping({ timeout } = {}) {
    const started = performance.now();
    await this._request({ type: "ping" }, () => null, { retry: false, timeout });
    return performance.now() - started;
  }
}
