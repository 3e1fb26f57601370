// Scale-out over Redis: two switchboard processes with `--broker redis://…` on one real
// `redis-server` serve the same rooms. Third-party clients (ws, eventsource,
// socket.io-client) on different nodes see one conversation: one offset sequence, shared
// history and presence, and a stream cut on one node resumes on the other without a gap.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { EventSource } from 'eventsource';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import WebSocket from 'ws';
import { io } from 'socket.io-client';
import { startServer, startRedis, api as post, jwt } from './server.mjs';

const KEY = 'scale-out-key';
let redis;
let a;
let b;

before(async () => {
  redis = await startRedis();
  const flags = ['--api-key', KEY, '--broker', redis.url, '--broker-timeout', '1s'];
  a = await startServer(flags);
  b = await startServer(flags);
});

after(async () => {
  await a?.stop();
  await b?.stop();
  await redis?.stop();
});

async function until(what, predicate, ms = 5000) {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function get(base, route) {
  const res = await fetch(base + route, { headers: { authorization: `Bearer ${KEY}` }, signal: AbortSignal.timeout(5000) });
  assert.equal(res.status, 200, `${route}: ${await res.clone().text()}`);
  return res.json();
}

test('clients on two nodes share rooms: one offset sequence across WebSocket, SSE and Socket.IO', async () => {
  const room = 'lobby';
  // A native WebSocket client on node a.
  const ws = new WebSocket(`${a.base.replace('http', 'ws')}/ws`);
  const wsSeen = [];
  ws.on('message', (d) => {
    const m = JSON.parse(d.toString());
    if (m.room === room && ['note', 'chat_message', 'shout'].includes(m.type)) wsSeen.push(m);
  });
  await new Promise((r) => ws.once('open', r));
  ws.send(JSON.stringify({ type: 'join', room }));
  // An SSE stream and a Socket.IO client on node b.
  const sse = new EventSource(`${b.base}/events?channels=${room}`);
  const sseSeen = [];
  for (const name of ['note', 'chat_message', 'shout']) sse.addEventListener(name, (e) => sseSeen.push(JSON.parse(e.data)));
  await new Promise((r) => sse.addEventListener('connected', r, { once: true }));
  const sio = io(b.base, { transports: ['websocket'], reconnection: false });
  const sioSeen = [];
  for (const ev of ['note', 'chat_message', 'shout']) sio.on(ev, (m) => sioSeen.push(m));
  assert.deepEqual(await sio.emitWithAck('join_room', room), { status: 'ok', room });
  await new Promise((r) => setTimeout(r, 100));

  // 1. The HTTP API of node a. 2. The native client on a. 3. Socket.IO on b.
  await post(a.base, KEY, '/api/publish', { channel: room, type: 'note', text: 'from the api' });
  await until('the api message everywhere', () => wsSeen.length === 1 && sseSeen.length === 1 && sioSeen.length === 1);
  ws.send(JSON.stringify({ type: 'shout', room, text: 'from ws on a' }));
  await until('the ws message everywhere', () => wsSeen.length === 2 && sseSeen.length === 2 && sioSeen.length === 2);
  const ack = await sio.emitWithAck('chat_message', { room, message: 'from socket.io on b' });
  assert.equal(ack.status, 'ok');
  await until('the socket.io message everywhere', () => wsSeen.length === 3 && sseSeen.length === 3);

  for (const seen of [wsSeen, sseSeen]) {
    assert.deepEqual(seen.map((m) => m.offset), [1, 2, 3], 'one offset sequence on every node');
  }
  assert.deepEqual(sioSeen.slice(0, 2).map((m) => m.offset), [1, 2]);
  assert.equal(wsSeen[2].message, 'from socket.io on b');
  assert.equal(ack.offset, 3);

  // History and presence are the deployment's, whichever node answers.
  const historyA = await get(a.base, `/api/history?channel=${room}`);
  const historyB = await get(b.base, `/api/history?channel=${room}`);
  assert.deepEqual(historyA.messages.map((m) => m.offset), [1, 2, 3]);
  assert.deepEqual(historyB, historyA);
  const presence = await get(a.base, `/api/presence?channel=${room}`);
  assert.equal(presence.members.length, 3, JSON.stringify(presence));
  ws.close();
  sse.close();
  sio.close();
});

test('an SSE stream cut on node a resumes on node b with exactly what it missed', async () => {
  const room = 'ticker';
  // A load balancer in front of both nodes: the stream goes where `target` says.
  let target = a.base;
  const viaBalancer = (input, init) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    return fetch(target + url.pathname + url.search, init);
  };
  const source = new EventSource(`${a.base}/events?channels=${room}`, { fetch: viaBalancer });
  const seen = [];
  let connected = 0;
  source.addEventListener('connected', (e) => { connected += 1; if (connected === 1) seen.userId = JSON.parse(e.data).userId; });
  for (const name of ['tick', 'reset']) source.addEventListener(name, (e) => seen.push({ event: name, data: JSON.parse(e.data) }));
  await until('connected', () => connected === 1);
  await post(a.base, KEY, '/api/publish', { channel: room, type: 'tick', n: 1 });
  await post(b.base, KEY, '/api/publish', { channel: room, type: 'tick', n: 2 });
  await until('two ticks', () => seen.length === 2);

  // Node a drops the stream; the balancer sends the reconnect to node b. Meanwhile both
  // nodes publish.
  target = b.base;
  await post(a.base, KEY, '/api/disconnect', { userId: seen.userId });
  for (let n = 3; n <= 6; n++) {
    await post(n % 2 ? a.base : b.base, KEY, '/api/publish', { channel: room, type: 'tick', n });
  }
  await until('reconnected to b', () => connected === 2, 10_000);
  await until('the replay', () => seen.length === 6);
  await post(a.base, KEY, '/api/publish', { channel: room, type: 'tick', n: 7 });
  await until('live after the replay', () => seen.length === 7);
  assert.deepEqual(seen.map((e) => e.data.n), [1, 2, 3, 4, 5, 6, 7], 'no gap, no duplicate, in order');
  assert.deepEqual(seen.map((e) => e.data.offset), [1, 2, 3, 4, 5, 6, 7]);
  assert.ok(!seen.some((e) => e.event === 'reset'));
  source.close();
});

const SECRET = 'scale-out-secret-of-enough-length-012345';

/// The first message of a WebSocket on `url`, or its close code and reason.
function firstOrClose(url) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url);
    ws.once('message', (d) => { resolve({ message: JSON.parse(d.toString()) }); ws.close(); });
    ws.once('close', (code, reason) => resolve({ close: [code, reason.toString()] }));
    ws.once('error', () => {});
  });
}

test('a one-time ticket issued by one node opens exactly one connection, on any node', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-tickets-'));
  const config = path.join(dir, 'switchboard.toml');
  fs.writeFileSync(config, `[auth.jwt]\nsecrets = ["${SECRET}"]\n`);
  const flags = ['--config', config, '--broker', redis.url];
  const [x, y] = [await startServer(flags), await startServer(flags)];
  try {
    const issue = async () => {
      const res = await fetch(`${x.base}/api/ticket`, { method: 'POST', headers: { authorization: `Bearer ${jwt(SECRET, 'alice')}` } });
      assert.equal(res.status, 200);
      return (await res.json()).ticket;
    };
    const ticket = await issue();
    const wsOf = (node, t) => `${node.base.replace('http', 'ws')}/ws?ticket=${t}`;
    // Issued on x, used on y; then refused everywhere.
    const used = await firstOrClose(wsOf(y, ticket));
    assert.equal(used.message?.userId, 'alice', JSON.stringify(used));
    assert.deepEqual((await firstOrClose(wsOf(x, ticket))).close, [4001, 'Invalid token']);
    assert.deepEqual((await firstOrClose(wsOf(y, ticket))).close, [4001, 'Invalid token']);
    // Redeemed on both nodes at the same instant: exactly one connection opens.
    for (let round = 0; round < 5; round++) {
      const t = await issue();
      const results = await Promise.all([firstOrClose(wsOf(x, t)), firstOrClose(wsOf(y, t))]);
      assert.equal(results.filter((r) => r.message?.userId === 'alice').length, 1, JSON.stringify(results));
    }
    // Garbage tickets are refused without trouble.
    assert.deepEqual((await firstOrClose(wsOf(y, 'x'.repeat(5000)))).close, [4001, 'Invalid token']);
  } finally {
    await x.stop();
    await y.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('connections per address are limited over every node, and released', async () => {
  const flags = ['--broker', redis.url, '--max-connections-per-ip', '2'];
  const [x, y] = [await startServer(flags), await startServer(flags)];
  const open = (node, source) => new Promise((resolve) => {
    const ws = new WebSocket(`${node.base.replace('http', 'ws')}/ws`, { localAddress: source });
    ws.once('open', () => resolve({ ws }));
    ws.once('unexpected-response', (_, res) => resolve({ status: res.statusCode }));
    ws.once('error', () => {});
  });
  try {
    const first = await open(x, '127.0.0.5');
    const second = await open(y, '127.0.0.5');
    assert.ok(first.ws && second.ws);
    // A third from the same address: refused on either node.
    assert.equal((await open(x, '127.0.0.5')).status, 429);
    assert.equal((await open(y, '127.0.0.5')).status, 429);
    // Another address is not affected.
    const other = await open(y, '127.0.0.6');
    assert.ok(other.ws);
    // A connection that ends on x makes room on y.
    first.ws.close();
    let again = { status: 429 };
    for (let i = 0; i < 50 && !again.ws; i++) {
      await new Promise((r) => setTimeout(r, 100));
      again = await open(y, '127.0.0.5');
    }
    assert.ok(again.ws, 'the slot was released');
    for (const c of [second, other, again]) c.ws.close();
  } finally {
    await x.stop();
    await y.stop();
  }
});

test('Socket.IO recovery on another node, also after the first one was killed', async () => {
  const flags = ['--api-key', KEY, '--broker', redis.url, '--socketio-recovery-window', '10s'];
  const [x, y] = [await startServer(flags), await startServer(flags)];
  try {
    const socket = io(x.base, { transports: ['websocket'], reconnectionDelay: 50, reconnectionDelayMax: 100 });
    const seen = [];
    socket.on('message', (m) => seen.push(m.data.n));
    await new Promise((resolve, reject) => { socket.once('connect', resolve); socket.once('connect_error', reject); });
    assert.deepEqual(await socket.emitWithAck('join_room', 'sio-moves'), { status: 'ok', room: 'sio-moves' });
    const id = socket.id;
    await post(y.base, KEY, '/api/publish', { room: 'sio-moves', data: { n: 1 } });
    await until('message 1', () => seen.length === 1);

    // 1. The connection is cut (node x alive); the client comes back through node y.
    let reconnected = new Promise((resolve) => socket.once('connect', resolve));
    socket.io.uri = y.base;
    socket.io.engine.close();
    await post(x.base, KEY, '/api/publish', { room: 'sio-moves', data: { n: 2 } });
    await reconnected;
    assert.equal(socket.recovered, true, 'recovered on the other node');
    assert.equal(socket.id, id);
    await until('message 2, replayed', () => seen.length === 2);

    // 2. Node y is killed (no goodbye); the client comes back through node x.
    reconnected = new Promise((resolve) => socket.once('connect', resolve));
    socket.io.uri = x.base;
    process.kill(y.pid, 'SIGKILL');
    y.killed = true;
    await post(x.base, KEY, '/api/publish', { room: 'sio-moves', data: { n: 3 } });
    await reconnected;
    assert.equal(socket.recovered, true, 'recovered after its node died');
    assert.equal(socket.id, id);
    await until('message 3, replayed', () => seen.length === 3);
    // Still in the room, live.
    await post(x.base, KEY, '/api/publish', { room: 'sio-moves', data: { n: 4 } });
    await until('message 4', () => seen.length === 4);
    assert.deepEqual(seen, [1, 2, 3, 4]);

    // 3. A client that disconnects on purpose leaves nothing to recover.
    const pid = socket._pid;
    socket.disconnect();
    const again = io(x.base, { transports: ['websocket'], auth: { pid, offset: socket._lastOffset } });
    await new Promise((resolve) => again.once('connect', resolve));
    assert.equal(again.recovered, false);
    assert.notEqual(again.id, id);
    again.close();
  } finally {
    await x.stop();
    if (!y.killed) await y.stop();
  }
});

test('Redis down: publishes are refused out loud (503, error unavailable); Redis back: served again', async () => {
  const room = 'ops';
  const ws = new WebSocket(`${b.base.replace('http', 'ws')}/ws`);
  const seen = [];
  ws.on('message', (d) => seen.push(JSON.parse(d.toString())));
  await new Promise((r) => ws.once('open', r));
  ws.send(JSON.stringify({ type: 'join', room }));
  await until('joined', () => seen.some((m) => m.type === 'joined'));

  await redis.stop();
  const refused = await fetch(`${a.base}/api/publish`, {
    method: 'POST',
    headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ channel: room, type: 'note', n: 1 }),
    signal: AbortSignal.timeout(5000),
  });
  assert.equal(refused.status, 503);
  assert.match(await refused.text(), /unavailable/);
  ws.send(JSON.stringify({ type: 'note', room, id: 'm-1', n: 1 }));
  await until('the error', () => seen.some((m) => m.type === 'error'), 5000);
  const error = seen.find((m) => m.type === 'error');
  assert.equal(error.code, 'unavailable');
  assert.equal(error.id, 'm-1');

  // Redis restarts empty on the same port: both nodes reconnect and resubscribe by
  // themselves, and the member on b hears what a publishes.
  redis = await startRedis(redis.port);
  const deadline = Date.now() + 15_000;
  let published = false;
  while (!published) {
    assert.ok(Date.now() < deadline, 'publishing did not recover');
    const res = await fetch(`${a.base}/api/publish`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ channel: room, type: 'note', n: 2 }),
      signal: AbortSignal.timeout(5000),
    });
    published = res.status === 200;
    if (!published) await new Promise((r) => setTimeout(r, 200));
  }
  await until('the message after recovery', () => seen.some((m) => m.type === 'note' && m.n === 2), 10_000);
  assert.ok(!seen.some((m) => m.type === 'note' && m.n === 1), 'nothing refused was delivered');
  // The outage is in the metrics: errors on a (its refused publishes), a reconnection of
  // b's pub/sub connection, round trips timed.
  const metric = async (node, name) => {
    const text = await (await fetch(`${node.base}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(`${name} `));
    assert.ok(line, `${name} in /metrics`);
    return Number(line.split(' ')[1]);
  };
  assert.ok((await metric(a, 'switchboard_broker_errors_total')) >= 1);
  assert.ok((await metric(b, 'switchboard_broker_reconnects_total')) >= 1);
  assert.ok((await metric(a, 'switchboard_broker_latency_seconds_count')) >= 1);
  ws.close();
});

test('Engine.IO polling through the other node: posts and polls reach the session; an abandoned poll ends it, as on its own node', async () => {
  const eio = (base, query = '') => `${base}/socket.io/?EIO=4&transport=polling${query}`;
  const open = await (await fetch(eio(a.base))).text();
  assert.equal(open[0], '0');
  const { sid } = JSON.parse(open.slice(1));
  // The Socket.IO CONNECT posted to node b, its answer polled from node b: both run on a.
  const posted = await fetch(eio(b.base, `&sid=${sid}`), { method: 'POST', body: '40', headers: { 'content-type': 'text/plain;charset=UTF-8' } });
  assert.equal(posted.status, 200);
  assert.equal(await posted.text(), 'ok');
  const connected = await (await fetch(eio(b.base, `&sid=${sid}`))).text();
  assert.match(connected, /^40\{"sid":"[^"]+"/);
  // A poll held through node b, then abandoned by the client: the session ends on node a
  // (a cancelled GET closes its session) instead of waiting for its ping timeout.
  const controller = new AbortController();
  const held = fetch(eio(b.base, `&sid=${sid}`), { signal: controller.signal }).catch((e) => e);
  await new Promise((r) => setTimeout(r, 300));
  controller.abort();
  assert.equal((await held).name, 'AbortError');
  // Probed with POSTs (a second GET would end the session by itself, as a protocol error).
  const deadline = Date.now() + 5000;
  let status;
  do {
    await new Promise((r) => setTimeout(r, 100));
    status = (await fetch(eio(a.base, `&sid=${sid}`), { method: 'POST', body: '6', headers: { 'content-type': 'text/plain;charset=UTF-8' } })).status;
  } while (status !== 400 && Date.now() < deadline);
  assert.equal(status, 400, 'the session ended on its node');
  const metrics = await (await fetch(`${b.base}/metrics`)).text();
  assert.match(metrics, /^switchboard_forwarded_requests_total [1-9]/m);
});
