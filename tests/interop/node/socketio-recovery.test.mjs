// Connection state recovery (Socket.IO >= 4.6 semantics) with the official socket.io-client:
// a client whose transport is cut gets its id, its rooms and exactly the messages it missed
// back (`socket.recovered`), built on the hub's history — including the cases where
// Socket.IO's own recovery does not hold: no event received before the cut, the second and
// later reconnects, long-lived connections, and events without offsets in the stream. An
// expired window is visible (`recovered: false`), never a silent gap.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import { startServer, api as post } from './server.mjs';

const KEY = 'sio-recovery-key';
let server;

before(async () => {
  server = await startServer(['--api-key', KEY, '--socketio-recovery-window', '2s']);
});

after(async () => {
  await server?.stop();
});

const publish = (room, n) => post(server.base, KEY, '/api/publish', { room, data: { n } });

async function until(what, check, ms = 5000) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/// A client joined to `rooms`, recording every `message` event's `data.n` per room.
async function member(rooms, options = {}) {
  const socket = io(server.base, {
    transports: ['websocket'],
    reconnectionDelay: 50,
    reconnectionDelayMax: 100,
    ...options,
  });
  const seen = Object.fromEntries(rooms.map((r) => [r, []]));
  socket.on('message', (m) => seen[m.room]?.push(m.data.n));
  await new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('connect_error', reject);
  });
  for (const room of rooms) {
    assert.deepEqual(await socket.emitWithAck('join_room', room), { status: 'ok', room });
  }
  return { socket, seen };
}

/// Cut the transport (as a network drop would) and wait for the reconnection.
async function cutAndReconnect(socket, whileDown = async () => {}) {
  const reconnected = new Promise((resolve) => socket.once('connect', resolve));
  socket.io.engine.close();
  await whileDown();
  await reconnected;
}

test('recovery: id, rooms and the missed messages come back', async () => {
  const { socket, seen } = await member(['r1']);
  const id = socket.id;
  await publish('r1', 1);
  await until('message 1', () => seen.r1.length === 1);
  await cutAndReconnect(socket, async () => {
    await publish('r1', 2);
    await publish('r1', 3);
  });
  assert.equal(socket.recovered, true);
  assert.equal(socket.id, id);
  await until('the missed messages', () => seen.r1.length === 3);
  // Still in the room.
  await publish('r1', 4);
  await until('message 4', () => seen.r1.length === 4);
  assert.deepEqual(seen.r1, [1, 2, 3, 4]);
  socket.close();
});

test('recovery: a client that received no event before the cut', async () => {
  const { socket, seen } = await member(['r2']);
  const id = socket.id;
  await cutAndReconnect(socket, async () => {
    await publish('r2', 1);
    await publish('r2', 2);
  });
  assert.equal(socket.recovered, true);
  assert.equal(socket.id, id);
  await until('the missed messages', () => seen.r2.length === 2);
  assert.deepEqual(seen.r2, [1, 2]);
  socket.close();
});

test('recovery: the second and later reconnects, in several rooms', async () => {
  const { socket, seen } = await member(['r3a', 'r3b']);
  const id = socket.id;
  let n = 0;
  for (let round = 0; round < 3; round += 1) {
    await publish('r3a', ++n);
    await publish('r3b', ++n);
    await cutAndReconnect(socket, async () => {
      await publish('r3a', ++n);
      await publish('r3b', ++n);
    });
    assert.equal(socket.recovered, true, `round ${round}`);
    assert.equal(socket.id, id);
  }
  await until('every message', () => seen.r3a.length + seen.r3b.length === n);
  assert.deepEqual([...seen.r3a, ...seen.r3b].sort((a, b) => a - b), Array.from({ length: n }, (_, i) => i + 1));
  assert.deepEqual(seen.r3a, seen.r3a.slice().sort((a, b) => a - b), 'in order');
  socket.close();
});

test('recovery: a long-lived connection with many messages, and events without offsets', async () => {
  const { socket, seen } = await member(['r4']);
  // Presence events (no offset) and error events interleave with the room's messages.
  const other = await member(['r4']);
  const errors = [];
  socket.on('error', (e) => errors.push(e));
  for (let i = 1; i <= 60; i += 1) {
    await publish('r4', i);
    if (i % 20 === 0) socket.emit('chat', { room: 'not-joined' });
  }
  await until('60 messages', () => seen.r4.length === 60);
  other.socket.close(); // a `user_left` event, no offset
  await until('the errors', () => errors.length === 3);
  await cutAndReconnect(socket, async () => {
    for (let i = 61; i <= 70; i += 1) await publish('r4', i);
  });
  assert.equal(socket.recovered, true);
  await until('70 messages', () => seen.r4.length === 70);
  assert.deepEqual(seen.r4, Array.from({ length: 70 }, (_, i) => i + 1), 'exactly once, in order');
  socket.close();
});

test('recovery: an expired window is visible, never a silent gap', async () => {
  const { socket, seen } = await member(['r5'], { reconnection: false });
  const id = socket.id;
  const gone = new Promise((resolve) => socket.once('disconnect', resolve));
  socket.io.engine.close();
  await gone;
  await publish('r5', 1);
  await new Promise((r) => setTimeout(r, 2500)); // past the 2 s window
  socket.connect();
  await new Promise((resolve) => socket.once('connect', resolve));
  assert.equal(socket.recovered, false);
  assert.notEqual(socket.id, id);
  // A new socket, in no room: the message published meanwhile did not arrive silently.
  await publish('r5', 2);
  await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(seen.r5, []);
  socket.close();
});
