// One subscription's position and the sorting of its frames: dedupe by seq,
// gap detection, the events and notices handed to the caller.  No I/O: the
// client feeds it frames in the order the server sent them.

import { CLOSED, PubSubError } from "./errors.js";
import { deferred } from "./support.js";

/**
 * One topic's subscription: its position (epoch, last seq delivered) and the
 * sorting of its frames.  Created by ``PubSubClient.subscribe``; it lives
 * across reconnects until ``unsubscribe()``, ``close()``, or the server ends
 * it (topic deleted, permission revoked, resubscribe refused).
 */
export class Subscription {
  constructor(client, topic, onEvent, opts) {
    this.client = client;
    this.topic = topic;
    this.onEvent = onEvent;
    this.opts = opts;
    this.lastN = Math.max(0, Math.floor(Number(opts.lastN) || 0));
    this.epoch = opts.epoch ?? null;
    /** seq of the last event delivered (or the stored position to resume from). */
    this.lastSeq = opts.sinceSeq ?? null;
    // Seqs above this are owed to the handler: delivered, or reported as a gap.
    // Below it (a lastN replay the history could not fill) nothing is owed.
    this.owedAfter = this.lastSeq;
    this.state = "subscribing"; // -> subscribed -> ended
    this.live = false; // acked on the current connection: its events are ours
    this.serverLastSeq = null; // the topic's newest seq in the latest ack
    this.duplicates = 0; // events skipped because their seq was already delivered
    this.gaps = 0;
    this.retries = 0; // consecutive INTERNAL refusals of the subscribe
    this.retryTimer = null;
    this._ready = deferred();
    this._ended = deferred();
    /** Resolves with the first ack ({epoch, lastSeq}); rejects with a PubSubError if refused. */
    this.ready = this._ready.promise;
    /** Resolves with {reason, error} once the subscription has ended. */
    this.ended = this._ended.promise;
  }

  /** Where a later ``subscribe(topic, fn, {sinceSeq, epoch})`` would resume. */
  get position() {
    return { epoch: this.epoch, seq: this.lastSeq };
  }

  unsubscribe() {
    return this.client.unsubscribe(this);
  }

  frame(clientId) {
    const frame = { type: "subscribe", topic: this.topic, client_id: clientId };
    if (this.lastSeq !== null) {
      frame.since_seq = this.lastSeq;
      if (this.epoch !== null) frame.epoch = this.epoch;
    } else if (this.lastN) {
      frame.last_n = this.lastN;
    }
    if (this.opts.presence) frame.presence = true;
    return frame;
  }

  acked(ack) {
    const resumed = this.lastSeq !== null;
    this.serverLastSeq = typeof ack.last_seq === "number" ? ack.last_seq : null;
    if (!resumed && this.serverLastSeq !== null) {
      // Live events start after the topic's newest seq; a replay brings up to lastN before it.
      this.lastSeq = Math.max(0, this.serverLastSeq - this.lastN);
      this.owedAfter = this.serverLastSeq;
    }
    // After recovered: false the history_gap notice that follows carries the epoch.
    if (ack.recovered !== false && typeof ack.epoch === "string") this.epoch = ack.epoch;
    this.live = true;
    this.retries = 0;
    const first = this.state === "subscribing";
    this.state = "subscribed";
    if (first) this._ready.resolve({ topic: this.topic, epoch: this.epoch, lastSeq: this.serverLastSeq });
    this.call(this.opts.onSubscribed, {
      topic: this.topic,
      resumed,
      recovered: ack.recovered ?? null,
      epoch: this.epoch,
      lastSeq: this.serverLastSeq,
    });
  }

  /** ``info history_gap``: the server could not replay everything after our position. */
  historyGap(info) {
    const epoch = typeof info.epoch === "string" ? info.epoch : this.epoch;
    const first = Number.isInteger(info.first_seq) ? info.first_seq : 1;
    const owed = Math.max(this.owedAfter ?? 0, this.lastSeq ?? 0);
    // A new epoch is another incarnation of the topic: its seqs start again.
    // A seq counter below our position in the same epoch is treated the same way.
    const reset = (this.epoch !== null && epoch !== this.epoch) || (this.serverLastSeq !== null && this.serverLastSeq < owed);
    if (reset) {
      this.gap({ reason: "epoch_changed", epoch, previousEpoch: this.epoch, afterSeq: this.lastSeq, firstSeq: first, missed: null });
      this.lastSeq = this.owedAfter = first - 1;
    } else {
      if (first - 1 > owed) this.gap({ reason: "evicted", epoch, afterSeq: owed, firstSeq: first, missed: first - 1 - owed });
      this.lastSeq = Math.max(this.lastSeq ?? 0, first - 1);
      this.owedAfter = Math.max(owed, first - 1);
    }
    this.epoch = epoch;
  }

  event(frame) {
    if (!this.live) return; // a frame of an earlier subscription to this topic
    const seq = Number.isInteger(frame.seq) ? frame.seq : null;
    if (seq !== null && this.lastSeq !== null) {
      if (seq <= this.lastSeq) {
        this.duplicates += 1;
        return;
      }
      const owed = Math.max(this.owedAfter ?? 0, this.lastSeq);
      if (seq - 1 > owed) this.gap({ reason: "dropped", epoch: this.epoch, afterSeq: owed, firstSeq: seq, missed: seq - 1 - owed });
    }
    if (seq !== null) {
      this.lastSeq = seq;
      this.serverLastSeq = Math.max(this.serverLastSeq ?? 0, seq);
      this.owedAfter = Math.max(this.owedAfter ?? 0, seq);
    }
    const message = frame.message || {};
    this.call(this.onEvent, { topic: this.topic, id: message.id, payload: message.payload, seq, epoch: this.epoch, ts: frame.ts });
  }

  gap(gap) {
    this.gaps += 1;
    const report = { topic: this.topic, ...gap };
    if (this.opts.onGap) this.call(this.opts.onGap, report);
    else console.warn(`tornado-pubsub: ${gap.reason} gap on ${this.topic}`, report);
  }

  presence(info) {
    this.call(this.opts.onPresence, {
      type: info.msg,
      topic: this.topic,
      connId: info.conn_id,
      clientId: info.client_id,
      user: info.user ?? null,
      ts: info.ts,
    });
  }

  end(reason, error = null) {
    if (this.state === "ended") return;
    this.state = "ended";
    this.live = false;
    clearTimeout(this.retryTimer);
    this._ready.reject(error || new PubSubError(CLOSED, `subscription to ${this.topic} ended (${reason})`));
    this._ended.resolve({ reason, error });
    this.call(this.opts.onEnd, { topic: this.topic, reason, error });
  }

  /** Call a user callback; one that throws must not break the stream. */
  call(fn, arg) {
    if (!fn) return;
    try {
      fn(arg);
    } catch (err) {
      this.client._report(err);
    }
  }
}
