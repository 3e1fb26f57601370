// The Socket.IO library surface (`switchboard_server::socketio`), through the example
// application examples/socketio-app (an axum app with handlers on `/shop`), driven by the
// official socket.io-client (default and MessagePack parsers), a native WebSocket client and
// an SSE stream: typed events, acks both ways, binary, joins/leaves/disconnects from the
// server side, broadcasts from handlers and from an HTTP route reaching every transport.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { io } from 'socket.io-client';
import msgpackParser from 'socket.io-msgpack-parser';
import WebSocket from 'ws';
import { EventSource } from 'eventsource';
import { root, startProgram, nextEvent as next, until } from './server.mjs';

const program = process.env.SOCKETIO_APP_BIN ?? path.join(root, 'target/release/socketio-app');
let app;

before(async () => {
  app = await startProgram(program, 'cargo build --release -p socketio-app', (port) => [`127.0.0.1:${port}`]);
});

after(async () => {
  await app?.stop();
});

const sockets = [];

async function shop(options = {}) {
  const socket = io(`${app.base}/shop`, { forceNew: true, reconnection: false, transports: ['websocket'], ...options });
  sockets.push(socket);
  const welcome = next(socket, 'welcome');
  await new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('connect_error', reject);
  });
  const [hello] = await welcome;
  assert.equal(hello.id, socket.id, 'on_connect sees the socket id the client has');
  return socket;
}



const stats = async () => (await fetch(`${app.base}/stats`)).json();

for (const [mode, options] of Object.entries({ json: {}, msgpack: { parser: msgpackParser }, polling: { transports: ['polling'] } })) {
  test(`${mode}: a typed handler acks, joins and broadcasts to every transport`, async () => {
    const a = await shop(options);
    const b = await shop(options);
    // A native WebSocket client and an SSE stream in the room the handler joins.
    const native = new WebSocket(`${app.base.replace('http', 'ws')}/ws`);
    const nativeSeen = [];
    const nativeChat = [];
    native.on('message', (d) => {
      const m = JSON.parse(d.toString());
      if (m.type === 'order_placed' || m.type === 'shipped') nativeSeen.push(m);
      if (m.type === 'chat') nativeChat.push(m);
    });
    await new Promise((r) => native.once('open', r));
    native.send(JSON.stringify({ type: 'join', room: 'orders' }));
    const sse = new EventSource(`${app.base}/events?channels=orders`);
    const sseSeen = [];
    for (const name of ['order_placed', 'shipped']) sse.addEventListener(name, (e) => sseSeen.push(JSON.parse(e.data)));
    await new Promise((r) => sse.addEventListener('connected', r, { once: true }));
    const bSeen = [];
    b.on('order_placed', (m) => bSeen.push(m));
    b.on('shipped', (m) => bSeen.push(m));
    // b joins through its own order first.
    const first = await b.emitWithAck('order', { item: 'tea', qty: 1 });
    assert.equal(first.accepted, true);
    await until('b to see its own order', () => bSeen.length === 1);
    // a's order: acked with its offset, heard by b, the native client and SSE.
    const ack = await a.emitWithAck('order', { item: 'cake', qty: 2 });
    assert.deepEqual([ack.accepted, ack.item, ack.qty], [true, 'cake', 2]);
    assert.equal(typeof ack.offset, 'number');
    const cake = (seen) => seen.find((m) => m.item === 'cake');
    await until('b, native and sse to see the order', () => cake(bSeen) && cake(nativeSeen) && cake(sseSeen));
    assert.equal(bSeen.length, 2);
    const placed = bSeen[1];
    assert.deepEqual([placed.type, placed.item, placed.qty, placed.by, placed.offset, placed.userId],
      ['order_placed', 'cake', 2, a.id, ack.offset, 'server']);
    assert.deepEqual(cake(nativeSeen), placed, 'the same object on every transport');
    assert.deepEqual(cake(sseSeen), placed);
    // A broadcast from an HTTP route of the application.
    const shipped = await (await fetch(`${app.base}/ship/orders`, { method: 'POST' })).json();
    assert.equal(typeof shipped.offset, 'number');
    await until('the shipment everywhere', () =>
      bSeen.some((m) => m.type === 'shipped') && nativeSeen.some((m) => m.type === 'shipped'));
    assert.equal(bSeen.find((m) => m.type === 'shipped').by, 'http');
    // `socket.to(room)`: everyone in the room but the sender (b and the native client).
    let aChat = 0;
    a.on('chat', () => { aChat += 1; });
    const bChat = next(b, 'chat');
    assert.equal(await a.emitWithAck('chat', 'hi all'), true);
    const [chat] = await bChat;
    assert.deepEqual([chat.type, chat.text, chat.room], ['chat', 'hi all', 'orders']);
    await until('native to see the chat', () => nativeChat.length === 1);
    assert.deepEqual(nativeChat[0], chat, 'the same object on the native transport');
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(aChat, 0, 'the sender does not get its own broadcast');
    // Refusals: arguments that are not an Order, a business refusal.
    const bad = await a.emitWithAck('order', { item: 'x', qty: 'many' });
    assert.deepEqual([bad.status, bad.code], ['error', 'invalid_format']);
    assert.equal((await a.emitWithAck('order', { item: 'x', qty: 0 })).accepted, false);
    // Without an ack, a refusal is an `error` event.
    const error = next(a, 'error');
    a.emit('order', 'not an object');
    assert.equal((await error)[0].code, 'invalid_format');
    // Leaving from a handler: b hears nothing more.
    assert.equal(await b.emitWithAck('leave'), 'left');
    const count = bSeen.length;
    await a.emitWithAck('order', { item: 'pie', qty: 1 });
    await until('native to see the pie', () => nativeSeen.some((m) => m.item === 'pie'));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(bSeen.length, count);
    native.close();
    sse.close();
    for (const s of sockets.splice(0)) s.close();
  });

  test(`${mode}: the server asks and waits for the client's ack; binary both ways`, async () => {
    const s = await shop(options);
    s.once('confirm?', (what, callback) => callback({ ok: true, what }));
    const confirmed = next(s, 'confirmed');
    s.emit('confirm', 'order-7');
    assert.deepEqual((await confirmed)[0], { ok: true, what: 'order-7' });
    // A client that never answers: the handler's wait times out (2 s).
    s.once('confirm?', () => {});
    const timedOut = next(s, 'confirm_timeout', 5000);
    s.emit('confirm', 'order-8');
    assert.match((await timedOut)[0], /timeout/);
    // Binary: (name, bytes) in, {name, size} and the bytes reversed out.
    const [meta, bytes] = await new Promise((resolve) => {
      s.emit('upload', 'pic.png', Buffer.from([1, 2, 3, 250]), (...args) => resolve(args));
    });
    assert.deepEqual(meta, { name: 'pic.png', size: 4 });
    assert.deepEqual([...new Uint8Array(bytes)], [250, 3, 2, 1]);
    for (const x of sockets.splice(0)) x.close();
  });
}

for (const [mode, options] of Object.entries({ json: {}, polling: { transports: ['polling'] } })) {
  test(`${mode}: io.of(nsp).emit reaches every socket of the namespace, socket.broadcast all but the sender`, async () => {
    const a = await shop(options);
    const b = await shop(options);
    const c = await shop(options);
    const seen = new Map([[a, []], [b, []], [c, []]]);
    for (const [socket, list] of seen) socket.on('announcement', (m) => list.push(m));
    // From a handler: every other socket, though none joined a room.
    assert.equal(await a.emitWithAck('announce', 'sale at noon'), true);
    await until('the others to get the broadcast', () => seen.get(b).length === 1 && seen.get(c).length === 1);
    for (const s of [b, c]) {
      const [m] = seen.get(s);
      assert.equal(m.type, 'announcement');
      assert.equal(m.text, 'sale at noon');
      assert.equal(typeof m.offset, 'number');
    }
    // From an HTTP route of the application: everyone, the first sender too.
    const res = await fetch(`${app.base}/announce`, { method: 'POST' });
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.ok(body.delivered >= 3, `delivered to every socket (${body.delivered})`);
    await until('everyone to get it', () => seen.get(a).length === 1 && seen.get(b).length === 2 && seen.get(c).length === 2);
    assert.equal(seen.get(a)[0].by, 'http');
    // The route takes no input: a body is refused with a message, not ignored, and nothing
    // is announced.
    const refused = await fetch(`${app.base}/announce`, { method: 'POST', body: '{"by":"me"}' });
    assert.equal(refused.status, 400);
    assert.match((await refused.json()).error, /takes no body/);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(seen.get(a).length, 1, 'the sender did not get its own broadcast');
    // Clients cannot publish into the namespace's room.
    const native = new WebSocket(`${app.base.replace('http', 'ws')}/ws`);
    await new Promise((r) => native.once('open', r));
    const refusal = new Promise((resolve) => native.on('message', (d) => {
      const m = JSON.parse(d.toString());
      if (m.type === 'error') resolve(m);
    }));
    native.send(JSON.stringify({ type: 'publish', room: 'switchboard:sio:/shop', data: { text: 'spoof' } }));
    assert.equal((await refusal).code, 'forbidden');
    native.close();
    for (const s of [a, b, c]) s.close();
  });
}

test('a socket that recovers gets the namespace broadcasts it missed, once each', async () => {
  const socket = io(`${app.base}/shop`, { forceNew: true, transports: ['websocket'], reconnectionDelay: 50, reconnectionDelayMax: 100 });
  sockets.push(socket);
  const seen = [];
  socket.on('announcement', (m) => seen.push(m.offset));
  await new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('connect_error', reject);
  });
  const id = socket.id;
  const announce = async () => assert.equal((await fetch(`${app.base}/announce`, { method: 'POST' })).status, 200);
  await announce();
  await until('the first announcement', () => seen.length === 1);
  const reconnected = new Promise((resolve) => socket.once('connect', resolve));
  socket.io.engine.close();
  await announce();
  await announce();
  await reconnected;
  assert.equal(socket.recovered, true);
  assert.equal(socket.id, id);
  await until('the missed announcements', () => seen.length === 3);
  await announce();
  await until('the next one', () => seen.length === 4);
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(seen.length, 4, 'nothing twice');
  assert.deepEqual(seen, [...seen].sort((x, y) => x - y), 'in order');
  assert.equal(new Set(seen).size, 4);
  socket.close();
});

test('server-side disconnect, and on_disconnect runs for every way a socket ends', async () => {
  // The earlier tests' sockets are all gone first (their disconnects would count here).
  await until('earlier sockets to be gone', async () => {
    const { connects, disconnects } = await stats();
    return connects === disconnects;
  });
  const before = await stats();
  const s = await shop();
  const gone = next(s, 'disconnect');
  s.emit('bye');
  assert.equal((await gone)[0], 'io server disconnect');
  const t = await shop();
  t.close(); // the client's DISCONNECT
  const u = await shop();
  u.io.engine.close(); // the transport lost
  await until('three disconnects', async () => (await stats()).disconnects - before.disconnects === 3);
  const after = await stats();
  assert.equal(after.connects - before.connects, 3);
  for (const x of sockets.splice(0)) x.close();
});

test('the built-in room semantics stay on namespaces without handlers', async () => {
  const socket = io(`${app.base}/`, { forceNew: true, reconnection: false, transports: ['websocket'] });
  sockets.push(socket);
  await new Promise((r) => socket.once('connect', r));
  assert.deepEqual(await socket.emitWithAck('join_room', 'lobby'), { status: 'ok', room: 'lobby' });
  for (const x of sockets.splice(0)) x.close();
});

test('the application route refuses bad room names with 400 and a message; a loop of them leaves memory flat', async () => {
  const rss = () => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${app.pid}/status`, 'utf8'))[1]) * 1024;
  const bad = ['%01', 'x'.repeat(300), '%E2%80%8B%00'];
  for (const room of bad) {
    const res = await fetch(`${app.base}/ship/${room}`, { method: 'POST' });
    assert.equal(res.status, 400, room);
    assert.match((await res.json()).error, /room/);
  }
  // Wrong methods and unknown routes are refused too.
  assert.equal((await fetch(`${app.base}/ship/orders`)).status, 405);
  const burst = async (n) => {
    for (let i = 0; i < n; i++) {
      await fetch(`${app.base}/ship/${bad[i % bad.length]}`, { method: 'POST' });
      await fetch(`${app.base}/ship/orders`, { method: 'PUT', body: '{' });
    }
  };
  await burst(200);
  const before = rss();
  await burst(1000);
  const grown = rss() - before;
  assert.ok(grown < 3 * 1024 * 1024, `RSS grew ${grown} bytes over 1000 rounds`);
});
