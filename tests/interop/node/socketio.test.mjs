// Socket.IO with the official `socket.io-client` (npm): over WebSocket only, polling only and
// with the upgrade — connect, acks both ways, binary, many namespaces on one connection,
// built-in rooms shared with the HTTP API, native WebSocket clients and SSE streams.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import WebSocket from 'ws';
import { EventSource } from 'eventsource';
import { startServer, api as post, nextEvent as next, until } from './server.mjs';

const KEY = 'sio-test-key';
let server;

before(async () => {
  server = await startServer(['--echo', '--api-key', KEY]);
});

after(async () => {
  await server?.stop();
});

const TRANSPORTS = {
  websocket: { transports: ['websocket'] },
  polling: { transports: ['polling'] },
  upgrade: { transports: ['polling', 'websocket'] },
};

const sockets = [];

/// A connected client of namespace `nsp`.
async function connect(nsp = '/', options = {}) {
  const socket = io(`${server.base}${nsp}`, { forceNew: true, reconnection: false, ...options });
  sockets.push(socket);
  await new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('connect_error', reject);
  });
  return socket;
}


/// Resolves once the socket's transport is `name` (after an upgrade).
async function onTransport(socket, name) {
  const deadline = Date.now() + 5000;
  while (socket.io.engine.transport.name !== name) {
    if (Date.now() > deadline) throw new Error(`still on ${socket.io.engine.transport.name}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function closeAll() {
  for (const s of sockets.splice(0)) s.close();
}

for (const [mode, options] of Object.entries(TRANSPORTS)) {
  test(`${mode}: echo, acks both ways, binary`, async () => {
    const socket = await connect('/', { ...options, auth: { token: 'abc' } });
    if (mode === 'upgrade') await onTransport(socket, 'websocket');
    else assert.equal(socket.io.engine.transport.name, options.transports[0]);
    // `message` → `message-back` with every argument, binary included.
    const back = next(socket, 'message-back');
    socket.emit('message', 1, 'two', { three: [3] }, Buffer.from([0, 1, 255]));
    const [one, two, three, bytes] = await back;
    assert.deepEqual([one, two, three], [1, 'two', { three: [3] }]);
    assert.deepEqual([...bytes], [0, 1, 255]);
    // Client → server ack with all the arguments.
    const answer = await new Promise((resolve) => {
      socket.emit('message-with-ack', 'a', { b: true }, Buffer.from('c'), (...args) => resolve(args));
    });
    assert.deepEqual(answer.slice(0, 2), ['a', { b: true }]);
    assert.equal(Buffer.from(answer[2]).toString(), 'c');
    // Server → client ack: the server asks, the client's answer comes back.
    socket.once('ack-request', (x, y, ack) => ack(`${x}+${y}`, 42));
    const response = next(socket, 'ack-response');
    socket.emit('emit-with-ack', 'p', 'q');
    assert.deepEqual(await response, ['p+q', 42]);
    closeAll();
  });

  test(`${mode}: rooms shared with the HTTP API, a native WebSocket and SSE`, async () => {
    const room = `orders-${mode}`;
    const a = await connect('/', options);
    const b = await connect('/chat', options);
    if (mode === 'upgrade') await Promise.all([onTransport(a, 'websocket'), onTransport(b, 'websocket')]);
    assert.deepEqual(await a.emitWithAck('join_room', room), { status: 'ok', room });
    assert.deepEqual(await b.emitWithAck('subscribe', room), { status: 'ok', room });
    // A native WebSocket client and an SSE stream in the same room.
    const native = new WebSocket(`${server.base.replace('http', 'ws')}/ws`);
    const nativeSeen = [];
    native.on('message', (d) => {
      const m = JSON.parse(d.toString());
      if (m.room === room && !['joined', 'user_joined', 'user_left'].includes(m.type)) nativeSeen.push(m);
    });
    await new Promise((r) => native.once('open', r));
    native.send(JSON.stringify({ type: 'join', room }));
    const sse = new EventSource(`${server.base}/events?channels=${room}`);
    const sseSeen = [];
    for (const name of ['chat_message', 'publish', 'shout']) {
      sse.addEventListener(name, (e) => sseSeen.push(JSON.parse(e.data)));
    }
    await new Promise((r) => sse.addEventListener('connected', r, { once: true }));
    await new Promise((r) => setTimeout(r, 100));
    const aSeen = [];
    const bSeen = [];
    for (const [seen, s] of [[aSeen, a], [bSeen, b]]) {
      for (const ev of ['chat_message', 'message', 'shout']) s.on(ev, (m) => seen.push(m));
    }
    // 1. A Socket.IO event naming the room, acked once accepted.
    const ack = await a.emitWithAck('chat_message', { room, message: 'Hello everyone!' });
    assert.equal(ack.status, 'ok');
    assert.equal(typeof ack.offset, 'number');
    // 2. The HTTP API (type `publish`, heard as Socket.IO's `message`).
    await post(server.base, KEY, '/api/publish', { room, data: { from: 'api' } });
    // 3. A native WebSocket client's relay.
    native.send(JSON.stringify({ type: 'shout', room, text: 'from native' }));
    const until = async (what, check) => {
      const deadline = Date.now() + 5000;
      while (!check()) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    for (const [name, seen] of [['a', aSeen], ['b', bSeen], ['native', nativeSeen], ['sse', sseSeen]]) {
      await until(`${name} to see 3 messages`, () => seen.length >= 3);
    }
    // The same message objects everywhere, in the same order.
    for (const seen of [bSeen, nativeSeen, sseSeen]) assert.deepEqual(seen, aSeen);
    assert.deepEqual(aSeen.map((m) => m.type), ['chat_message', 'publish', 'shout']);
    assert.equal(aSeen[0].message, 'Hello everyone!');
    assert.equal(aSeen[0].offset, ack.offset);
    assert.equal(aSeen[0].userId, aSeen[0].user);
    assert.deepEqual(aSeen[1].data, { from: 'api' });
    assert.equal(aSeen[2].text, 'from native');
    // A native or SSE client's messages reach Socket.IO clients, and the other way round:
    // each message has one offset, increasing.
    assert.ok(aSeen[0].offset < aSeen[1].offset && aSeen[1].offset < aSeen[2].offset);
    // `typing` goes to the others only (and is heard as `user_typing`).
    const typing = next(a, 'user_typing');
    let selfTyping = false;
    b.on('user_typing', () => { selfTyping = true; });
    b.emit('typing', room);
    const [t] = await typing;
    assert.equal(t.room, room);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(selfTyping, false, 'the typist does not hear itself');
    // Leaving: nothing more arrives.
    assert.deepEqual(await b.emitWithAck('leave_room', room), { status: 'ok', room });
    const before = bSeen.length;
    await post(server.base, KEY, '/api/publish', { room, data: { after: 'leave' } });
    await until('a to see the message after the leave', () => aSeen.length === 4);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(bSeen.length, before);
    native.close();
    sse.close();
    closeAll();
  });
}

test('many namespaces on one connection, an unknown one refused', async () => {
  const root = await connect('/', { transports: ['websocket'], forceNew: false });
  const chat = io(`${server.base}/chat`, { transports: ['websocket'], reconnection: false });
  sockets.push(chat);
  await new Promise((r) => chat.once('connect', r));
  assert.equal(chat.io, root.io, 'one manager');
  assert.notEqual(chat.id, root.id);
  const [auth] = await Promise.race([next(chat, 'auth'), new Promise((r) => setTimeout(() => r([null]), 50))]);
  // (`auth` may have come before the listener: the conformance greeting, not the point.)
  void auth;
  const nope = io(`${server.base}/nope`, { transports: ['websocket'], reconnection: false });
  sockets.push(nope);
  const [error] = await next(nope, 'connect_error');
  assert.equal(error.message, 'Invalid namespace');
  // The other namespaces are unaffected.
  assert.deepEqual(await chat.emitWithAck('join_room', 'ns-check'), { status: 'ok', room: 'ns-check' });
  assert.ok(root.connected);
  closeAll();
});

test('refusals are answers, not silence: bad events get an error ack or event', async () => {
  const socket = await connect('/', { transports: ['websocket'] });
  // A relay to a room the socket is not in.
  const notIn = await socket.emitWithAck('chat_message', { room: 'elsewhere', message: 'x' });
  assert.equal(notIn.status, 'error');
  // More than one argument would lose data: refused.
  const two = await socket.emitWithAck('chat_message', 'a', 'b');
  assert.deepEqual([two.status, two.code], ['error', 'invalid_format']);
  // Binary is not relayed into rooms (history is JSON).
  await socket.emitWithAck('join_room', 'bin');
  const bin = await socket.emitWithAck('chat_message', { room: 'bin', blob: Buffer.from([1]) });
  assert.equal(bin.status, 'error');
  // Without an ack the refusal is an `error` event.
  const error = next(socket, 'error');
  socket.emit('chat_message', { room: 'elsewhere' });
  const [e] = await error;
  assert.equal(typeof e.message, 'string');
  assert.ok(socket.connected, 'the connection stays open');
  closeAll();
});

test('the rate limit applies to Socket.IO events: refusals answered, a flood disconnected', async () => {
  // Three messages at once (the burst), then one per 10 s.
  const limited = await startServer(['--rate-limit', '3/30s']);
  try {
    const socket = io(`${limited.base}/`, { forceNew: true, reconnection: false, transports: ['websocket'] });
    await new Promise((r) => socket.once('connect', r));
    const errors = [];
    socket.on('error', (e) => errors.push(e.code));
    const answers = [];
    for (let i = 0; i < 5; i++) answers.push(await socket.emitWithAck('join_room', `r${i}`));
    assert.deepEqual(answers.slice(0, 3).map((a) => a.status), ['ok', 'ok', 'ok']);
    for (const refused of answers.slice(3)) assert.deepEqual([refused.status, refused.code], ['error', 'rate_limited']);
    assert.deepEqual(errors, ['rate_limited'], 'the limit warns once');
    // Going on past the burst ends the socket (its namespace), not silently.
    const gone = next(socket, 'disconnect');
    for (let i = 0; i < 10; i++) socket.emit('join_room', `flood${i}`);
    assert.equal((await gone)[0], 'io server disconnect');
    socket.close();
  } finally {
    await limited.stop();
  }
});
