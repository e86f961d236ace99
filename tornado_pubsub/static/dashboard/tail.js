// The live tail: one WebSocket subscribed to one topic.  It replays the last
// N messages on start, and after a dropped connection reconnects with
// backoff and resumes with since_seq/epoch, so the list has no gap and no
// duplicate unless the server says so (history_gap).

const MAX_DELAY_MS = 10000;

export class Tail {
  /**
   * api: the Api (for the socket URL and key).
   * on: {status(state, text), event(frame, isReplay), notice(text, kind)}
   */
  constructor(api, on) {
    this.api = api;
    this.on = on;
    this.clientId = `dashboard-${Math.random().toString(36).slice(2, 8)}`;
    this.socket = null;
    this.topic = null;
    this.timer = null;
    this.requests = 0;
  }

  get active() {
    return this.topic !== null;
  }

  start(topic, lastN) {
    this.stop(null);
    this.topic = topic;
    this.lastN = lastN;
    this.epoch = null;
    this.lastSeq = 0;
    this.replayUpTo = 0; // seqs up to this came from history, not live
    this.delay = 500;
    this.open();
  }

  /** Stop tailing; ``text`` (if any) becomes the status line. */
  stop(text = "Stopped.") {
    const wasActive = this.active;
    this.topic = null;
    clearTimeout(this.timer);
    this.timer = null;
    if (this.socket) {
      const socket = this.socket;
      this.socket = null;
      socket.onclose = socket.onmessage = socket.onerror = socket.onopen = null;
      socket.close(1000, "tail stopped");
    }
    if (wasActive && text) this.on.status("idle", text);
  }

  open() {
    const topic = this.topic;
    this.on.status("connecting", `Connecting to ${topic}…`);
    let socket;
    try {
      socket = new WebSocket(this.api.socketUrl());
    } catch (err) {
      this.retry(`Cannot open a WebSocket: ${err.message}`);
      return;
    }
    this.socket = socket;
    let opened = false;
    socket.onopen = () => {
      opened = true;
      socket.send(JSON.stringify(this.subscribeFrame()));
    };
    socket.onmessage = (msg) => this.handle(msg.data);
    socket.onclose = (ev) => {
      if (this.socket !== socket) return;
      this.socket = null;
      // A refused handshake (bad key, draining server) never opens: say so.
      const why = opened ? `connection closed (${ev.code}${ev.reason ? ` ${ev.reason}` : ""})` : "could not connect (server down, draining, or API key refused)";
      this.retry(why);
    };
  }

  subscribeFrame() {
    this.requests += 1;
    this.pendingRequest = `tail-${this.requests}`;
    const frame = { type: "subscribe", topic: this.topic, client_id: this.clientId, request_id: this.pendingRequest };
    if (this.epoch !== null) {
      frame.since_seq = this.lastSeq; // resume after a reconnect
      frame.epoch = this.epoch;
    } else {
      frame.last_n = this.lastN;
    }
    return frame;
  }

  retry(why) {
    if (!this.active) return;
    const delay = Math.min(MAX_DELAY_MS, this.delay) * (0.75 + Math.random() * 0.5);
    this.delay = Math.min(MAX_DELAY_MS, this.delay * 2);
    this.on.status("reconnecting", `${why}; retrying in ${(delay / 1000).toFixed(1)} s…`);
    this.timer = setTimeout(() => this.open(), delay);
  }

  handle(raw) {
    let frame;
    try {
      frame = JSON.parse(raw);
    } catch (_) {
      return; // the server only sends JSON; ignore anything else
    }
    if (!frame || typeof frame !== "object") return;
    switch (frame.type) {
      case "ack":
        if (frame.request_id === this.pendingRequest) this.subscribed(frame);
        break;
      case "event":
        if (frame.topic === this.topic) this.event(frame);
        break;
      case "error":
        this.failed(frame.error || {}, frame.request_id === this.pendingRequest);
        break;
      case "info":
        this.info(frame);
        break;
      default:
        break; // pong and future frame types
    }
  }

  subscribed(ack) {
    const resumed = this.epoch !== null;
    if (!resumed) {
      this.replayUpTo = this.lastN > 0 ? ack.last_seq || 0 : 0;
      // Nothing to replay: live starts after the newest seq.
      if (!this.lastN) this.lastSeq = ack.last_seq || 0;
    }
    this.epoch = ack.epoch ?? this.epoch;
    this.delay = 500;
    const how = resumed ? (ack.recovered ? "resumed without loss" : "resumed") : "subscribed";
    this.on.status("live", `Live on ${this.topic} · ${how}`);
  }

  event(frame) {
    const seq = typeof frame.seq === "number" ? frame.seq : null;
    if (seq !== null) {
      if (seq <= this.lastSeq) return; // already shown before a reconnect
      this.lastSeq = seq;
    }
    this.on.event(frame, seq !== null && seq <= this.replayUpTo);
  }

  failed(error, ofSubscribe) {
    const text = `${error.code || "ERROR"}: ${error.message || "request failed"}`;
    if (ofSubscribe && error.code !== "SHUTTING_DOWN") {
      // The subscription itself was refused (no such topic, a limit); a
      // draining server closes the socket next, and the retry handles that.
      this.stop(null);
      this.on.status("error", text);
    } else {
      this.on.notice(text, "error");
    }
  }

  info(frame) {
    if (frame.msg === "ping") return;
    if (frame.msg === "topic_deleted" && frame.topic === this.topic) {
      this.stop(null);
      this.on.status("idle", `Topic ${frame.topic} was deleted; tail stopped.`);
      this.on.notice(`topic ${frame.topic} deleted`, "warn");
    } else if (frame.msg === "history_gap" && frame.topic === this.topic) {
      this.epoch = frame.epoch ?? this.epoch;
      this.lastSeq = 0; // a new epoch's seqs start again; the replay follows
      this.on.notice(`gap: messages were missed while disconnected; history restarts at seq ${frame.first_seq}`, "warn");
    } else if (frame.msg === "shutting_down") {
      this.on.notice("server is shutting down; will reconnect", "warn");
    }
  }
}
