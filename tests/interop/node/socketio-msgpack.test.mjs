// Socket.IO with the official MessagePack parser (`socket.io-msgpack-parser`, npm) on the
// client: the server decides the codec from the first packet (binary → MessagePack) and
// answers in kind — echo, acks both ways, binary, namespaces, rooms shared with JSON
// Socket.IO clients and the HTTP API, connection state recovery — over every transport.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import msgpackParser from 'socket.io-msgpack-parser';
import { startServer, api as post, nextEvent as next, until } from './server.mjs';

const KEY = 'sio-msgpack-key';
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

async function connect(nsp = '/', options = {}) {
  const socket = io(`${server.base}${nsp}`, {
    forceNew: true, reconnection: false, parser: msgpackParser, ...options,
  });
  sockets.push(socket);
  await new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('connect_error', reject);
  });
  return socket;
}



function closeAll() {
  for (const s of sockets.splice(0)) s.close();
}

for (const [mode, options] of Object.entries(TRANSPORTS)) {
  test(`msgpack ${mode}: echo, acks both ways, binary`, async () => {
    const socket = await connect('/', options);
    if (mode === 'upgrade') await until('the upgrade', () => socket.io.engine.transport.name === 'websocket');
    const back = next(socket, 'message-back');
    socket.emit('message', 1, 'two', { three: [3], big: 2 ** 40, neg: -7, f: 1.5, n: null }, Buffer.from([0, 1, 255]));
    const [one, two, three, bytes] = await back;
    assert.deepEqual([one, two, three], [1, 'two', { three: [3], big: 2 ** 40, neg: -7, f: 1.5, n: null }]);
    assert.deepEqual([...bytes], [0, 1, 255]);
    const answer = await new Promise((resolve) => {
      socket.emit('message-with-ack', 'a', { b: true }, Buffer.from('c'), (...args) => resolve(args));
    });
    assert.deepEqual(answer.slice(0, 2), ['a', { b: true }]);
    assert.equal(Buffer.from(answer[2]).toString(), 'c');
    socket.once('ack-request', (x, y, ack) => ack(`${x}+${y}`, 42));
    const response = next(socket, 'ack-response');
    socket.emit('emit-with-ack', 'p', 'q');
    assert.deepEqual(await response, ['p+q', 42]);
    closeAll();
  });

  test(`msgpack ${mode}: rooms shared with a JSON Socket.IO client and the HTTP API`, async () => {
    const room = `mp-${mode}`;
    const packed = await connect('/', options);
    const json = await connect('/chat', { ...options, parser: undefined });
    assert.deepEqual(await packed.emitWithAck('join_room', room), { status: 'ok', room });
    assert.deepEqual(await json.emitWithAck('join_room', room), { status: 'ok', room });
    const packedSeen = [];
    const jsonSeen = [];
    for (const [seen, s] of [[packedSeen, packed], [jsonSeen, json]]) {
      for (const ev of ['chat_message', 'message']) s.on(ev, (m) => seen.push(m));
    }
    const ack = await packed.emitWithAck('chat_message', { room, message: 'héllo ✓', n: [1, 2.5, false] });
    assert.equal(ack.status, 'ok');
    await post(server.base, KEY, '/api/publish', { room, data: { from: 'api' } });
    const ack2 = await json.emitWithAck('chat_message', { room, message: 'from json' });
    assert.equal(ack2.status, 'ok');
    await until('both to see 3 messages', () => packedSeen.length >= 3 && jsonSeen.length >= 3);
    // The same objects whichever parser the client uses.
    assert.deepEqual(packedSeen, jsonSeen);
    assert.deepEqual(packedSeen.map((m) => m.type), ['chat_message', 'publish', 'chat_message']);
    assert.equal(packedSeen[0].message, 'héllo ✓');
    assert.deepEqual(packedSeen[0].n, [1, 2.5, false]);
    assert.equal(packedSeen[0].offset, ack.offset);
    assert.deepEqual(packedSeen[1].data, { from: 'api' });
    // A refusal is an error ack in MessagePack too.
    const refused = await packed.emitWithAck('chat_message', { room: 'elsewhere', message: 'x' });
    assert.equal(refused.status, 'error');
    closeAll();
  });
}

test('msgpack: namespaces, an unknown one refused', async () => {
  const root = await connect('/', { transports: ['websocket'], forceNew: false });
  const chat = io(`${server.base}/chat`, { transports: ['websocket'], reconnection: false, parser: msgpackParser });
  sockets.push(chat);
  await new Promise((r) => chat.once('connect', r));
  assert.equal(chat.io, root.io, 'one manager');
  const nope = io(`${server.base}/nope`, { transports: ['websocket'], reconnection: false, parser: msgpackParser });
  sockets.push(nope);
  const [error] = await next(nope, 'connect_error');
  assert.equal(error.message, 'Invalid namespace');
  assert.deepEqual(await chat.emitWithAck('join_room', 'mp-ns'), { status: 'ok', room: 'mp-ns' });
  assert.ok(root.connected);
  closeAll();
});

test('msgpack: connection state recovery replays what was missed', async () => {
  const room = 'mp-recovery';
  const socket = io(`${server.base}/`, {
    transports: ['websocket'], parser: msgpackParser, forceNew: true,
    reconnectionDelay: 50, reconnectionDelayMax: 50,
  });
  sockets.push(socket);
  await new Promise((r) => socket.once('connect', r));
  assert.equal(socket.recovered, false);
  await socket.emitWithAck('join_room', room);
  const seen = [];
  socket.on('message', (m) => seen.push(m.data.i));
  await post(server.base, KEY, '/api/publish', { room, data: { i: 1 } });
  await until('the first message', () => seen.length === 1);
  // Cut the transport without a DISCONNECT: the client reconnects with pid + offset.
  const reconnected = next(socket, 'connect');
  socket.io.engine.close();
  await post(server.base, KEY, '/api/publish', { room, data: { i: 2 } });
  await post(server.base, KEY, '/api/publish', { room, data: { i: 3 } });
  await reconnected;
  assert.equal(socket.recovered, true);
  await until('the missed messages', () => seen.length === 3);
  assert.deepEqual(seen, [1, 2, 3]);
  closeAll();
});
