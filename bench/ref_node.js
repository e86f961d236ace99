#!/usr/bin/env node
// The minimal reference broadcaster: Node `ws`, no protocol logic beyond what
// the scenarios need (subscribe, publish, a per-topic seq, POST /topics,
// GET /health).  No validation, no history, no queue bound, no logging: it
// is the ceiling a WebSocket server on this machine reaches, and the yardstick
// our figures are divided by.
//
//   node ref_node.js --port=8101 [--batch]
//
// --batch corks each subscriber's socket for the rest of the current tick, so
// the events of all publishes that arrived in one read leave in one write (as
// our server batches them). It is the load generator's ceiling check: the
// most events per second this machine can push at it.

'use strict';

const http = require('http');
const { WebSocketServer } = require('ws');

const port = Number((process.argv.find((a) => a.startsWith('--port=')) || '--port=8101').slice(7));
const batch = process.argv.includes('--batch');
const started = Date.now();
const corked = new Set();

function uncorkAll() {
  for (const s of corked) s._socket.uncork();
  corked.clear();
}

function deliver(s, frame) {
  if (batch && !corked.has(s)) {
    if (!corked.size) process.nextTick(uncorkAll);
    s._socket.cork();
    corked.add(s);
  }
  s.send(frame);
}
const topics = new Map(); // name -> { seq, subs: Set<ws> }

function topic(name) {
  let t = topics.get(name);
  if (!t) {
    t = { seq: 0, subs: new Set() };
    topics.set(name, t);
  }
  return t;
}

function json(res, status, body) {
  res.writeHead(status, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify(body));
}

const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/health') {
    let subscribers = 0;
    for (const t of topics.values()) subscribers += t.subs.size;
    return json(res, 200, { status: 'ok', uptime_sec: Math.floor((Date.now() - started) / 1000), topics: topics.size, subscribers });
  }
  if (req.method === 'POST' && req.url === '/topics') {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      const name = JSON.parse(body).name;
      topic(name);
      json(res, 201, { status: 'created', topic: name });
    });
    return;
  }
  json(res, 404, { error: { code: 'NOT_FOUND', message: 'no such path' } });
});

const wss = new WebSocketServer({ server, path: '/ws', perMessageDeflate: false });
wss.on('connection', (ws) => {
  ws._socket.setNoDelay(true);
  const mine = new Set();
  ws.on('message', (data) => {
    const f = JSON.parse(data);
    const ts = new Date().toISOString();
    if (f.type === 'publish') {
      const t = topic(f.topic);
      const seq = ++t.seq;
      const frame = JSON.stringify({ type: 'event', topic: f.topic, message: f.message, ts, seq });
      for (const s of t.subs) deliver(s, frame);
      deliver(ws, JSON.stringify({ type: 'ack', request_id: f.request_id, topic: f.topic, status: 'ok', ts, seq, duplicate: false }));
    } else if (f.type === 'subscribe') {
      const t = topic(f.topic);
      t.subs.add(ws);
      mine.add(t);
      ws.send(JSON.stringify({ type: 'ack', request_id: f.request_id, topic: f.topic, status: 'ok', ts, epoch: 'ref', last_seq: t.seq }));
    } else if (f.type === 'ping') {
      ws.send(JSON.stringify({ type: 'pong', request_id: f.request_id, ts }));
    }
  });
  ws.on('close', () => { for (const t of mine) t.subs.delete(ws); });
});

server.listen(port, '127.0.0.1');
