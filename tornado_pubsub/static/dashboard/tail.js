// The live tail: one subscription through the browser client (/client.js),
// which reconnects with backoff and resumes with since_seq/epoch, so the list
// has no gap and no duplicate unless the client reports one (onGap).

import { PubSubClient } from "../../client.js";

export class Tail {
  /**
   * api: the Api (for the socket URL and key).
   * on: {status(state, text), event(event, isReplay), notice(text, kind)}
   */
  constructor(api, on) {
    this.api = api;
    this.on = on;
    this.clientId = `dashboard-${Math.random().toString(36).slice(2, 8)}`;
    this.client = null;
    this.topic = null;
  }

  get active() {
    return this.topic !== null;
  }

  start(topic, lastN) {
    this.stop(null);
    this.topic = topic;
    let replayUpTo = 0; // seqs up to this came from history, not live
    const client = new PubSubClient(this.api.socketUrl(), { apiKey: this.api.key, clientId: this.clientId });
    this.client = client;
    client.on("connecting", () => {
      if (client.state === "connecting") this.on.status("connecting", `Connecting to ${topic}…`);
    });
    client.on("reconnecting", ({ delay, error }) => {
      const why = error ? error.detail : "connection lost";
      this.on.status("reconnecting", `${why}; retrying in ${(delay / 1000).toFixed(1)} s…`);
    });
    client.on("info", (info) => {
      if (info.msg === "shutting_down") this.on.notice("server is shutting down; will reconnect", "warn");
    });
    client.on("error", (err) => this.on.notice(err.code ? `${err.code}: ${err.detail}` : String(err), "error"));
    client.subscribe(topic, (event) => this.on.event(event, event.seq !== null && event.seq <= replayUpTo), {
      lastN,
      onSubscribed: ({ resumed, recovered, lastSeq }) => {
        if (!resumed) replayUpTo = lastN > 0 ? lastSeq || 0 : 0;
        const how = resumed ? (recovered ? "resumed without loss" : "resumed") : "subscribed";
        this.on.status("live", `Live on ${topic} · ${how}`);
      },
      onGap: (gap) => this.on.notice(gapText(gap), "warn"),
      onEnd: ({ reason, error }) => this.ended(topic, reason, error),
    });
    client.connect().catch(() => {}); // a refusal is reported through onEnd or the error event
  }

  ended(topic, reason, error) {
    // Stopping the tail closes its client: that end needs no word.
    if (this.topic !== topic || reason === "unsubscribed" || (reason === "closed" && !error)) return;
    this.stop(null);
    if (reason === "topic_deleted") {
      this.on.status("idle", `Topic ${topic} was deleted; tail stopped.`);
      this.on.notice(`topic ${topic} deleted`, "warn");
    } else {
      this.on.status("error", error ? `${error.code}: ${error.detail}` : `tail ended (${reason})`);
    }
  }

  /** Stop tailing; ``text`` (if any) becomes the status line. */
  stop(text = "Stopped.") {
    const wasActive = this.active;
    this.topic = null;
    if (this.client) {
      const client = this.client;
      this.client = null;
      client.close();
    }
    if (wasActive && text) this.on.status("idle", text);
  }
}

function gapText(gap) {
  if (gap.reason === "epoch_changed") return `gap: the topic was recreated or the server lost it; history restarts at seq ${gap.firstSeq}`;
  const lost = gap.missed === 1 ? `message ${gap.afterSeq + 1} was` : `messages ${gap.afterSeq + 1}–${gap.firstSeq - 1} were`;
  if (gap.reason === "dropped") return `gap: ${lost} dropped by the server (this tab fell behind)`;
  return `gap: ${lost} missed while disconnected (no longer in the server's history)`;
}
