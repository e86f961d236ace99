#!/usr/bin/env node
// Load generator for tornado-pubsub and the reference broadcasters.
//
//   node loadgen.js --scenario=fanout --port=8100 --subs=100 --messages=500
//
// Prints one JSON object (the scenario's figures) on stdout.  It speaks only
// the base protocol: POST /topics, subscribe, publish, GET /health.  Events are
// checked without JSON.parse (the seq, topic and send time are read straight
// from the frame bytes, frames are parsed in place by RawClient) so one Node process on one core can receive far more
// events per second than any server under test delivers; `loadgen_cpu` in the
// output is its own CPU use (fraction of one core) during the measurement.

'use strict';

const http = require('http');
const crypto = require('crypto');
const fs = require('fs');
const net = require('net');
const { EventEmitter } = require('events');

const args = {};
for (const a of process.argv.slice(2)) {
  const m = /^--([^=]+)=(.*)$/.exec(a);
  if (m) args[m[1]] = m[2];
}
const num = (k, d) => (args[k] === undefined ? d : Number(args[k]));
const PORT = num('port', 8100);
const HOST = '127.0.0.1';
const PAYLOAD_BYTES = num('payload', 256);
const RUN = crypto.randomBytes(3).toString('hex');
const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });

const now = () => performance.now(); // ms, monotonic
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// -- helpers ---------------------------------------------------------------

function request(method, path, body) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const req = http.request(
      { host: HOST, port: PORT, method, path, agent, headers: data ? { 'Content-Type': 'application/json', 'Content-Length': data.length } : {} },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
      },
    );
    req.setTimeout(10000, () => req.destroy(new Error(`${method} ${path} timed out`)));
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}

async function createTopic(name) {
  const r = await request('POST', '/topics', { name });
  if (r.status !== 201) throw new Error(`POST /topics ${name}: ${r.status} ${r.body}`);
}

// A minimal WebSocket client on a bare TCP socket.  Server frames are parsed
// in place (the payload handed on is a view, never a copy) and emitted as
// 'message' events like the `ws` package does; client frames carry an all-zero
// mask key, which is valid and leaves the payload as is.  This is what keeps
// one Node process far ahead of the servers under test.
class RawClient extends EventEmitter {
  constructor(socket) {
    super();
    this._socket = socket;
    this.rest = null;
  }

  send(text) {
    const body = Buffer.from(text);
    const n = body.length;
    let head;
    if (n < 126) head = Buffer.from([0x81, 0x80 | n, 0, 0, 0, 0]);
    else if (n < 65536) head = Buffer.from([0x81, 0xfe, n >> 8, n & 255, 0, 0, 0, 0]);
    else {
      head = Buffer.alloc(14);
      head[0] = 0x81; head[1] = 0xff;
      head.writeBigUInt64BE(BigInt(n), 2);
    }
    this._socket.write(Buffer.concat([head, body]));
  }

  terminate() { this._socket.destroy(); }

  feed(chunk) {
    const buf = this.rest ? Buffer.concat([this.rest, chunk]) : chunk;
    let off = 0;
    while (buf.length - off >= 2) {
      let len = buf[off + 1] & 0x7f;
      let hl = 2;
      if (len === 126) {
        if (buf.length - off < 4) break;
        len = buf.readUInt16BE(off + 2); hl = 4;
      } else if (len === 127) {
        if (buf.length - off < 10) break;
        len = Number(buf.readBigUInt64BE(off + 2)); hl = 10;
      }
      if (buf.length - off < hl + len) break;
      const opcode = buf[off] & 0x0f;
      const payload = buf.subarray(off + hl, off + hl + len);
      off += hl + len;
      if (opcode === 1 || opcode === 2) this.emit('message', payload, opcode === 2);
      else if (opcode === 9) this._socket.write(Buffer.concat([Buffer.from([0x8a, 0x80 | payload.length, 0, 0, 0, 0]), payload]));
      else if (opcode === 8) { this.closeCode = len >= 2 ? payload.readUInt16BE(0) : 1005; this._socket.end(); }
    }
    this.rest = off < buf.length ? buf.subarray(off) : null;
  }
}

function connect() {
  return new Promise((resolve, reject) => {
    const socket = net.connect(PORT, HOST);
    const timer = setTimeout(() => { socket.destroy(); reject(new Error('connect timeout')); }, 20000);
    socket.setNoDelay(true);
    let head = Buffer.alloc(0);
    const client = new RawClient(socket);
    const onHandshake = (chunk) => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end === -1) return;
      socket.off('data', onHandshake);
      clearTimeout(timer);
      if (!head.subarray(0, 12).toString().startsWith('HTTP/1.1 101')) {
        socket.destroy();
        return reject(new Error(`handshake refused: ${head.subarray(0, end).toString().split('\r\n')[0]}`));
      }
      socket.on('data', (c) => client.feed(c));
      socket.on('close', () => client.emit('close', client.closeCode || 1006));
      if (head.length > end + 4) client.feed(head.subarray(end + 4));
      resolve(client);
    };
    socket.on('data', onHandshake);
    socket.once('error', (e) => { clearTimeout(timer); reject(e); });
    socket.once('connect', () => {
      socket.write(
        `GET /ws HTTP/1.1\r\nHost: ${HOST}:${PORT}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      );
    });
  });
}

// Open `n` connections, at most `parallel` handshakes at a time.
async function connectMany(n, parallel = 100) {
  const out = new Array(n);
  let next = 0;
  async function worker() {
    while (next < n) {
      const i = next++;
      out[i] = await connect();
    }
  }
  await Promise.all(Array.from({ length: Math.min(parallel, n) }, worker));
  return out;
}

// Subscribe `ws` to `topic`; resolves on the ack.  Later frames go to `onFrame`.
function subscribe(ws, topic, onFrame) {
  return new Promise((resolve, reject) => {
    const rid = `s-${crypto.randomUUID()}`;
    const timer = setTimeout(() => reject(new Error(`no subscribe ack for ${topic}`)), 20000);
    const first = (data) => {
      const f = JSON.parse(data);
      if (f.request_id !== rid) return; // e.g. an info ping: ignore
      clearTimeout(timer);
      ws.off('message', first);
      if (f.type !== 'ack') return reject(new Error(`subscribe ${topic}: ${data}`));
      if (onFrame) ws.on('message', onFrame);
      resolve(f);
    };
    ws.on('message', first);
    ws.send(JSON.stringify({ type: 'subscribe', topic, client_id: `bench-${RUN}`, request_id: rid }));
  });
}

// A payload object whose JSON is exactly PAYLOAD_BYTES long; `t` is a
// 15-digit send time in microseconds (fixed width keeps the size constant).
const T0 = now();
const tField = () => 100000000000000 + Math.round((now() - T0) * 1000);
const PAD = 'x'.repeat(Math.max(0, PAYLOAD_BYTES - JSON.stringify({ t: 100000000000000, pad: '' }).length));
const publishFrame = (topic, rid) =>
  `{"type":"publish","topic":"${topic}","message":{"id":"${crypto.randomUUID()}","payload":{"t":${tField()},"pad":"${PAD}"}},"request_id":"${rid}"}`;

const SEQ = Buffer.from('"seq":');
const EVENT = Buffer.from('"event"');
const TKEY = Buffer.from('"t":');

function readInt(buf, at) {
  let v = 0;
  while (buf[at] === 32) at++; // json.dumps puts a space after ':'
  for (let i = at; i < buf.length; i++) {
    const c = buf[i];
    if (c < 48 || c > 57) break;
    v = v * 10 + (c - 48);
  }
  return v;
}

// The seq of an event frame, or 0 when `buf` is not an event.
function eventSeq(buf) {
  if (buf.indexOf(EVENT) === -1) return 0;
  const i = buf.lastIndexOf(SEQ);
  return i === -1 ? 0 : readInt(buf, i + SEQ.length);
}

function sendTime(buf) {
  const i = buf.indexOf(TKEY);
  return (readInt(buf, i + TKEY.length) - 100000000000000) / 1000 + T0;
}

function percentile(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function rssKb(pid) {
  if (!pid) return null;
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : null;
}

// CPU seconds (user + system) the process has used so far.
function cpuSecs(pid) {
  if (!pid) return null;
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in USER_HZ ticks
}

// Server CPU per delivered event: far less sensitive to a busy machine than events/s.
function serverCost(pid, cpu0, events) {
  const used = cpuSecs(pid);
  if (used === null || !events) return {};
  return { server_cpu_s: used - cpu0, server_us_per_event: ((used - cpu0) * 1e6) / events };
}

// A subscriber's view of one topic: which seqs arrived, duplicates, order.
class Tally {
  constructor(n, topicKey) {
    this.seen = new Uint8Array(n + 2);
    this.n = n;
    this.unique = 0;
    this.dups = 0;
    this.reorders = 0;
    this.foreign = 0;
    this.maxSeq = 0;
    this.topicKey = topicKey; // Buffer '"topic":"name"' when isolation is checked
  }

  // Returns the seq if it is new for this subscriber, else 0.
  take(buf) {
    const seq = eventSeq(buf);
    if (!seq) return 0;
    if (this.topicKey && buf.indexOf(this.topicKey) === -1) { this.foreign++; return 0; }
    if (seq > this.n || this.seen[seq]) { this.dups++; return 0; }
    this.seen[seq] = 1;
    this.unique++;
    if (seq < this.maxSeq) this.reorders++;
    else this.maxSeq = seq;
    return seq;
  }
}

function sum(tallies, k) { return tallies.reduce((a, t) => a + t[k], 0); }

// The publisher: one connection, counts acks and errors.
async function publisher() {
  const ws = await connect();
  const p = { ws, acks: 0, errors: 0, lastError: null };
  ws.on('message', (data) => {
    if (eventSeq(data)) return;
    const f = JSON.parse(data);
    if (f.type === 'ack') p.acks++;
    else if (f.type === 'error') { p.errors++; p.lastError = f.error; }
  });
  return p;
}

// Publish `total` messages over `topics` round-robin, keeping at most `window`
// messages published and not yet received by every subscriber; resolves when
// all are complete or when nothing progressed for `stallMs`.
function closedLoop({ pub, topics, total, window, complete, stallMs = 5000 }) {
  return new Promise((resolve) => {
    let sent = 0;
    let lastProgress = now();
    let done = false;
    const state = { sent: 0, firstSend: 0, lastRecv: 0 };
    const finish = (stalled) => {
      if (done) return;
      done = true;
      clearInterval(watch);
      state.sent = sent;
      state.stalled = stalled;
      resolve(state);
    };
    const pump = () => {
      while (sent < total && sent - complete.count < window) {
        const topic = topics[sent % topics.length];
        pub.ws.send(publishFrame(topic, `p${sent}`));
        sent++;
      }
    };
    complete.onProgress = () => {
      lastProgress = now();
      state.lastRecv = lastProgress;
      if (complete.count >= total) return finish(false);
      pump();
    };
    const watch = setInterval(() => { if (now() - lastProgress > stallMs) finish(true); }, 100);
    state.firstSend = now();
    lastProgress = state.firstSend;
    pump();
  });
}

// `n` subscriber connections, subscriber i on topics[i % topics.length], each
// expecting `m` events; a message counts as complete once all `perTopic`
// subscribers of its topic have it (that drives closedLoop's window).
async function subscribers(n, topics, m, { isolation = false } = {}) {
  const perTopic = Math.ceil(n / topics.length);
  const recv = topics.map(() => new Uint32Array(m + 2));
  const complete = { count: 0, onProgress: () => {} };
  const socks = await connectMany(n);
  const tallies = socks.map((_, i) => new Tally(m, isolation ? Buffer.from(`"topic":"${topics[i % topics.length]}"`) : null));
  await Promise.all(socks.map((ws, i) => subscribe(ws, topics[i % topics.length], (data) => {
    const seq = tallies[i].take(data);
    if (seq && ++recv[i % topics.length][seq] === perTopic) { complete.count++; complete.onProgress(); }
  })));
  return { socks, tallies, complete };
}

// Run closedLoop and measure it: wall time from the first publish to the last
// completion, the load generator's CPU and the server's CPU per event.
async function measured(loop) {
  const pid = num('pid', 0);
  const cpu0 = process.cpuUsage();
  const scpu0 = cpuSecs(pid);
  const st = await closedLoop(loop);
  const cpu = process.cpuUsage(cpu0);
  const secs = ((st.lastRecv || now()) - st.firstSend) / 1000;
  const received = sum(loop.tallies, 'unique');
  return {
    st, secs, received, loadgen_cpu: (cpu.user + cpu.system) / 1e6 / secs,
    ...serverCost(pid, scpu0, received),
  };
}

// -- scenarios ---------------------------------------------------------------

// S subscribers on one topic; closed-loop publish of M messages.
async function fanout() {
  const S = num('subs', 100);
  const M = num('messages', Math.max(100, Math.round(num('events', 200000) / S)));
  const W = num('window', 100);
  const topic = `fan-${RUN}`;
  await createTopic(topic);
  const { socks, tallies, complete } = await subscribers(S, [topic], M);
  const pub = await publisher();
  await sleep(200);
  const m = await measured({ pub, topics: [topic], total: M, window: W, complete, tallies });
  for (const ws of [...socks, pub.ws]) ws.terminate();
  return {
    subs: S, messages: M, window: W, seconds: m.secs,
    events_per_sec: m.received / m.secs, msgs_per_sec: complete.count / m.secs,
    expected: S * M, received: m.received, lost: S * M - m.received, duplicates: sum(tallies, 'dups'),
    out_of_order: sum(tallies, 'reorders'), stalled: m.st.stalled, publish_errors: pub.errors,
    loadgen_cpu: m.loadgen_cpu, server_cpu_s: m.server_cpu_s, server_us_per_event: m.server_us_per_event,
  };
}

// T topics x K subscribers (one connection each); isolation is checked.
async function topics() {
  const T = num('topics', 100);
  const K = num('subs', 10);
  const M = num('messages', 200); // per topic
  const W = num('window', 200);
  const names = Array.from({ length: T }, (_, i) => `top-${RUN}-${i}`);
  for (const n of names) await createTopic(n);
  const { socks, tallies, complete } = await subscribers(T * K, names, M, { isolation: true });
  const pub = await publisher();
  await sleep(200);
  const m = await measured({ pub, topics: names, total: T * M, window: W, complete, tallies });
  for (const ws of [...socks, pub.ws]) ws.terminate();
  return {
    topics: T, subs_per_topic: K, messages_per_topic: M, window: W, seconds: m.secs,
    events_per_sec: m.received / m.secs, msgs_per_sec: complete.count / m.secs,
    expected: T * K * M, received: m.received, lost: T * K * M - m.received, duplicates: sum(tallies, 'dups'),
    out_of_order: sum(tallies, 'reorders'), foreign_events: sum(tallies, 'foreign'),
    stalled: m.st.stalled, publish_errors: pub.errors,
    loadgen_cpu: m.loadgen_cpu, server_cpu_s: m.server_cpu_s, server_us_per_event: m.server_us_per_event,
  };
}

// Fixed publish rate R for D seconds to S subscribers; delivery latency.
async function latency() {
  const S = num('subs', 10);
  const R = num('rate', 1000);
  const D = num('seconds', 5);
  const warm = Math.round(R * num('warmup', 0.5));
  const M = Math.round(R * D) + warm;
  const topic = `lat-${RUN}`;
  await createTopic(topic);
  const lat = new Float64Array(S * M);
  let nlat = 0;
  let got = 0;
  const subs = await connectMany(S);
  const tallies = subs.map(() => new Tally(M));
  await Promise.all(subs.map((ws, i) => subscribe(ws, topic, (data) => {
    const seq = tallies[i].take(data);
    if (!seq) return;
    got++;
    if (seq > warm) lat[nlat++] = now() - sendTime(data);
  })));
  const pub = await publisher();
  await sleep(200);
  const cpu0 = process.cpuUsage();
  const start = now();
  let sent = 0;
  await new Promise((resolve) => {
    const tick = () => {
      const due = Math.min(M, Math.floor(((now() - start) * R) / 1000) + 1);
      while (sent < due) { pub.ws.send(publishFrame(topic, `p${sent}`)); sent++; }
      if (sent < M) setTimeout(tick, 1);
      else resolve();
    };
    tick();
  });
  const pubSecs = (now() - start) / 1000;
  const deadline = now() + 5000;
  while (got < S * M && now() < deadline) await sleep(20);
  const cpu = process.cpuUsage(cpu0);
  const secs = (now() - start) / 1000;
  const sorted = Array.from(lat.subarray(0, nlat)).sort((a, b) => a - b);
  const received = sum(tallies, 'unique');
  for (const ws of [...subs, pub.ws]) ws.terminate();
  return {
    subs: S, rate: R, seconds: D, achieved_rate: M / pubSecs,
    p50_ms: percentile(sorted, 50), p90_ms: percentile(sorted, 90), p99_ms: percentile(sorted, 99),
    max_ms: sorted.length ? sorted[sorted.length - 1] : null, samples: sorted.length,
    expected: S * M, received, lost: S * M - received, duplicates: sum(tallies, 'dups'),
    out_of_order: sum(tallies, 'reorders'), publish_errors: pub.errors,
    loadgen_cpu: (cpu.user + cpu.system) / 1e6 / secs,
  };
}

// C idle connections, each subscribed to one of T topics; server RSS per connection.
async function connections() {
  const C = num('conns', 10000);
  const T = num('topics', 100);
  const pid = num('pid', 0);
  const names = Array.from({ length: T }, (_, i) => `idle-${RUN}-${i}`);
  for (const n of names) await createTopic(n);
  await sleep(500);
  const before = rssKb(pid);
  const t0 = now();
  const socks = await connectMany(C, 200);
  const parallel = 500;
  for (let i = 0; i < C; i += parallel) {
    await Promise.all(socks.slice(i, i + parallel).map((ws, j) => subscribe(ws, names[(i + j) % T])));
  }
  const setupSecs = (now() - t0) / 1000;
  await sleep(num('settle', 2000));
  const after = rssKb(pid);
  const health = JSON.parse((await request('GET', '/health')).body);
  for (const ws of socks) ws.terminate();
  return {
    conns: C, topics: T, setup_seconds: setupSecs, rss_before_kb: before, rss_after_kb: after,
    rss_per_conn_kb: before === null ? null : (after - before) / C,
    server_subscribers: health.subscribers,
  };
}

// One subscriber stops reading while M messages flood the topic; H healthy
// subscribers must get all of them; server RSS and /health latency are watched.
async function slowconsumer() {
  const H = num('subs', 10);
  const M = num('messages', 50000);
  const W = num('window', 200);
  const pid = num('pid', 0);
  const topic = `slow-${RUN}`;
  await createTopic(topic);
  const { socks: healthy, tallies, complete } = await subscribers(H, [topic], M);
  const slow = await connect();
  let slowClose = null;
  slow.on('close', (code) => { slowClose = code; });
  await subscribe(slow, topic);
  slow._socket.pause(); // stop reading: the kernel buffers fill, then the server's queue
  const pub = await publisher();
  await sleep(500);
  const base = rssKb(pid);
  let peak = base;
  const rssTimer = setInterval(() => { const r = rssKb(pid); if (r > peak) peak = r; }, 50);
  const healthLat = [];
  let polling = true;
  const poller = (async () => {
    while (polling) {
      const t = now();
      await request('GET', '/health');
      healthLat.push(now() - t);
      await sleep(20);
    }
  })();
  const m = await measured({ pub, topics: [topic], total: M, window: W, complete, tallies, stallMs: 10000 });
  polling = false;
  await poller;
  await sleep(300);
  clearInterval(rssTimer);
  const end = rssKb(pid);
  const sorted = healthLat.sort((a, b) => a - b);
  for (const ws of [...healthy, pub.ws, slow]) ws.terminate();
  return {
    healthy_subs: H, messages: M, window: W, seconds: m.secs, msgs_per_sec: complete.count / m.secs,
    expected: H * M, received: m.received, lost: H * M - m.received, duplicates: sum(tallies, 'dups'),
    out_of_order: sum(tallies, 'reorders'), stalled: m.st.stalled,
    rss_base_kb: base, rss_peak_kb: peak, rss_end_kb: end, rss_growth_kb: peak - base,
    health_samples: sorted.length, health_p50_ms: percentile(sorted, 50), health_p99_ms: percentile(sorted, 99),
    health_max_ms: sorted.length ? sorted[sorted.length - 1] : null,
    slow_closed_with: slowClose, loadgen_cpu: m.loadgen_cpu,
  };
}

const SCENARIOS = { fanout, topics, latency, connections, slowconsumer };

(async () => {
  const fn = SCENARIOS[args.scenario];
  if (!fn) throw new Error(`--scenario must be one of ${Object.keys(SCENARIOS).join(', ')}`);
  const result = await fn();
  process.stdout.write(`${JSON.stringify({ scenario: args.scenario, ...result })}\n`);
  process.exit(0);
})().catch((e) => {
  process.stdout.write(`${JSON.stringify({ scenario: args.scenario, error: String(e && e.stack || e) })}\n`);
  process.exit(1);
});
